//! Every branch of the wizard, on both stores.

use crate::helpers::{BACKENDS, Backend, Reply, TestApp, UserSpec, slow_hashing_app, spawn_app};
use chrono::{DateTime, Duration};
use reqwest::StatusCode;
use serde_json::{Value, json};
use signin_wizard::credentials::TokenUse;
use signin_wizard::startup::Application;

fn token_lifetime(token: &Value) -> Duration {
    let at = |field: &str| DateTime::parse_from_rfc3339(token[field].as_str().unwrap()).unwrap();
    assert!(
        token["createdAt"].as_str().unwrap().ends_with("+00:00"),
        "RFC 3339 with offset: {token}"
    );
    at("expiresAt") - at("createdAt")
}

async fn assert_signed_in(app: &TestApp, reply: &crate::helpers::Reply, user_id: &str) {
    reply.assert_envelope();
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["done"], true);
    assert_eq!(reply.workflow(), "Terminate");
    let data = &reply.body["data"];
    assert_eq!(data["tfaProviders"], serde_json::json!([]));
    assert_eq!(token_lifetime(&data["accessToken"]), Duration::minutes(15));
    assert_eq!(token_lifetime(&data["refreshToken"]), Duration::minutes(60));
    let access = app
        .verify_access_token(data["accessToken"]["token"].as_str().unwrap())
        .await;
    assert_eq!(access.sub, user_id);
    assert_eq!(access.token_use, TokenUse::Access);
    // The refresh token is opaque: 112 base64url characters, not a JWT.
    let refresh = data["refreshToken"]["token"].as_str().unwrap();
    assert_eq!(refresh.len(), 112, "{refresh}");
    assert!(
        refresh
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    // The session is open, under the access token's sid.
    let me = app
        .get_with_bearer("/api/v2/my/me", access_token(reply))
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["data"]["session"]["id"], access.sid.as_str());
}

fn access_token(reply: &Reply) -> &str {
    reply.body["data"]["accessToken"]["token"].as_str().unwrap()
}

#[tokio::test]
async fn start_answers_the_login_step() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let reply = app.get("/api/v2/my/signin/wizard").await;
        reply.assert_envelope();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.workflow(), "login");
        assert_eq!(reply.body["done"], false);
        assert_eq!(reply.body["data"]["recaptcha"]["enabled"], false);
        assert!(reply.body["data"]["is_qr_available"].is_boolean());
        assert!(reply.body["data"]["is_password_recovery_available"].is_boolean());
        let uuid = uuid::Uuid::parse_str(reply.body["uuid"].as_str().unwrap()).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
    }
}

#[tokio::test]
async fn password_only_account_gets_tokens_at_once() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let uuid = app.start().await;
        // Email matching ignores case.
        let reply = app
            .signin(&uuid, &user.email.to_uppercase(), &user.password)
            .await;
        assert_signed_in(&app, &reply, &user.id).await;
    }
}

#[tokio::test]
async fn totp_account_signs_in_with_its_authenticator_code() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::totp()).await;
        let uuid = app.start().await;
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        reply.assert_envelope();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.workflow(), "2fa_google_auth");
        assert_eq!(reply.body["data"]["accessToken"], Value::Null);
        assert_eq!(reply.body["data"]["refreshToken"], Value::Null);
        assert_eq!(reply.body["data"]["tfaProviders"][0]["name"], "google");
        assert!(
            app.sms.messages().is_empty(),
            "no SMS for an app-only account"
        );

        let reply = app.totp(&uuid, &app.totp_now(&user)).await;
        assert_signed_in(&app, &reply, &user.id).await;
    }
}

#[tokio::test]
async fn sms_account_is_sent_a_code_right_after_the_password() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::sms("+1 555-010-0200")).await;
        let uuid = app.start().await;
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.workflow(), "2fa_sms_auth");
        assert_eq!(reply.body["data"]["tfaProviders"][0]["name"], "sms");

        let phone = user.phone.as_deref().unwrap();
        let messages = app.sms.messages();
        assert_eq!(messages.len(), 1);
        let code = app.sms.last_code_for(phone).unwrap();
        assert_eq!(code.len(), 6);
        assert!(messages[0]["text"].as_str().unwrap().contains(&code));

        let reply = app.sms_code(&uuid, &code).await;
        assert_signed_in(&app, &reply, &user.id).await;
    }
}

#[tokio::test]
async fn account_with_both_factors_chooses_one() {
    for backend in BACKENDS {
        for factor in ["google", "sms"] {
            let app = spawn_app(backend).await;
            let user = app
                .create_user(UserSpec {
                    totp: true,
                    phone: Some("+15550100300"),
                    ..Default::default()
                })
                .await;
            let uuid = app.start().await;
            let reply = app.signin(&uuid, &user.email, &user.password).await;
            assert_eq!(reply.workflow(), "2fa", "{}", reply.body);
            let names: Vec<&str> = reply.body["data"]["tfaProviders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    assert_eq!(p["enabled"], true);
                    assert!(p["localizedCaption"].is_string());
                    p["name"].as_str().unwrap()
                })
                .collect();
            assert_eq!(names, ["google", "sms"]);
            assert!(app.sms.messages().is_empty(), "no SMS before the choice");

            let reply = app.choose(&uuid, factor).await;
            reply.assert_envelope();
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.body["data"], Value::Null);
            let reply = if factor == "google" {
                assert_eq!(reply.workflow(), "2fa_google_auth");
                app.totp(&uuid, &app.totp_now(&user)).await
            } else {
                assert_eq!(reply.workflow(), "2fa_sms_auth");
                let code = app.sms_code_of(&user);
                app.sms_code(&uuid, &code).await
            };
            assert_signed_in(&app, &reply, &user.id).await;
        }
    }
}

#[tokio::test]
async fn forced_reset_stops_at_reset_password_email_without_tokens() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app
            .create_user(UserSpec {
                totp: true,
                force_password_reset: true,
                ..Default::default()
            })
            .await;
        let uuid = app.start().await;
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        reply.assert_envelope();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.workflow(), "reset_password_email");
        assert_eq!(reply.body["done"], false);
        assert_eq!(reply.body["data"]["accessToken"], Value::Null);
        // No other step can get tokens out of this wizard.
        let reply = app.totp(&uuid, &app.totp_now(&user)).await;
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::CONFLICT, "step_not_allowed")
        );
        assert_eq!(reply.workflow(), "reset_password_email");
    }
}

#[tokio::test]
async fn a_completed_wizard_never_mints_tokens_again() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::totp()).await;
        let uuid = app.past_password(&user).await;
        let code = app.totp_now(&user);
        assert_eq!(app.totp(&uuid, &code).await.status, StatusCode::ACCEPTED);
        for reply in [
            app.totp(&uuid, &code).await,
            app.signin(&uuid, &user.email, &user.password).await,
            app.choose(&uuid, "google").await,
        ] {
            reply.assert_envelope();
            assert_eq!(
                (reply.status, reply.error()),
                (StatusCode::CONFLICT, "wizard_completed")
            );
            assert_eq!(reply.workflow(), "Terminate");
            assert_eq!(reply.body["done"], false);
            assert!(reply.body["data"].get("accessToken").is_none());
        }
    }
}

#[tokio::test]
async fn an_expired_wizard_answers_410_and_keeps_its_step() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::totp()).await;
        let uuid = app.past_password(&user).await;
        app.advance_clock(Duration::seconds(app.settings.wizard_ttl_secs.into()));
        let reply = app.totp(&uuid, &app.totp_now(&user)).await;
        reply.assert_envelope();
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::GONE, "wizard_expired")
        );
        assert_eq!(reply.workflow(), "2fa_google_auth");
        assert!(reply.body["meta"]["expiresAt"].is_string());
    }
}

#[tokio::test]
async fn an_sms_code_expires_after_its_lifetime() {
    let app = spawn_app(Backend::Memory).await;
    let user = app.create_user(UserSpec::sms("+15550100400")).await;
    let uuid = app.past_password(&user).await;
    let code = app.sms_code_of(&user);
    app.advance_clock(Duration::seconds(app.settings.sms_code_ttl_secs.into()));
    let reply = app.sms_code(&uuid, &code).await;
    assert_eq!(
        (reply.status, reply.error()),
        (StatusCode::GONE, "code_expired")
    );
    assert_eq!(reply.workflow(), "2fa_sms_auth");
}

fn assert_account_changed(reply: &Reply, workflow: &str) {
    reply.assert_envelope();
    assert_eq!(
        (reply.status, reply.error()),
        (StatusCode::GONE, "account_changed"),
        "{}",
        reply.body
    );
    assert_eq!(reply.workflow(), workflow, "the wizard stays where it was");
}

#[tokio::test]
async fn a_wizard_in_flight_sees_the_account_as_it_is_now() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        for change in [
            json!({ "force_password_reset": true }),
            json!({ "password": "a brand new password" }),
            json!({ "totp_secret": null }),
            json!({ "email": format!("moved-{}@example.test", uuid::Uuid::new_v4().simple()) }),
        ] {
            let user = app.create_user(UserSpec::totp()).await;
            let uuid = app.past_password(&user).await;
            let code = app.totp_now(&user);
            assert_eq!(app.patch_user(&user, change.clone()).await, StatusCode::OK);
            let reply = app.totp(&uuid, &code).await;
            assert_account_changed(&reply, "2fa_google_auth");
            assert!(
                reply.body["data"]["accessToken"].is_null(),
                "{backend:?} {change}"
            );
        }
        // A new sign-in sees the change: here, the reset the admin forced.
        let user = app.create_user(UserSpec::totp()).await;
        let stale = app.past_password(&user).await;
        app.patch_user(&user, json!({ "force_password_reset": true }))
            .await;
        assert_account_changed(
            &app.totp(&stale, &app.totp_now(&user)).await,
            "2fa_google_auth",
        );
        let uuid = app.start().await;
        assert_eq!(
            app.signin(&uuid, &user.email, &user.password)
                .await
                .workflow(),
            "reset_password_email"
        );
    }
}

#[tokio::test]
async fn an_sms_code_sent_to_a_phone_since_removed_or_replaced_is_void() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        for phone in [Value::Null, json!("+15550101177")] {
            let user = app.create_user(UserSpec::sms("+15550101100")).await;
            let uuid = app.past_password(&user).await;
            let code = app.sms_code_of(&user);
            assert_eq!(
                app.patch_user(&user, json!({ "phone": phone })).await,
                StatusCode::OK
            );
            assert_account_changed(&app.sms_code(&uuid, &code).await, "2fa_sms_auth");
            let resend = app
                .post("/api/v2/my/2fa/sms/resend", json!({ "uuid": uuid }))
                .await;
            assert_account_changed(&resend, "2fa_sms_auth");
        }
    }
}

#[tokio::test]
async fn an_account_deleted_mid_flow_gets_no_tokens() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::sms("+15550101100")).await;
        let uuid = app.past_password(&user).await;
        let code = app.sms_code_of(&user);
        assert_eq!(app.delete_user(&user).await, StatusCode::NO_CONTENT);
        assert_account_changed(&app.sms_code(&uuid, &code).await, "2fa_sms_auth");
    }
}

/// The account is deleted or changed while its password is being checked,
/// between the step's load and its save: the save must not go through.
#[tokio::test]
async fn an_account_changed_while_its_password_is_checked_gets_no_tokens() {
    for backend in BACKENDS {
        let app = slow_hashing_app(backend).await;
        for change in [
            Some(json!({ "force_password_reset": true })),
            None, // deleted
        ] {
            let user = app.create_user(UserSpec::default()).await;
            let uuid = app.start().await;
            let (reply, status) =
                tokio::join!(app.signin(&uuid, &user.email, &user.password), async {
                    // The password check takes about a second; the change lands in it.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    match &change {
                        Some(change) => app.patch_user(&user, change.clone()).await,
                        None => app.delete_user(&user).await,
                    }
                });
            assert!(status.is_success());
            reply.assert_envelope();
            assert_eq!(
                (reply.status, reply.error()),
                (StatusCode::CONFLICT, "concurrent_request"),
                "{backend:?} {change:?}: {}",
                reply.body
            );
            assert_eq!(reply.workflow(), "login");
            // Trying again judges the account as it now is.
            let again = app.signin(&uuid, &user.email, &user.password).await;
            let expected = if change.is_some() {
                "reset_password_email"
            } else {
                "login"
            };
            assert_eq!(again.workflow(), expected, "{}", again.body);
            assert_ne!(again.status, StatusCode::ACCEPTED);
        }
    }
}

#[tokio::test]
async fn demo_accounts_survive_a_restart_on_a_shared_redis() {
    let sms = crate::helpers::FakeSms::spawn().await;
    let mut settings = crate::helpers::test_settings(Backend::Redis, &sms);
    settings.demo_users = Some(true);
    let first = Application::build(settings.clone()).await.unwrap();
    let address = format!("http://127.0.0.1:{}", first.port());
    tokio::spawn(first.run_until_stopped());
    // A second instance on the same Redis starts too, and resets the accounts.
    let second = Application::build(settings.clone())
        .await
        .expect("a second start on the same Redis");
    let account = &second.welcome().demo_accounts[3];
    assert_eq!(account.email.as_str(), "plain@demo.test");

    let app = TestApp {
        address,
        client: reqwest::Client::new(),
        clock: Default::default(),
        sms,
        mail: Default::default(),
        settings,
    };
    let uuid = app.start().await;
    let reply = app
        .signin(&uuid, account.email.as_str(), &account.password)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "the password printed last is the one that works"
    );
}
