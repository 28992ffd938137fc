//! The life of second factors in the wizard: an account that must have one
//! enrols an authenticator app before it gets a token, and is shown its
//! backup codes once; a backup code then signs in once, never twice, also
//! when raced.

use crate::helpers::{BACKENDS, Backend, TestApp, TestUser, UserSpec, other_code, read_qr};
use reqwest::StatusCode;
use serde_json::{Value, json};
use signin_wizard::credentials::TotpSecret;
use std::collections::BTreeSet;

const ENROL: &str = "2fa_google_auth_enroll";

async fn enroll(app: &TestApp, uuid: &str, code: &str) -> crate::helpers::Reply {
    app.post(
        "/api/v2/my/2fa/google/enroll",
        json!({ "uuid": uuid, "code": code }),
    )
    .await
}

async fn backup_code(app: &TestApp, uuid: &str, code: &str) -> crate::helpers::Reply {
    app.post(
        "/api/v2/my/2fa/backup_code",
        json!({ "uuid": uuid, "code": code }),
    )
    .await
}

/// An account that must enrol, taken through enrolment: the user with the
/// secret it was shown, and the backup codes it was shown.
async fn enrolled(app: &TestApp) -> (TestUser, Vec<String>) {
    let mut user = app
        .create_user(UserSpec {
            second_factor_required: true,
            ..UserSpec::default()
        })
        .await;
    let uuid = app.start().await;
    let reply = app.signin(&uuid, &user.email, &user.password).await;
    assert_eq!(reply.workflow(), ENROL, "{}", reply.body);
    let secret = secret_shown(&reply);
    let reply = enroll(app, &uuid, &secret.code_at(app.clock.now()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    user.totp = Some(secret);
    (user, codes_shown(&reply))
}

fn secret_shown(reply: &crate::helpers::Reply) -> TotpSecret {
    let secret = reply.body["data"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no secret: {}", reply.body));
    TotpSecret::parse(secret).unwrap()
}

fn codes_shown(reply: &crate::helpers::Reply) -> Vec<String> {
    reply.body["data"]["backupCodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no backup codes: {}", reply.body))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// A wizard of `user` (who has an app and backup codes) at the backup-code step.
async fn at_backup_code(app: &TestApp, user: &TestUser) -> String {
    let uuid = app.past_password(user).await;
    let reply = app.choose(&uuid, "backup_code").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.workflow(), "2fa_backup_code");
    uuid
}

fn providers(reply: &crate::helpers::Reply) -> Vec<&str> {
    reply.body["data"]["tfaProviders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_account_that_must_have_a_factor_enrols_an_app_before_any_token() {
    for backend in BACKENDS {
        let app = crate::helpers::spawn_app(backend).await;
        let user = app
            .create_user(UserSpec {
                second_factor_required: true,
                ..UserSpec::default()
            })
            .await;
        let uuid = app.start().await;
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        assert_eq!(reply.status, StatusCode::OK, "{backend:?}: {}", reply.body);
        assert_eq!(reply.workflow(), ENROL);
        let data = &reply.body["data"];
        assert_eq!(
            data["accessToken"],
            Value::Null,
            "no token before the factor"
        );
        let secret = secret_shown(&reply);
        let uri = data["otpauthUrl"].as_str().unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&format!("secret={}", secret.expose_base32())));
        assert_eq!(read_qr(data["qrCode"].as_str().unwrap()), uri);

        // A wrong code leaves the step where it was, with no token.
        let code = secret.code_at(app.clock.now()).unwrap();
        let wrong = enroll(&app, &uuid, &other_code(&code)).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
        assert_eq!(wrong.error(), "invalid_code");
        assert_eq!(wrong.workflow(), ENROL);
        // Not a code at all.
        let junk = enroll(&app, &uuid, "12ab56").await;
        assert_eq!(junk.status, StatusCode::BAD_REQUEST, "{}", junk.body);

        let done = enroll(&app, &uuid, &code).await;
        assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
        assert_eq!(done.workflow(), "Terminate");
        let tokens = crate::helpers::Tokens::of(&done);
        let claims = app.verify_access_token(&tokens.access).await;
        assert_eq!(claims.sub, user.id);
        let codes = codes_shown(&done);
        assert_eq!(codes.len(), 10);
        assert_eq!(codes.iter().collect::<BTreeSet<_>>().len(), 10);
        for c in &codes {
            let digits: String = c.chars().filter(char::is_ascii_digit).collect();
            assert_eq!((digits.len(), c.len()), (10, 11), "{c}");
        }
        // The finished wizard takes nothing more.
        let again = enroll(&app, &uuid, &code).await;
        assert_eq!(again.error(), "wizard_completed", "{}", again.body);

        // The account now has the app and backup codes: a choice, and the
        // code that confirmed the app does not sign in a second time.
        let (status, view) = app
            .admin(
                reqwest::Method::GET,
                &format!("/api/v2/admin/users/{}", user.id),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (&view["totp_enabled"], &view["backup_codes"]),
            (&json!(true), &json!(true)),
            "{view}"
        );
        let uuid = app.past_password(&user).await;
        let choose = app.choose(&uuid, "google").await;
        assert_eq!(choose.workflow(), "2fa_google_auth", "{}", choose.body);
        let replayed = app.totp(&uuid, &code).await;
        assert_eq!(replayed.error(), "invalid_code", "{}", replayed.body);
        app.advance_clock(chrono::Duration::seconds(30));
        let next = app
            .totp(&uuid, &secret.code_at(app.clock.now()).unwrap())
            .await;
        assert_eq!(next.status, StatusCode::ACCEPTED, "{}", next.body);
        assert!(
            next.body["data"].get("backupCodes").is_none(),
            "backup codes are shown once: {}",
            next.body
        );
    }
}

#[tokio::test]
async fn the_policy_makes_everyone_enrol_and_enrolment_ends_older_sessions() {
    for backend in BACKENDS {
        let app = crate::helpers::spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let with_app = app.create_user(UserSpec::totp()).await;
        let before = app.sign_in_as(&user, "old-laptop").await;

        let (status, settings) = app
            .put_settings(json!({ "second_factor_required": true }))
            .await;
        assert_eq!(status, StatusCode::OK, "{settings}");
        let uuid = app.start().await;
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        assert_eq!(reply.workflow(), ENROL, "{backend:?}: {}", reply.body);
        let secret = secret_shown(&reply);
        // An account that has a factor goes on to it.
        let other = app.past_password(&with_app).await;
        let signed_in = app.totp(&other, &app.totp_now(&with_app)).await;
        assert_eq!(signed_in.status, StatusCode::ACCEPTED, "{}", signed_in.body);

        let done = enroll(&app, &uuid, &secret.code_at(app.clock.now()).unwrap()).await;
        assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
        // A change of factor ends the sessions begun before it, not this one.
        let old = app.refresh(&before.refresh).await;
        assert_eq!(old.error(), "invalid_refresh_token", "{}", old.body);
        let new = app
            .refresh(&crate::helpers::Tokens::of(&done).refresh)
            .await;
        assert_eq!(new.status, StatusCode::OK, "{}", new.body);

        let (status, _) = app
            .put_settings(json!({ "second_factor_required": false }))
            .await;
        assert_eq!(status, StatusCode::OK);
        let plain = app.create_user(UserSpec::default()).await;
        app.sign_in_as(&plain, "no-factor-needed").await;
    }
}

#[tokio::test]
async fn a_backup_code_signs_in_once_and_says_how_many_are_left() {
    for backend in BACKENDS {
        let app = crate::helpers::spawn_app(backend).await;
        let (user, codes) = enrolled(&app).await;

        let uuid = app.past_password(&user).await;
        let offered = app.choose(&uuid, "nonsense").await;
        assert_eq!(offered.status, StatusCode::BAD_REQUEST, "{}", offered.body);
        let uuid = app.past_password(&user).await;
        let reply = app
            .post(
                "/api/v2/my/signin/2fa",
                json!({ "uuid": uuid, "type": "backup_code" }),
            )
            .await;
        assert_eq!(
            reply.workflow(),
            "2fa_backup_code",
            "{backend:?}: {}",
            reply.body
        );

        // Not ten digits: refused at the door, nothing counted.
        let junk = backup_code(&app, &uuid, "1234-5").await;
        assert_eq!(junk.status, StatusCode::BAD_REQUEST, "{}", junk.body);
        // Another account's code.
        let (_, strangers) = enrolled(&app).await;
        let foreign = backup_code(&app, &uuid, &strangers[0]).await;
        assert_eq!(foreign.error(), "invalid_code", "{}", foreign.body);
        assert_eq!(foreign.workflow(), "2fa_backup_code");

        let done = backup_code(&app, &uuid, &codes[0]).await;
        assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
        assert_eq!(done.body["data"]["backupCodesLeft"], 9);
        let claims = app
            .verify_access_token(&crate::helpers::Tokens::of(&done).access)
            .await;
        assert_eq!(claims.sub, user.id);

        // Used: never again. Typed without its dash, the next one works.
        let uuid = at_backup_code(&app, &user).await;
        let used = backup_code(&app, &uuid, &codes[0]).await;
        assert_eq!(used.status, StatusCode::UNAUTHORIZED, "{}", used.body);
        assert_eq!(used.error(), "invalid_code");
        let plain = codes[1].replace('-', "");
        let done = backup_code(&app, &uuid, &plain).await;
        assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
        assert_eq!(done.body["data"]["backupCodesLeft"], 8);
    }
}

#[tokio::test]
async fn backup_codes_are_offered_beside_the_app_only_to_accounts_that_have_them() {
    let app = crate::helpers::spawn_app(Backend::Memory).await;
    let plain = app.create_user(UserSpec::totp()).await;
    let uuid = app.start().await;
    let reply = app.signin(&uuid, &plain.email, &plain.password).await;
    assert_eq!(reply.workflow(), "2fa_google_auth", "{}", reply.body);
    let refused = app.choose(&uuid, "backup_code").await;
    assert_eq!(refused.error(), "step_not_allowed", "{}", refused.body);

    let (user, _) = enrolled(&app).await;
    let uuid = app.start().await;
    let reply = app.signin(&uuid, &user.email, &user.password).await;
    assert_eq!(reply.workflow(), "2fa", "{}", reply.body);
    assert_eq!(providers(&reply), ["google", "backup_code"]);
}

#[tokio::test]
async fn a_raced_backup_code_signs_in_once() {
    const RACERS: usize = 8;
    for backend in BACKENDS {
        let app = crate::helpers::spawn_app(backend).await;
        let (user, codes) = enrolled(&app).await;
        let mut wizards = Vec::new();
        for _ in 0..RACERS {
            wizards.push(at_backup_code(&app, &user).await);
        }
        let replies = futures::future::join_all(
            wizards
                .iter()
                .map(|uuid| backup_code(&app, uuid, &codes[3])),
        )
        .await;
        let won: Vec<_> = replies
            .iter()
            .filter(|r| r.status == StatusCode::ACCEPTED)
            .collect();
        assert_eq!(won.len(), 1, "{backend:?}");
        assert_eq!(won[0].body["data"]["backupCodesLeft"], 9);
        // The losers are wrong guesses: counted, so past the account's
        // attempts they are refused as such.
        for lost in replies.iter().filter(|r| r.status != StatusCode::ACCEPTED) {
            assert!(
                ["invalid_code", "too_many_attempts"].contains(&lost.error()),
                "{}",
                lost.body
            );
        }
    }
}

/// A used backup code still matches its digest; its claim fails, and the
/// sign-in it nearly finished must not forgive the account's failures.
#[tokio::test]
async fn a_used_backup_code_never_clears_the_lockout() {
    for backend in BACKENDS {
        let app = crate::helpers::spawn_app(backend).await;
        let (user, codes) = enrolled(&app).await;
        let uuid = at_backup_code(&app, &user).await;
        let done = backup_code(&app, &uuid, &codes[0]).await;
        assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);

        // Four failures of the five a window allows, the used code among them.
        for _ in 0..3 {
            let wrong = app.signin(&app.start().await, &user.email, "wrong").await;
            assert_eq!(wrong.error(), "invalid_credentials", "{}", wrong.body);
        }
        let uuid = at_backup_code(&app, &user).await;
        let used = backup_code(&app, &uuid, &codes[0]).await;
        assert_eq!(used.error(), "invalid_code", "{backend:?}: {}", used.body);
        // The fifth blocks; the right password is then refused too.
        let wrong = app.signin(&app.start().await, &user.email, "wrong").await;
        assert_eq!(wrong.error(), "invalid_credentials", "{}", wrong.body);
        let blocked = app
            .signin(&app.start().await, &user.email, &user.password)
            .await;
        assert_eq!(blocked.error(), "too_many_attempts", "{}", blocked.body);
    }
}
