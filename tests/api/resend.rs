//! Sending an SMS code again: cooldown, cap, and only the latest code counts.

use crate::helpers::{BACKENDS, UserSpec, spawn_app};
use chrono::Duration;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_resent_code_replaces_the_old_one_after_the_cooldown() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::sms("+15550101300")).await;
        let phone = user.phone.clone().unwrap();
        let uuid = app.past_password(&user).await;
        let first = app.sms.last_code_for(&phone).unwrap();

        let soon = app
            .post("/api/v2/my/2fa/sms/resend", json!({ "uuid": uuid }))
            .await;
        soon.assert_envelope();
        assert_eq!(
            (soon.status, soon.error()),
            (StatusCode::TOO_MANY_REQUESTS, "resend_too_soon")
        );
        assert_eq!(soon.body["data"]["error"]["retry_after"], 30);
        assert_eq!(app.sms.messages().len(), 1);

        app.advance_clock(Duration::seconds(30));
        let resent = app
            .post("/api/v2/my/2fa/sms/resend", json!({ "uuid": uuid }))
            .await;
        resent.assert_envelope();
        assert_eq!(
            (resent.status, resent.workflow()),
            (StatusCode::OK, "2fa_sms_auth"),
            "{}",
            resent.body
        );
        let second = app.sms.last_code_for(&phone).unwrap();
        assert_eq!(app.sms.messages().len(), 2);

        if first != second {
            let stale = app.sms_code(&uuid, &first).await;
            assert_eq!(
                stale.error(),
                "invalid_code",
                "only the latest code is valid"
            );
        }
        assert_eq!(
            app.sms_code(&uuid, &second).await.status,
            StatusCode::ACCEPTED
        );
    }
}

#[tokio::test]
async fn resends_are_capped_per_wizard() {
    let app = spawn_app(crate::helpers::Backend::Redis).await;
    let user = app.create_user(UserSpec::sms("+15550101400")).await;
    let uuid = app.past_password(&user).await;
    for _ in 0..3 {
        app.advance_clock(Duration::seconds(30));
        assert_eq!(
            app.post("/api/v2/my/2fa/sms/resend", json!({ "uuid": uuid }))
                .await
                .status,
            StatusCode::OK
        );
    }
    app.advance_clock(Duration::seconds(30));
    let capped = app
        .post("/api/v2/my/2fa/sms/resend", json!({ "uuid": uuid }))
        .await;
    assert_eq!(
        (capped.status, capped.error()),
        (StatusCode::TOO_MANY_REQUESTS, "resend_limit_reached")
    );
    assert_eq!(app.sms.messages().len(), 4);
    // The last code sent still works.
    let code = app.sms_code_of(&user);
    assert_eq!(
        app.sms_code(&uuid, &code).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn resend_belongs_to_the_sms_step_only() {
    let app = spawn_app(crate::helpers::Backend::Memory).await;
    let user = app.create_user(UserSpec::totp()).await;
    let uuid = app.start().await;
    let reply = app
        .post("/api/v2/my/2fa/sms/resend", json!({ "uuid": uuid }))
        .await;
    assert_eq!(
        (reply.status, reply.error()),
        (StatusCode::CONFLICT, "step_not_allowed")
    );
    app.signin(&uuid, &user.email, &user.password).await;
    let reply = app
        .post("/api/v2/my/2fa/sms/resend", json!({ "uuid": uuid }))
        .await;
    assert_eq!(
        (reply.error(), reply.workflow()),
        ("step_not_allowed", "2fa_google_auth")
    );
}
