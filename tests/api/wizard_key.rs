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

#[tokio::test]
async fn without_the_key_nothing_is_counted_and_later_steps_must_name_the_device() {
    for backend in crate::helpers::BACKENDS {
        let sms = FakeSms::spawn().await;
        let mut settings = test_settings(backend, &sms);
        settings.require_wizard_key = true;
        let app = spawn_with(settings, sms).await;
        let user = app.create_user(UserSpec::totp()).await;
        let (uuid, key) = start_with_key(&app).await;
        let (status, body) =
            signin_with_key(&app, &uuid, Some(&key), &user.email, &user.password).await;
        assert_eq!(
            (status, body["workflow"].as_str()),
            (StatusCode::OK, Some("2fa_google_auth"))
        );

        // Someone with the uuid but not the key: 404 every time, and no attempt or code try used.
        for _ in 0..12 {
            assert_eq!(app.totp(&uuid, "000000").await.error(), "wizard_not_found");
        }
        let submit = |device: Option<String>| {
            let mut body = json!({ "uuid": uuid, "code": app.totp_now(&user) });
            if let Some(device) = device {
                body["device_fingerprint"] = json!(device);
            }
            app.client
                .post(format!("{}/api/v2/my/2fa/google", app.address))
                .header("X-Wizard-Key", &key)
                .json(&body)
                .send()
        };
        let unnamed = submit(None).await.unwrap();
        assert_eq!(
            unnamed.status(),
            StatusCode::FORBIDDEN,
            "strict mode: later steps name their device"
        );
        let named = submit(Some(fingerprint("k"))).await.unwrap();
        assert_eq!(named.status(), StatusCode::ACCEPTED, "{backend:?}");
    }
}
