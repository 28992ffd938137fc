//! The optional per-wizard key (X-Wizard-Key) and the strict mode that requires it.

use crate::helpers::{
    Backend, FakeSms, TestApp, UserSpec, fingerprint, spawn_app, spawn_with, test_settings,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn start_with_key(app: &TestApp) -> (String, String) {
    let reply = app.get("/api/v2/my/signin/wizard").await;
    let key = reply.body["meta"]["wizardKey"]
        .as_str()
        .expect("the start hands out a key")
        .to_owned();
    (reply.body["uuid"].as_str().unwrap().to_owned(), key)
}

async fn signin_with_key(
    app: &TestApp,
    uuid: &str,
    key: Option<&str>,
    email: &str,
    password: &str,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(format!("{}/api/v2/my/signin", app.address))
        .json(&json!({ "uuid": uuid, "email": email, "password": password, "device_fingerprint": fingerprint("k") }));
    if let Some(key) = key {
        request = request.header("X-Wizard-Key", key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_presented_key_must_be_the_wizards_own() {
    let app = spawn_app(Backend::Redis).await;
    let user = app.create_user(UserSpec::default()).await;
    let (uuid, key) = start_with_key(&app).await;
    assert_eq!(key.len(), 22, "128 bits, base64url");
    let (_, other) = start_with_key(&app).await;
    for wrong in [other.as_str(), "not-a-key"] {
        let (status, body) =
            signin_with_key(&app, &uuid, Some(wrong), &user.email, &user.password).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "a wrong key looks like an unknown wizard"
        );
        assert_eq!(body["data"]["error"]["code"], "wizard_not_found");
        assert!(body.get("meta").is_none(), "nothing about the wizard leaks");
    }
    let (status, _) = signin_with_key(&app, &uuid, Some(&key), &user.email, &user.password).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn strict_mode_refuses_plain_uuids() {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Memory, &sms);
    settings.require_wizard_key = true;
    let app = spawn_with(settings, sms).await;
    let user = app.create_user(UserSpec::default()).await;
    let (uuid, key) = start_with_key(&app).await;
    let (status, body) = signin_with_key(&app, &uuid, None, &user.email, &user.password).await;
    assert_eq!(
        (status, &body["data"]["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("wizard_not_found"))
    );
    // Even a malformed body says nothing about the wizard without its key.
    let malformed = app.post("/api/v2/my/signin", json!({ "uuid": uuid })).await;
    assert_eq!(malformed.error(), "invalid_request");
    assert!(malformed.body.get("meta").is_none());
    let (status, _) = signin_with_key(&app, &uuid, Some(&key), &user.email, &user.password).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}
