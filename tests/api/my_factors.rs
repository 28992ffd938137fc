//! `/api/v2/my/account/2fa`: a signed-in user sets up, enables and
//! disables an authenticator app and renews its backup codes, each change
//! proven again and counted in the account's lockout.

use crate::helpers::{
    BACKENDS, Backend, Reply, TestApp, TestUser, Tokens, UserSpec, other_code, read_qr,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use signin_wizard::credentials::TotpSecret;

const STATUS: &str = "/api/v2/my/account/2fa";

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> Reply {
    app.with_bearer(Method::POST, &format!("{STATUS}{path}"), token, Some(body))
        .await
}

fn codes_of(reply: &Reply) -> Vec<String> {
    reply.body["data"]["backupCodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no backup codes: {}", reply.body))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// Sets an app up for `user` (signed in with `tokens`) and enables it: its secret and backup codes.
async fn with_app(app: &TestApp, user: &TestUser, tokens: &Tokens) -> (TotpSecret, Vec<String>) {
    let setup = post(
        app,
        "/google/setup",
        &tokens.access,
        json!({ "password": user.password }),
    )
    .await;
    assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
    let secret = TotpSecret::parse(setup.body["data"]["secret"].as_str().unwrap()).unwrap();
    let code = secret.code_at(app.clock.now()).unwrap();
    let enabled = post(
        app,
        "/google/enable",
        &tokens.access,
        json!({ "code": code }),
    )
    .await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
    (secret, codes_of(&setup))
}

#[tokio::test]
async fn an_app_set_up_changes_nothing_until_its_first_code_enables_it() {
    for backend in BACKENDS {
        let app = crate::helpers::spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let here = app.sign_in_as(&user, "this-phone").await;
        let elsewhere = app.sign_in_as(&user, "old-laptop").await;

        let status = app.get_with_bearer(STATUS, &here.access).await;
        assert_eq!(
            status.status,
            StatusCode::OK,
            "{backend:?}: {}",
            status.body
        );
        assert_eq!(
            status.body["data"],
            json!({ "totp": false, "sms": false, "phone": null, "backupCodesLeft": null })
        );

        // The password is proven again, and counted.
        let wrong = post(
            &app,
            "/google/setup",
            &here.access,
            json!({ "password": "not it" }),
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
        assert_eq!(wrong.error(), "invalid_credentials");
        let missing = post(&app, "/google/setup", &here.access, json!({})).await;
        assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.body);
        let nothing_pending = post(
            &app,
            "/google/enable",
            &here.access,
            json!({ "code": "123456" }),
        )
        .await;
        assert_eq!(
            nothing_pending.error(),
            "no_pending_setup",
            "{}",
            nothing_pending.body
        );

        let setup = post(
            &app,
            "/google/setup",
            &here.access,
            json!({ "password": user.password }),
        )
        .await;
        assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
        let data = &setup.body["data"];
        let secret = TotpSecret::parse(data["secret"].as_str().unwrap()).unwrap();
        let uri = data["otpauthUrl"].as_str().unwrap();
        assert_eq!(read_qr(data["qrCode"].as_str().unwrap()), uri);
        assert_eq!(codes_of(&setup).len(), 10);

        // Pending: the account still signs in with its password alone.
        let status = app.get_with_bearer(STATUS, &here.access).await;
        assert_eq!(status.body["data"]["totp"], false);
        app.sign_in_as(&user, "meanwhile").await;

        let code = secret.code_at(app.clock.now()).unwrap();
        let wrong = post(
            &app,
            "/google/enable",
            &here.access,
            json!({ "code": other_code(&code) }),
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
        assert_eq!(wrong.error(), "invalid_code");
        let enabled = post(
            &app,
            "/google/enable",
            &here.access,
            json!({ "code": code }),
        )
        .await;
        assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
        assert_eq!(
            enabled.body["data"],
            json!({ "totp": true, "sms": false, "phone": null, "backupCodesLeft": 10 })
        );

        // This session goes on; the others ended with the change.
        let kept = app.refresh(&here.refresh).await;
        assert_eq!(kept.status, StatusCode::OK, "{}", kept.body);
        let ended = app.refresh(&elsewhere.refresh).await;
        assert_eq!(ended.error(), "invalid_refresh_token", "{}", ended.body);
        let here = Tokens::of(&kept);

        let again = post(
            &app,
            "/google/setup",
            &here.access,
            json!({ "password": user.password }),
        )
        .await;
        assert_eq!(again.error(), "factor_already_enabled", "{}", again.body);
        assert_eq!(again.status, StatusCode::CONFLICT);

        // The sign-in now asks for the app; the code that enabled it is spent.
        let uuid = app.past_password(&user).await;
        let chosen = app.choose(&uuid, "google").await;
        assert_eq!(chosen.workflow(), "2fa_google_auth", "{}", chosen.body);
        let replayed = app.totp(&uuid, &code).await;
        assert_eq!(replayed.error(), "invalid_code", "{}", replayed.body);
        app.advance_clock(chrono::Duration::seconds(30));
        let next = app
            .totp(&uuid, &secret.code_at(app.clock.now()).unwrap())
            .await;
        assert_eq!(next.status, StatusCode::ACCEPTED, "{}", next.body);
    }
}

#[tokio::test]
async fn a_backup_code_disables_the_app_and_renewed_codes_replace_the_old() {
    for backend in BACKENDS {
        let app = crate::helpers::spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let tokens = app.sign_in_as(&user, "phone").await;
        let (_, codes) = with_app(&app, &user, &tokens).await;
        let tokens = Tokens::of(&app.refresh(&tokens.refresh).await);

        // With an app, the password alone changes nothing: a code proves it.
        let password = post(
            &app,
            "/backup-codes",
            &tokens.access,
            json!({ "password": user.password }),
        )
        .await;
        assert_eq!(
            password.status,
            StatusCode::BAD_REQUEST,
            "{}",
            password.body
        );
        // Renewed with a backup code: ten new codes; the old ones are gone.
        let renewed = post(
            &app,
            "/backup-codes",
            &tokens.access,
            json!({ "code": codes[1] }),
        )
        .await;
        assert_eq!(
            renewed.status,
            StatusCode::OK,
            "{backend:?}: {}",
            renewed.body
        );
        let fresh = codes_of(&renewed);
        assert_eq!(fresh.len(), 10);
        assert!(fresh.iter().all(|c| !codes.contains(c)));
        let old = post(
            &app,
            "/google/disable",
            &tokens.access,
            json!({ "code": codes[0] }),
        )
        .await;
        assert_eq!(old.error(), "invalid_code", "{}", old.body);
        let tokens = Tokens::of(&app.refresh(&tokens.refresh).await);

        // A fresh backup code takes the app off, and with it (no other
        // factor left) the backup codes.
        let both = post(
            &app,
            "/google/disable",
            &tokens.access,
            json!({ "code": fresh[0], "password": "x" }),
        )
        .await;
        assert_eq!(both.status, StatusCode::BAD_REQUEST, "{}", both.body);
        let disabled = post(
            &app,
            "/google/disable",
            &tokens.access,
            json!({ "code": fresh[0] }),
        )
        .await;
        assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.body);
        assert_eq!(
            disabled.body["data"],
            json!({ "totp": false, "sms": false, "phone": null, "backupCodesLeft": null })
        );
        let none = post(
            &app,
            "/google/disable",
            &tokens.access,
            json!({ "code": fresh[1] }),
        )
        .await;
        assert_eq!(none.error(), "factor_unavailable", "{}", none.body);
        let nothing = post(
            &app,
            "/backup-codes",
            &tokens.access,
            json!({ "password": user.password }),
        )
        .await;
        assert_eq!(nothing.error(), "factor_unavailable", "{}", nothing.body);
        // Password-only again.
        app.sign_in_as(&user, "after").await;
    }
}

#[tokio::test]
async fn a_backup_code_used_in_the_wizard_cannot_disable_the_app() {
    let app = crate::helpers::spawn_app(Backend::Memory).await;
    let user = app.create_user(UserSpec::sms("+15550107001")).await;
    let uuid = app.past_password(&user).await;
    let signed_in = app.sms_code(&uuid, &app.sms_code_of(&user)).await;
    assert_eq!(signed_in.status, StatusCode::ACCEPTED, "{}", signed_in.body);
    let tokens = Tokens::of(&signed_in);
    let (secret, codes) = with_app(&app, &user, &tokens).await;
    let tokens = Tokens::of(&app.refresh(&tokens.refresh).await);

    let uuid = app.past_password(&user).await;
    app.choose(&uuid, "backup_code").await;
    let used = app
        .post(
            "/api/v2/my/2fa/backup_code",
            json!({ "uuid": uuid, "code": codes[0] }),
        )
        .await;
    assert_eq!(used.status, StatusCode::ACCEPTED, "{}", used.body);
    let refused = post(
        &app,
        "/google/disable",
        &tokens.access,
        json!({ "code": codes[0] }),
    )
    .await;
    assert_eq!(refused.error(), "invalid_code", "{}", refused.body);

    // A code from the app works; the phone keeps the backup codes alive.
    app.advance_clock(chrono::Duration::seconds(30));
    let code = secret.code_at(app.clock.now()).unwrap();
    let disabled = post(
        &app,
        "/google/disable",
        &tokens.access,
        json!({ "code": code }),
    )
    .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.body);
    assert_eq!(disabled.body["data"]["totp"], false);
    assert_eq!(disabled.body["data"]["sms"], true);
    assert_eq!(disabled.body["data"]["backupCodesLeft"], 9);
}

#[tokio::test]
async fn wrong_proofs_count_in_the_account_lockout() {
    let app = crate::helpers::spawn_app(Backend::Memory).await;
    let user = app.create_user(UserSpec::default()).await;
    let tokens = app.sign_in_as(&user, "phone").await;
    let mut last = None;
    for _ in 0..6 {
        last = Some(
            post(
                &app,
                "/google/setup",
                &tokens.access,
                json!({ "password": "wrong" }),
            )
            .await,
        );
    }
    let last = last.unwrap();
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS, "{}", last.body);
    assert_eq!(last.error(), "too_many_attempts");
    // The account is blocked for sign-in too, the right password included.
    let uuid = app.start().await;
    let blocked = app.signin(&uuid, &user.email, &user.password).await;
    assert_eq!(blocked.error(), "too_many_attempts", "{}", blocked.body);
}

#[tokio::test]
async fn without_an_access_token_nothing_is_answered() {
    let app = crate::helpers::spawn_app(Backend::Memory).await;
    let status = app.get(STATUS).await;
    assert_eq!(status.status, StatusCode::UNAUTHORIZED, "{}", status.body);
    assert_eq!(status.error(), "invalid_token");
    let setup = app
        .post(
            &format!("{STATUS}/google/setup"),
            json!({ "password": "x" }),
        )
        .await;
    assert_eq!(setup.error(), "invalid_token", "{}", setup.body);
}

#[tokio::test]
async fn a_phone_is_the_accounts_only_once_the_code_sent_to_it_comes_back() {
    for backend in BACKENDS {
        let app = crate::helpers::spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let here = app.sign_in_as(&user, "this-phone").await;
        let elsewhere = app.sign_in_as(&user, "old-laptop").await;
        let add = |phone: &str, password: &str| json!({ "phone": phone, "password": password });

        let bad = post(&app, "/sms", &here.access, add("12345", &user.password)).await;
        assert_eq!(
            bad.status,
            StatusCode::BAD_REQUEST,
            "{backend:?}: {}",
            bad.body
        );
        let wrong = post(&app, "/sms", &here.access, add("+15550107100", "nope")).await;
        assert_eq!(wrong.error(), "invalid_credentials", "{}", wrong.body);
        let sent = post(
            &app,
            "/sms",
            &here.access,
            add("+1 555 010 7100", &user.password),
        )
        .await;
        assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
        assert_eq!(sent.body["data"]["phone"], "+15550107100");
        assert!(sent.body["data"]["expiresAt"].is_string());
        let code = app
            .sms
            .last_code_for("+15550107100")
            .expect("a code was texted");

        // Unproven: nothing changed, and asking again at once is refused.
        let status = app.get_with_bearer(STATUS, &here.access).await;
        assert_eq!(status.body["data"]["sms"], false, "{}", status.body);
        app.sign_in_as(&user, "meanwhile").await;
        let soon = post(
            &app,
            "/sms",
            &here.access,
            add("+15550107100", &user.password),
        )
        .await;
        assert_eq!(soon.error(), "resend_too_soon", "{}", soon.body);
        let wrong = post(
            &app,
            "/sms/confirm",
            &here.access,
            json!({ "code": other_code(&code) }),
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
        assert_eq!(wrong.error(), "invalid_code");

        let proven = post(&app, "/sms/confirm", &here.access, json!({ "code": code })).await;
        assert_eq!(proven.status, StatusCode::OK, "{}", proven.body);
        assert_eq!(
            proven.body["data"],
            json!({ "totp": false, "sms": true, "phone": "+15550107100", "backupCodesLeft": null })
        );
        let again = post(&app, "/sms/confirm", &here.access, json!({ "code": code })).await;
        assert_eq!(again.error(), "no_pending_setup", "{}", again.body);
        let ended = app.refresh(&elsewhere.refresh).await;
        assert_eq!(ended.error(), "invalid_refresh_token", "{}", ended.body);
        let here = Tokens::of(&app.refresh(&here.refresh).await);

        // The sign-in now texts the number.
        let uuid = app.past_password(&user).await;
        let texted = app.sms.last_code_for("+15550107100").unwrap();
        let signed_in = app.sms_code(&uuid, &texted).await;
        assert_eq!(signed_in.status, StatusCode::ACCEPTED, "{}", signed_in.body);

        // Removed with the password: password-only again.
        let removed = post(
            &app,
            "/sms/disable",
            &here.access,
            json!({ "password": user.password }),
        )
        .await;
        assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
        assert_eq!(removed.body["data"]["sms"], false);
        let none = post(
            &app,
            "/sms/disable",
            &here.access,
            json!({ "password": user.password }),
        )
        .await;
        assert_eq!(none.error(), "factor_unavailable", "{}", none.body);
        app.sign_in_as(&user, "after").await;
    }
}

#[tokio::test]
async fn a_phone_code_that_was_not_delivered_or_expired_proves_nothing() {
    let app = crate::helpers::spawn_app(Backend::Memory).await;
    let user = app.create_user(UserSpec::default()).await;
    let tokens = app.sign_in_as(&user, "phone").await;
    let body = json!({ "phone": "+15550107200", "password": user.password });

    app.sms.set_failing(true);
    let failed = post(&app, "/sms", &tokens.access, body.clone()).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{}", failed.body);
    assert_eq!(failed.error(), "sms_delivery_failed");
    let nothing = post(
        &app,
        "/sms/confirm",
        &tokens.access,
        json!({ "code": "123456" }),
    )
    .await;
    assert_eq!(nothing.error(), "no_pending_setup", "{}", nothing.body);

    app.sms.set_failing(false);
    let sent = post(&app, "/sms", &tokens.access, body.clone()).await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let code = app.sms.last_code_for("+15550107200").unwrap();
    // Resends refused as too soon cost no attempt of the account.
    for _ in 0..6 {
        let soon = post(&app, "/sms", &tokens.access, body.clone()).await;
        assert_eq!(soon.error(), "resend_too_soon", "{}", soon.body);
    }
    app.sign_in_as(&user, "not-blocked").await;
    app.advance_clock(chrono::Duration::seconds(
        i64::from(app.settings.sms_code_ttl_secs) + 1,
    ));
    let expired = post(
        &app,
        "/sms/confirm",
        &tokens.access,
        json!({ "code": code }),
    )
    .await;
    assert_eq!(expired.status, StatusCode::GONE, "{}", expired.body);
    assert_eq!(expired.error(), "code_expired");
}

#[tokio::test]
async fn an_account_that_must_have_a_factor_keeps_its_last_one() {
    let app = crate::helpers::spawn_app(Backend::Memory).await;
    let user = app
        .create_user(UserSpec {
            totp: true,
            second_factor_required: true,
            ..UserSpec::default()
        })
        .await;
    let uuid = app.past_password(&user).await;
    let reply = app.totp(&uuid, &app.totp_now(&user)).await;
    let tokens = Tokens::of(&reply);
    app.advance_clock(chrono::Duration::seconds(30));
    let code = app.totp_now(&user);
    let refused = post(
        &app,
        "/google/disable",
        &tokens.access,
        json!({ "code": code }),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.error(), "factor_required");

    // A session an admin change left behind changes nothing more.
    let status = app
        .patch_user(&user, json!({ "second_factor_required": false }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let stale = post(
        &app,
        "/google/disable",
        &tokens.access,
        json!({ "code": code }),
    )
    .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.body);
    assert_eq!(stale.error(), "invalid_token");
}

#[tokio::test]
async fn a_new_number_replaces_the_phone_once_proven() {
    for backend in BACKENDS {
        let app = crate::helpers::spawn_app(backend).await;
        let user = app.create_user(UserSpec::sms("+15550107300")).await;
        let uuid = app.past_password(&user).await;
        let signed_in = app.sms_code(&uuid, &app.sms_code_of(&user)).await;
        let tokens = Tokens::of(&signed_in);

        let body = json!({ "phone": "+15550107301", "password": user.password });
        let sent = post(&app, "/sms", &tokens.access, body).await;
        assert_eq!(sent.status, StatusCode::OK, "{backend:?}: {}", sent.body);
        let code = app.sms.last_code_for("+15550107301").unwrap();
        // Until the new number answers, sign-ins text the old one.
        let before = app.sms.messages().len();
        let uuid = app.past_password(&user).await;
        assert_eq!(app.sms.messages()[before]["to"], "+15550107300");
        let proven = post(
            &app,
            "/sms/confirm",
            &tokens.access,
            json!({ "code": code }),
        )
        .await;
        assert_eq!(proven.status, StatusCode::OK, "{}", proven.body);
        assert_eq!(proven.body["data"]["phone"], "+15550107301");
        // The wizard begun before the change starts over; a new one texts the new number.
        let stale = app.sms_code(&uuid, &app.sms_code_of(&user)).await;
        assert_eq!(stale.error(), "account_changed", "{}", stale.body);
        let before = app.sms.messages().len();
        app.past_password(&user).await;
        let last = app.sms.messages()[before..].to_vec();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0]["to"], "+15550107301", "{last:?}");
    }
}
