//! What a step costs in store round trips (the instance counts its own, on
//! `GET /api/v2/admin/store`), with the per-IP limit on: on a single Redis every step is
//! at most two; a Cluster pays for its slots with more, in the order that
//! keeps cross-slot steps safe.

use crate::helpers::{Backend, FakeSms, TestApp, Tokens, UserSpec, spawn_with, test_settings};
use reqwest::{Method, StatusCode};

async fn round_trips(app: &TestApp) -> u64 {
    let (status, stats) = app.admin(Method::GET, "/api/v2/admin/store", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    stats["round_trips"].as_u64().unwrap()
}

/// Round trips `step` made (asking costs none: the admin API's own limit is off in tests).
async fn cost<T>(app: &TestApp, step: impl AsyncFnOnce() -> T) -> (T, u64) {
    let before = round_trips(app).await;
    let out = step().await;
    (out, round_trips(app).await - before)
}

#[tokio::test]
async fn each_step_and_refresh_cost_two_round_trips_on_redis_and_what_it_says_on_a_cluster() {
    // start, password, choose a factor, TOTP code; then a refresh and /me
    for (backend, expected) in [
        (Backend::Redis, [1, 2, 2, 2, 2, 1]),
        (Backend::Cluster, [1, 3, 4, 6, 3, 2]),
    ] {
        let sms = FakeSms::spawn().await;
        let mut settings = test_settings(backend, &sms);
        settings.ip_limit_per_minute = 1000;
        let app = spawn_with(settings, sms).await;
        let user = app
            .create_user(UserSpec {
                totp: true,
                phone: Some("+15550100444"),
                ..Default::default()
            })
            .await;

        let (uuid, start) = cost(&app, async || app.start().await).await;
        let (reply, login) = cost(&app, async || {
            app.signin(&uuid, &user.email, &user.password).await
        })
        .await;
        assert_eq!(reply.workflow(), "2fa", "{}", reply.body);
        let (reply, choose) = cost(&app, async || app.choose(&uuid, "google").await).await;
        assert_eq!(reply.workflow(), "2fa_google_auth", "{}", reply.body);
        let (reply, code) = cost(&app, async || app.totp(&uuid, &app.totp_now(&user)).await).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        let tokens = Tokens::of(&reply);
        let (reply, refresh) = cost(&app, async || app.refresh(&tokens.refresh).await).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let tokens = Tokens::of(&reply);
        let (reply, me) = cost(&app, async || {
            app.get_with_bearer("/api/v2/my/me", &tokens.access).await
        })
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            [start, login, choose, code, refresh, me],
            expected,
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn a_password_restore_and_reset_cost_what_they_say() {
    // Restore from the login screen: load, save, the address's allowance (on
    // a Cluster too: no read-back of the account there). Reset: load (two on
    // a Cluster), save, the password's compare-and-set on the user read with
    // the wizard, the sessions to end.
    for (backend, expected) in [(Backend::Redis, [3, 4]), (Backend::Cluster, [3, 6])] {
        let sms = FakeSms::spawn().await;
        let mut settings = test_settings(backend, &sms);
        settings.ip_limit_per_minute = 1000;
        let app = spawn_with(settings, sms).await;
        let user = app.create_user(UserSpec::default()).await;
        let uuid = app.start().await;
        let (reply, restore) =
            cost(&app, async || app.restore(&uuid, Some(&user.email)).await).await;
        assert_eq!(reply.workflow(), "reset_password_code", "{}", reply.body);
        let code = app.email_code_to(&user.email);
        let password = "a long and fresh passphrase 9";
        let (reply, reset) = cost(&app, async || app.reset(&uuid, &code, password).await).await;
        assert_eq!(reply.workflow(), "login", "{}", reply.body);
        assert_eq!([restore, reset], expected, "{backend:?}");
    }
}

#[tokio::test]
async fn enrolment_and_a_backup_code_cost_what_they_say() {
    // Enrolment's code: load, the TOTP step's claim with the account's new
    // factor and the save with the session, the sessions begun before to
    // end. A backup code: load, its claim in the stages of the save, then
    // the account's failures forgiven (only once the claim held). A
    // Cluster pays for its slots.
    for (backend, expected) in [(Backend::Redis, [2, 3, 3]), (Backend::Cluster, [3, 7, 7])] {
        let sms = FakeSms::spawn().await;
        let mut settings = test_settings(backend, &sms);
        settings.ip_limit_per_minute = 1000;
        let app = spawn_with(settings, sms).await;
        let user = app
            .create_user(UserSpec {
                second_factor_required: true,
                ..Default::default()
            })
            .await;
        let uuid = app.start().await;
        let (reply, login) = cost(&app, async || {
            app.signin(&uuid, &user.email, &user.password).await
        })
        .await;
        assert_eq!(reply.workflow(), "2fa_google_auth_enroll", "{}", reply.body);
        let secret = signin_wizard::credentials::TotpSecret::parse(
            reply.body["data"]["secret"].as_str().unwrap(),
        )
        .unwrap();
        let code = secret.code_at(app.clock.now()).unwrap();
        let body = serde_json::json!({ "uuid": uuid, "code": code });
        let (reply, enrol) = cost(&app, async || {
            app.post("/api/v2/my/2fa/google/enroll", body).await
        })
        .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        let backup = reply.body["data"]["backupCodes"][0]
            .as_str()
            .unwrap()
            .to_owned();

        let uuid = app.past_password(&user).await;
        app.choose(&uuid, "backup_code").await;
        let body = serde_json::json!({ "uuid": uuid, "code": backup });
        let (reply, used) = cost(&app, async || {
            app.post("/api/v2/my/2fa/backup_code", body).await
        })
        .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        assert_eq!([login, enrol, used], expected, "{backend:?}");
    }
}
