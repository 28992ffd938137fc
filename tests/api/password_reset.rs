//! Password restore and reset by emailed code: from the login screen and
//! from an operator's forced reset, over HTTP to an SMTP server of the
//! test's own, on every store.

use crate::helpers::{
    BACKENDS, Backend, FakeSms, Reply, TestApp, TestUser, Tokens, UserSpec, other_code, spawn_app,
    spawn_with, test_settings,
};
use chrono::Duration;
use reqwest::StatusCode;
use signin_wizard::replay::mailbox::FailAt;

const NEW_PASSWORD: &str = "correct horse battery staple 42";

fn assert_refused(reply: &Reply, status: StatusCode, code: &str, workflow: &str) {
    reply.assert_envelope();
    assert_eq!(
        (reply.status, reply.error(), reply.workflow()),
        (status, code, workflow),
        "{}",
        reply.body
    );
}

fn assert_at(reply: &Reply, workflow: &str) {
    reply.assert_envelope();
    assert_eq!(
        (reply.status, reply.workflow()),
        (StatusCode::OK, workflow),
        "{}",
        reply.body
    );
}

fn forced() -> UserSpec {
    UserSpec {
        force_password_reset: true,
        ..UserSpec::default()
    }
}

/// A wizard at `reset_password_code` for `user`, through the forced reset.
async fn code_sent(app: &TestApp, user: &TestUser) -> String {
    let uuid = app.past_password(user).await;
    assert_at(&app.restore(&uuid, None).await, "reset_password_code");
    uuid
}

#[tokio::test]
async fn a_forced_reset_sets_a_new_password_signs_out_everywhere_and_clears_the_flag() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let before = app.sign_in_as(&user, "old-phone/1.0").await;
        assert_eq!(
            app.patch_user(&user, serde_json::json!({ "force_password_reset": true }))
                .await,
            StatusCode::OK
        );

        let uuid = app.past_password(&user).await;
        let restored = app.restore(&uuid, None).await;
        assert_at(&restored, "reset_password_code");
        assert!(restored.body["data"]["codeExpiresAt"].is_string());
        let mails = app.mail.messages_for(&user.email);
        let [mail] = mails.as_slice() else {
            panic!("{backend:?}: one email, got {mails:?}")
        };
        let code = app.email_code_to(&user.email);
        for part in [&mail.text, &mail.html] {
            let part = part.as_deref().unwrap_or_default();
            assert!(
                part.contains(&code) && part.contains("10 minutes"),
                "{mail:?}"
            );
        }

        let reset = app.reset(&uuid, &code, NEW_PASSWORD).await;
        assert_at(&reset, "login");
        assert_eq!(reset.body["uuid"], uuid.as_str());
        assert_eq!(reset.body["data"]["is_password_recovery_available"], true);
        // Used once: the wizard has moved on.
        let again = app.reset(&uuid, &code, "another fine passphrase 7").await;
        assert_refused(&again, StatusCode::CONFLICT, "step_not_allowed", "login");

        // The old password is gone, every session with it, and the flag.
        let old = app.signin(&uuid, &user.email, &user.password).await;
        assert_refused(
            &old,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "login",
        );
        let me = app.get_with_bearer("/api/v2/my/me", &before.access).await;
        assert_eq!(
            me.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            me.body
        );
        let refreshed = app.refresh(&before.refresh).await;
        assert_eq!(
            refreshed.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            refreshed.body
        );
        let signed_in = app.signin(&uuid, &user.email, NEW_PASSWORD).await;
        assert_eq!(signed_in.status, StatusCode::ACCEPTED, "{}", signed_in.body);
        Tokens::of(&signed_in);
    }
}

#[tokio::test]
async fn a_bad_new_password_is_refused_and_the_wizard_waits_with_its_code() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(forced()).await;
        let uuid = code_sent(&app, &user).await;
        let code = app.email_code_to(&user.email);
        let too_long = "x".repeat(1025);
        let cases = [
            ("short1!", "invalid_password"),
            ("password123", "invalid_password"),
            ("qwertyuiop", "invalid_password"),
            (too_long.as_str(), "invalid_password"),
        ];
        for (password, error) in cases {
            let reply = app.reset(&uuid, &code, password).await;
            assert_refused(
                &reply,
                StatusCode::UNPROCESSABLE_ENTITY,
                error,
                "reset_password_code",
            );
        }
        let mismatched = app
            .post(
                "/api/v2/my/signin/password/reset",
                serde_json::json!({ "uuid": uuid, "code": code, "password": NEW_PASSWORD, "password_confirmation": "correct horse battery staple 43" }),
            )
            .await;
        assert_refused(
            &mismatched,
            StatusCode::UNPROCESSABLE_ENTITY,
            "password_mismatch",
            "reset_password_code",
        );
        let reused = app.reset(&uuid, &code, &user.password).await;
        assert_refused(
            &reused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "password_reused",
            "reset_password_code",
        );
        // None of that spent the code, nor an attempt of the account.
        assert_at(&app.reset(&uuid, &code, NEW_PASSWORD).await, "login");
    }
}

#[tokio::test]
async fn wrong_expired_and_other_wizards_codes_are_refused_and_count() {
    for backend in BACKENDS {
        let sms = FakeSms::spawn().await;
        let mut settings = test_settings(backend, &sms);
        // A wizard that outlives its code.
        settings.wizard_ttl_secs = 1800;
        let app = spawn_with(settings, sms).await;
        let (alice, bob) = (
            app.create_user(forced()).await,
            app.create_user(forced()).await,
        );
        let alice_wizard = code_sent(&app, &alice).await;
        let bob_wizard = code_sent(&app, &bob).await;
        let alice_code = app.email_code_to(&alice.email);
        let bob_code = app.email_code_to(&bob.email);

        let wrong = app
            .reset(&alice_wizard, &other_code(&alice_code), NEW_PASSWORD)
            .await;
        assert_refused(
            &wrong,
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            "reset_password_code",
        );
        let theirs = app.reset(&alice_wizard, &bob_code, NEW_PASSWORD).await;
        if alice_code != bob_code {
            assert_refused(
                &theirs,
                StatusCode::UNAUTHORIZED,
                "invalid_code",
                "reset_password_code",
            );
        }
        // Wrong codes count against the account like any other: the fifth blocks it.
        for _ in 0..3 {
            let wrong = app
                .reset(&alice_wizard, &other_code(&alice_code), NEW_PASSWORD)
                .await;
            assert_eq!(wrong.error(), "invalid_code", "{backend:?}: {}", wrong.body);
        }
        let blocked = app
            .signin(&app.start().await, &alice.email, &alice.password)
            .await;
        assert_eq!(
            (blocked.status, blocked.error()),
            (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            "{backend:?}: {}",
            blocked.body
        );

        app.advance_clock(Duration::minutes(10));
        let late = app.reset(&bob_wizard, &bob_code, NEW_PASSWORD).await;
        assert_refused(
            &late,
            StatusCode::GONE,
            "code_expired",
            "reset_password_code",
        );
        // A new code (the cooldown long over) works where the old one stopped.
        assert_at(&app.restore(&bob_wizard, None).await, "reset_password_code");
        let fresh = app.email_code_to(&bob.email);
        assert_at(&app.reset(&bob_wizard, &fresh, NEW_PASSWORD).await, "login");
    }
}

#[tokio::test]
async fn the_login_screen_answers_alike_whether_or_not_an_account_has_the_email() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::totp()).await;
        let nobody = format!("nobody-{}@example.test", uuid::Uuid::new_v4().simple());

        let known_wizard = app.start().await;
        let known = app.restore(&known_wizard, Some(&user.email)).await;
        let unknown_wizard = app.start().await;
        let unknown = app.restore(&unknown_wizard, Some(&nobody)).await;
        for reply in [&known, &unknown] {
            assert_at(reply, "reset_password_code");
        }
        let shape = |reply: &Reply| {
            let mut body = reply.body.clone();
            body["uuid"] = serde_json::Value::Null;
            body["meta"]["expiresAt"] = serde_json::Value::Null;
            body["data"]["codeExpiresAt"] = serde_json::Value::Null;
            body
        };
        assert_eq!(shape(&known), shape(&unknown), "{backend:?}");

        // The owner gets a code; the address without an account a notice, and no code.
        let code = app.email_code_to(&user.email);
        let notices = app.mail.messages_for(&nobody);
        assert_eq!(notices.len(), 1, "{backend:?}");
        assert_eq!(
            app.mail.last_code_for(&nobody),
            None,
            "{:?}",
            notices[0].text
        );
        // No code works for an address without an account, not even the owner's.
        let guess = app.reset(&unknown_wizard, &code, NEW_PASSWORD).await;
        assert_refused(
            &guess,
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            "reset_password_code",
        );

        // The owner's code resets the password; the authenticator stays, so
        // signing in with the new password still asks for it.
        assert_at(
            &app.reset(&known_wizard, &code, NEW_PASSWORD).await,
            "login",
        );
        let next = app.signin(&known_wizard, &user.email, NEW_PASSWORD).await;
        assert_at(&next, "2fa_google_auth");
    }
}

#[tokio::test]
async fn restore_takes_the_email_only_at_login() {
    let app = spawn_app(Backend::Memory).await;
    let user = app.create_user(forced()).await;
    let uuid = app.start().await;
    let without = app.restore(&uuid, None).await;
    assert_refused(&without, StatusCode::CONFLICT, "step_not_allowed", "login");
    let bad = app.restore(&uuid, Some("not an address")).await;
    assert_refused(&bad, StatusCode::BAD_REQUEST, "invalid_request", "login");

    let uuid = app.past_password(&user).await;
    let with = app.restore(&uuid, Some(&user.email)).await;
    assert_refused(
        &with,
        StatusCode::CONFLICT,
        "step_not_allowed",
        "reset_password_email",
    );
    assert!(app.mail.messages_for(&user.email).is_empty());
}

#[tokio::test]
async fn a_resend_waits_for_the_cooldown_and_replaces_the_code() {
    let app = spawn_app(Backend::Redis).await;
    let user = app.create_user(forced()).await;
    let uuid = code_sent(&app, &user).await;
    let first = app.email_code_to(&user.email);
    let soon = app.restore(&uuid, None).await;
    assert_refused(
        &soon,
        StatusCode::TOO_MANY_REQUESTS,
        "resend_too_soon",
        "reset_password_code",
    );
    assert!(soon.body["data"]["error"]["retry_after"].is_u64());
    app.advance_clock(Duration::seconds(31));
    assert_at(&app.restore(&uuid, None).await, "reset_password_code");
    assert_eq!(app.mail.messages_for(&user.email).len(), 2);
    let second = app.email_code_to(&user.email);
    if first != second {
        let old = app.reset(&uuid, &first, NEW_PASSWORD).await;
        assert_refused(
            &old,
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            "reset_password_code",
        );
    }
    assert_at(&app.reset(&uuid, &second, NEW_PASSWORD).await, "login");
}

#[tokio::test]
async fn a_failed_delivery_is_reported_alike_and_leaves_the_wizard_where_it_was() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        for fail_at in [FailAt::Connect, FailAt::Recipient, FailAt::Data] {
            // Fresh addresses: a failed hand-over still draws on an address's allowance.
            let user = app.create_user(forced()).await;
            let nobody = format!("nobody-{}@example.test", uuid::Uuid::new_v4().simple());
            app.mail.fail_at(Some(fail_at));
            let uuid = app.start().await;
            for email in [&user.email, &nobody] {
                let reply = app.restore(&uuid, Some(email)).await;
                assert_refused(
                    &reply,
                    StatusCode::BAD_GATEWAY,
                    "email_delivery_failed",
                    "login",
                );
            }
            let forced_wizard = app.past_password(&user).await;
            let reply = app.restore(&forced_wizard, None).await;
            assert_refused(
                &reply,
                StatusCode::BAD_GATEWAY,
                "email_delivery_failed",
                "reset_password_email",
            );
            app.mail.fail_at(None);
            // Put back, so the same request now goes through.
            assert_at(
                &app.restore(&forced_wizard, None).await,
                "reset_password_code",
            );
            assert_at(
                &app.restore(&uuid, Some(&nobody)).await,
                "reset_password_code",
            );
        }
    }
}

#[tokio::test]
async fn one_code_resets_once_under_concurrency() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(forced()).await;
        let uuid = code_sent(&app, &user).await;
        let code = app.email_code_to(&user.email);
        let passwords: Vec<String> = (0..8)
            .map(|n| format!("{NEW_PASSWORD} and {n} more"))
            .collect();
        let replies = futures::future::join_all(
            passwords
                .iter()
                .map(|password| app.reset(&uuid, &code, password)),
        )
        .await;
        let won: Vec<&String> = passwords
            .iter()
            .zip(&replies)
            .filter(|(_, reply)| reply.status == StatusCode::OK)
            .map(|(password, _)| password)
            .collect();
        let [winner] = won.as_slice() else {
            panic!(
                "{backend:?}: exactly one reset, got {:?}",
                replies
                    .iter()
                    .map(|r| r.error().to_owned())
                    .collect::<Vec<_>>()
            )
        };
        // The password that won is the one that works.
        let uuid = app.start().await;
        let reply = app.signin(&uuid, &user.email, winner).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    }
}

#[tokio::test]
async fn without_email_delivery_recovery_is_off() {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Redis, &sms);
    settings.email_log = Some(false);
    let app = spawn_with(settings, sms).await;
    let started = app.get("/api/v2/my/signin/wizard").await;
    assert_eq!(
        started.body["data"]["is_password_recovery_available"],
        false
    );
    let uuid = started.body["uuid"].as_str().unwrap();
    let user = app.create_user(forced()).await;
    let reply = app.restore(uuid, Some(&user.email)).await;
    assert_refused(
        &reply,
        StatusCode::CONFLICT,
        "password_recovery_unavailable",
        "login",
    );
}

#[tokio::test]
async fn one_address_gets_a_few_emails_however_many_wizards_ask() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let nobody = format!("nobody-{}@example.test", uuid::Uuid::new_v4().simple());
        for email in [user.email.as_str(), nobody.as_str()] {
            for _ in 0..5 {
                let reply = app.restore(&app.start().await, Some(email)).await;
                assert_at(&reply, "reset_password_code");
            }
            let uuid = app.start().await;
            let refused = app.restore(&uuid, Some(email)).await;
            assert_refused(
                &refused,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "login",
            );
            let retry_after = refused.body["data"]["error"]["retry_after"]
                .as_u64()
                .unwrap();
            assert!((1..=600).contains(&retry_after), "{retry_after}");
            assert_eq!(app.mail.messages_for(email).len(), 5, "{backend:?}");
            // The wizard was put back (it is still at login), and once there
            // is room again an email goes out.
            app.advance_clock(Duration::minutes(10));
            let again = app.restore(&app.start().await, Some(email)).await;
            assert_at(&again, "reset_password_code");
        }
        // Strangers using an address's allowance up cannot lock out who gives
        // the account's password at reset_password_email.
        let forced_user = app.create_user(forced()).await;
        for _ in 0..6 {
            app.restore(&app.start().await, Some(&forced_user.email))
                .await;
        }
        let uuid = app.past_password(&forced_user).await;
        assert_at(&app.restore(&uuid, None).await, "reset_password_code");
    }
}
