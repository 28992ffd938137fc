//! reCAPTCHA at the login step, against a fake `siteverify` server.

use crate::helpers::{
    Backend, FakeRecaptcha, FakeSms, RECAPTCHA_SECRET, TestApp, UserSpec, free_port, spawn_with,
    test_settings,
};
use reqwest::StatusCode;
use serde_json::json;

async fn app_with_verifier(url: &str) -> TestApp {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Memory, &sms);
    settings.recaptcha_site_key = Some("site-key-123".into());
    settings.recaptcha_secret = Some(RECAPTCHA_SECRET.to_owned().into());
    settings.recaptcha_verify_url = url.parse().unwrap();
    spawn_with(settings, sms).await
}

#[tokio::test]
async fn the_login_step_needs_a_fresh_verified_token() {
    let verifier = FakeRecaptcha::spawn(false).await;
    let app = app_with_verifier(&verifier.url).await;
    let start = app.get("/api/v2/my/signin/wizard").await;
    assert_eq!(
        start.body["data"]["recaptcha"],
        json!({ "enabled": true, "site_key": "site-key-123" })
    );
    let user = app.create_user(UserSpec::default()).await;
    let uuid = start.body["uuid"].as_str().unwrap().to_owned();

    let missing = app.signin(&uuid, &user.email, &user.password).await;
    missing.assert_envelope();
    assert_eq!(
        (missing.status, missing.error()),
        (StatusCode::UNPROCESSABLE_ENTITY, "captcha_failed")
    );
    assert_eq!(missing.workflow(), "login");
    let wrong = app
        .signin_with_captcha(&uuid, &user.email, &user.password, "robot")
        .await;
    assert_eq!(wrong.error(), "captcha_failed");
    let ok = app
        .signin_with_captcha(&uuid, &user.email, &user.password, "pass-1")
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.body);
    assert_eq!(
        verifier.remote_ips.lock().unwrap().last().unwrap(),
        "127.0.0.1"
    );

    let again = app.start().await;
    let reused = app
        .signin_with_captcha(&again, &user.email, &user.password, "pass-1")
        .await;
    assert_eq!(reused.error(), "captcha_failed", "a token works once");
}

#[tokio::test]
async fn failed_captchas_do_not_count_against_the_account() {
    let verifier = FakeRecaptcha::spawn(false).await;
    let app = app_with_verifier(&verifier.url).await;
    let user = app.create_user(UserSpec::default()).await;
    let uuid = app.start().await;
    for _ in 0..10 {
        assert_eq!(
            app.signin_with_captcha(&uuid, &user.email, "wrong", "robot")
                .await
                .error(),
            "captcha_failed"
        );
    }
    let reply = app
        .signin_with_captcha(&uuid, &user.email, &user.password, "pass-2")
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_unreachable_or_slow_verifier_fails_closed() {
    let closed = format!("http://127.0.0.1:{}/siteverify", free_port());
    let slow = FakeRecaptcha::spawn(true).await;
    for url in [closed.as_str(), slow.url.as_str()] {
        let app = app_with_verifier(url).await;
        let user = app.create_user(UserSpec::default()).await;
        let uuid = app.start().await;
        let reply = app
            .signin_with_captcha(&uuid, &user.email, &user.password, "pass-3")
            .await;
        reply.assert_envelope();
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::SERVICE_UNAVAILABLE, "captcha_unavailable"),
            "{url}"
        );
        assert!(reply.body["data"].get("accessToken").is_none());
    }
}

#[tokio::test]
async fn an_admin_can_switch_recaptcha_off_and_on() {
    let verifier = FakeRecaptcha::spawn(false).await;
    let app = app_with_verifier(&verifier.url).await;
    let (status, _) = app
        .put_settings(json!({ "recaptcha_enabled": false }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v2/my/signin/wizard").await.body["data"]["recaptcha"],
        json!({ "enabled": false })
    );
    let user = app.create_user(UserSpec::default()).await;
    let uuid = app.start().await;
    assert_eq!(
        app.signin(&uuid, &user.email, &user.password).await.status,
        StatusCode::ACCEPTED
    );
    let (status, _) = app.put_settings(json!({ "recaptcha_enabled": true })).await;
    assert_eq!(status, StatusCode::OK);
    let uuid = app.start().await;
    assert_eq!(
        app.signin(&uuid, &user.email, &user.password).await.error(),
        "captcha_failed"
    );
}

#[tokio::test]
async fn a_token_solved_on_another_site_is_refused() {
    let verifier = FakeRecaptcha::spawn(false).await; // answers hostname "portal.example"
    for (ours, accepted) in [
        ("other.example", false),
        ("PORTAL.example,other.example", true),
    ] {
        let sms = FakeSms::spawn().await;
        let mut settings = test_settings(Backend::Memory, &sms);
        settings.recaptcha_site_key = Some("site-key-123".into());
        settings.recaptcha_secret = Some(RECAPTCHA_SECRET.to_owned().into());
        settings.recaptcha_verify_url = verifier.url.parse().unwrap();
        settings.recaptcha_hostnames = ours.split(',').map(str::to_owned).collect();
        let app = spawn_with(settings, sms).await;
        let user = app.create_user(UserSpec::default()).await;
        let uuid = app.start().await;
        let token = format!("pass-{}", uuid::Uuid::new_v4());
        let reply = app
            .signin_with_captcha(&uuid, &user.email, &user.password, &token)
            .await;
        if accepted {
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{ours}");
        } else {
            assert_eq!(reply.error(), "captcha_failed", "{ours}");
        }
    }
}

#[tokio::test]
async fn an_instance_without_keys_refuses_the_login_step_while_recaptcha_is_on() {
    let verifier = FakeRecaptcha::spawn(false).await;
    let sms = FakeSms::spawn().await;
    let mut with_keys = test_settings(Backend::Redis, &sms);
    with_keys.recaptcha_site_key = Some("site-key-123".into());
    with_keys.recaptcha_secret = Some(RECAPTCHA_SECRET.to_owned().into());
    with_keys.recaptcha_verify_url = verifier.url.parse().unwrap();
    let mut without = with_keys.clone();
    without.recaptcha_site_key = None;
    without.recaptcha_secret = None;
    let keyed = spawn_with(with_keys, sms.clone()).await;
    // The switch is shared through the store: on for every instance.
    let (status, _) = keyed
        .put_settings(json!({ "recaptcha_enabled": true }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let keyless = spawn_with(without, sms).await;
    let user = keyed.create_user(UserSpec::default()).await;

    let start = keyless.get("/api/v2/my/signin/wizard").await;
    assert_eq!(start.body["data"]["recaptcha"], json!({ "enabled": true }));
    let uuid = start.body["uuid"].as_str().unwrap().to_owned();
    for token in [None, Some("pass-keyless")] {
        let reply = match token {
            Some(token) => {
                keyless
                    .signin_with_captcha(&uuid, &user.email, &user.password, token)
                    .await
            }
            None => keyless.signin(&uuid, &user.email, &user.password).await,
        };
        reply.assert_envelope();
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::SERVICE_UNAVAILABLE, "captcha_unavailable"),
            "{}",
            reply.body
        );
        assert_eq!(reply.workflow(), "login");
    }
    // The instance that can verify serves the same wizard.
    let ok = keyed
        .signin_with_captcha(&uuid, &user.email, &user.password, "pass-keyed")
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.body);
}

#[tokio::test]
async fn a_reset_code_asked_for_at_the_login_screen_needs_a_token_too() {
    let verifier = FakeRecaptcha::spawn(false).await;
    let app = app_with_verifier(&verifier.url).await;
    let user = app
        .create_user(UserSpec {
            force_password_reset: true,
            ..UserSpec::default()
        })
        .await;
    let uuid = app.start().await;
    let missing = app.restore(&uuid, Some(&user.email)).await;
    assert_eq!(
        (missing.status, missing.error(), missing.workflow()),
        (StatusCode::UNPROCESSABLE_ENTITY, "captcha_failed", "login"),
        "{}",
        missing.body
    );
    assert!(app.mail.messages_for(&user.email).is_empty());
    let body = json!({ "uuid": uuid, "email": user.email, "recaptchaResponse": "pass-restore" });
    let solved = app.post("/api/v2/my/signin/password/restore", body).await;
    assert_eq!(solved.workflow(), "reset_password_code", "{}", solved.body);

    // Who gave the account's password asks without one.
    let forced = app.start().await;
    let reply = app
        .signin_with_captcha(&forced, &user.email, &user.password, "pass-signin")
        .await;
    assert_eq!(reply.workflow(), "reset_password_email", "{}", reply.body);
    let restored = app.restore(&forced, None).await;
    assert_eq!(
        restored.workflow(),
        "reset_password_code",
        "{}",
        restored.body
    );
}
