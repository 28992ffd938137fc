//! Client mistakes: each gets a 4xx envelope with a stable code, and the
//! wizard stays where it was.

use crate::helpers::{BACKENDS, Backend, UserSpec, fingerprint, other_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let first = app.start().await;
        let wrong_password = app.signin(&first, &user.email, "not-the-password").await;
        let second = app.start().await;
        let unknown_email = app
            .signin(&second, "nobody@example.test", &user.password)
            .await;
        for reply in [&wrong_password, &unknown_email] {
            reply.assert_envelope();
            assert_eq!(
                (reply.status, reply.error()),
                (StatusCode::UNAUTHORIZED, "invalid_credentials")
            );
            assert_eq!(reply.workflow(), "login");
        }
        let strip = |mut body: Value| {
            body["uuid"] = Value::Null;
            body["meta"] = Value::Null;
            body
        };
        assert_eq!(strip(wrong_password.body), strip(unknown_email.body));
        // The failed attempt left the wizard at `login`: the right password still works.
        let retry = app.signin(&first, &user.email, &user.password).await;
        assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.body);
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_ones_413() {
    let app = spawn_app(Backend::Memory).await;
    for (body, needle) in [
        ("{not json", "JSON"),
        ("[1,2,3]", "JSON object"),
        ("", "JSON"),
        (r#"{"email":"a@b.c"}"#, "uuid"),
        (r#"{"uuid":42}"#, "uuid"),
        (r#"{"uuid":"not-a-uuid"}"#, "uuid"),
    ] {
        let reply = app.post_raw("/api/v2/my/signin", body).await;
        reply.assert_envelope();
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
        assert!(
            reply.body["data"]["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{}",
            reply.body
        );
        assert_eq!(reply.body["uuid"], Value::Null);
        assert_eq!(reply.workflow(), "login");
    }
    let huge = json!({ "uuid": app.start().await, "email": "x".repeat(20_000) }).to_string();
    let reply = app.post_raw("/api/v2/my/signin", huge).await;
    reply.assert_envelope();
    assert_eq!(
        (reply.status, reply.error()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
}

#[tokio::test]
async fn missing_or_invalid_fields_name_the_wizard_and_its_step() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let uuid = app.start().await;
        let fp = fingerprint("agent");
        let cases = [
            (
                json!({ "uuid": uuid, "password": "pw", "device_fingerprint": fp }),
                "invalid_request",
                "email",
            ),
            (
                json!({ "uuid": uuid, "email": "a@b.c", "device_fingerprint": fp }),
                "invalid_request",
                "password",
            ),
            (
                json!({ "uuid": uuid, "email": "a@b.c", "password": "pw" }),
                "invalid_request",
                "device_fingerprint",
            ),
            (
                json!({ "uuid": uuid, "email": "not-an-email", "password": "pw", "device_fingerprint": fp }),
                "invalid_request",
                "email",
            ),
            (
                json!({ "uuid": uuid, "email": "a@b.c", "password": "", "device_fingerprint": fp }),
                "invalid_request",
                "password",
            ),
            (
                json!({ "uuid": uuid, "email": "a@b.c", "password": 7, "device_fingerprint": fp }),
                "invalid_request",
                "string",
            ),
            (
                json!({ "uuid": uuid, "email": "a@b.c", "password": "pw", "device_fingerprint": "%%%" }),
                "invalid_device_fingerprint",
                "base64",
            ),
            (
                json!({ "uuid": uuid, "email": "a@b.c", "password": "pw", "device_fingerprint": "e30=" }),
                "invalid_device_fingerprint",
                "user_agent",
            ),
        ];
        for (body, code, needle) in cases {
            let reply = app.post("/api/v2/my/signin", body.clone()).await;
            reply.assert_envelope();
            assert_eq!(
                (reply.status, reply.error()),
                (StatusCode::BAD_REQUEST, code),
                "{body}"
            );
            let message = reply.body["data"]["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle}"
            );
            assert_eq!(reply.body["uuid"], uuid.as_str());
            assert_eq!(reply.workflow(), "login");
            assert!(reply.body["meta"]["expiresAt"].is_string());
        }
        for (path, body) in [
            (
                "/api/v2/my/signin/2fa",
                json!({ "uuid": uuid, "type": "email" }),
            ),
            ("/api/v2/my/signin/2fa", json!({ "uuid": uuid })),
            (
                "/api/v2/my/2fa/google",
                json!({ "uuid": uuid, "code": "12345" }),
            ),
            (
                "/api/v2/my/2fa/google",
                json!({ "uuid": uuid, "code": "abcdef" }),
            ),
            ("/api/v2/my/2fa/sms", json!({ "uuid": uuid })),
        ] {
            let reply = app.post(path, body.clone()).await;
            assert_eq!(
                (reply.status, reply.error()),
                (StatusCode::BAD_REQUEST, "invalid_request"),
                "{path} {body}"
            );
            assert_eq!(reply.workflow(), "login");
        }
    }
}

#[tokio::test]
async fn unknown_wizards_are_404_and_unknown_routes_too() {
    let app = spawn_app(Backend::Redis).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for path in [
        "/api/v2/my/signin/2fa",
        "/api/v2/my/2fa/google",
        "/api/v2/my/2fa/sms",
    ] {
        let reply = app
            .post(
                path,
                json!({ "uuid": unknown, "type": "sms", "code": "123456" }),
            )
            .await;
        reply.assert_envelope();
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::NOT_FOUND, "wizard_not_found"),
            "{path}"
        );
        assert_eq!(reply.body["uuid"], unknown.as_str());
        assert_eq!(reply.workflow(), "login");
    }
    let reply = app.signin(&unknown, "a@b.c", "pw").await;
    assert_eq!(reply.error(), "wizard_not_found");
    for reply in [
        app.get("/api/v2/my/nothing").await,
        app.get("/api/v2/my/signin").await,
    ] {
        reply.assert_envelope();
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::NOT_FOUND, "route_not_found")
        );
    }
}

#[tokio::test]
async fn steps_out_of_order_are_refused_and_change_nothing() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app
            .create_user(UserSpec {
                totp: true,
                phone: Some("+15550100500"),
                ..Default::default()
            })
            .await;
        let uuid = app.start().await;
        for reply in [
            app.totp(&uuid, "123456").await,
            app.sms_code(&uuid, "123456").await,
            app.choose(&uuid, "google").await,
        ] {
            reply.assert_envelope();
            assert_eq!(
                (reply.status, reply.error()),
                (StatusCode::CONFLICT, "step_not_allowed")
            );
            assert_eq!(reply.workflow(), "login");
        }
        assert_eq!(
            app.signin(&uuid, &user.email, &user.password)
                .await
                .workflow(),
            "2fa"
        );
        let reply = app.totp(&uuid, &app.totp_now(&user)).await;
        assert_eq!(
            (reply.error(), reply.workflow()),
            ("step_not_allowed", "2fa")
        );
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        assert_eq!(
            (reply.error(), reply.workflow()),
            ("step_not_allowed", "2fa")
        );
        assert_eq!(
            app.choose(&uuid, "google").await.workflow(),
            "2fa_google_auth"
        );
        let reply = app.sms_code(&uuid, "123456").await;
        assert_eq!(
            (reply.error(), reply.workflow()),
            ("step_not_allowed", "2fa_google_auth")
        );
        assert!(app.sms.messages().is_empty());
        assert_eq!(
            app.totp(&uuid, &app.totp_now(&user)).await.status,
            StatusCode::ACCEPTED
        );
    }
}

#[tokio::test]
async fn a_wrong_code_can_be_retried() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let totp_user = app.create_user(UserSpec::totp()).await;
        let uuid = app.start().await;
        app.signin(&uuid, &totp_user.email, &totp_user.password)
            .await;
        let right = app.totp_now(&totp_user);
        let wrong = other_code(&right);
        let reply = app.totp(&uuid, &wrong).await;
        reply.assert_envelope();
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::UNAUTHORIZED, "invalid_code")
        );
        assert_eq!(reply.workflow(), "2fa_google_auth");
        assert_eq!(app.totp(&uuid, &right).await.status, StatusCode::ACCEPTED);

        let sms_user = app.create_user(UserSpec::sms("+15550100600")).await;
        let uuid = app.past_password(&sms_user).await;
        let right = app.sms_code_of(&sms_user);
        let wrong = other_code(&right);
        let reply = app.sms_code(&uuid, &wrong).await;
        assert_eq!(
            (reply.status, reply.error(), reply.workflow()),
            (StatusCode::UNAUTHORIZED, "invalid_code", "2fa_sms_auth")
        );
        assert_eq!(
            app.sms_code(&uuid, &right).await.status,
            StatusCode::ACCEPTED
        );
    }
}

#[tokio::test]
async fn a_failed_sms_delivery_is_reported_and_the_step_can_be_retried() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::sms("+15550100700")).await;
        let uuid = app.start().await;
        app.sms.set_failing(true);
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        reply.assert_envelope();
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::BAD_GATEWAY, "sms_delivery_failed")
        );
        assert_eq!(reply.workflow(), "login", "the wizard was put back");
        app.sms.set_failing(false);
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        assert_eq!(reply.workflow(), "2fa_sms_auth", "{}", reply.body);
        let code = app.sms_code_of(&user);
        assert_eq!(
            app.sms_code(&uuid, &code).await.status,
            StatusCode::ACCEPTED
        );
    }
}

#[tokio::test]
async fn later_steps_from_another_device_are_refused() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::totp()).await;
        let uuid = app.start().await;
        app.signin(&uuid, &user.email, &user.password).await; // as "test-agent/1.0"
        let code = app.totp_now(&user);
        let other = fingerprint("someone-else/2.0");

        let in_body = app
            .post(
                "/api/v2/my/2fa/google",
                json!({ "uuid": uuid, "code": code, "device_fingerprint": other }),
            )
            .await;
        in_body.assert_envelope();
        assert_eq!(
            (in_body.status, in_body.error()),
            (StatusCode::FORBIDDEN, "device_mismatch")
        );
        let in_header = app
            .client
            .post(format!("{}/api/v2/my/2fa/google", app.address))
            .header("X-Device-Fingerprint", &other)
            .json(&json!({ "uuid": uuid, "code": code }))
            .send()
            .await
            .unwrap();
        assert_eq!(in_header.status(), StatusCode::FORBIDDEN);
        let malformed = app
            .post(
                "/api/v2/my/2fa/google",
                json!({ "uuid": uuid, "code": code, "device_fingerprint": "%%" }),
            )
            .await;
        assert_eq!(malformed.error(), "invalid_device_fingerprint");

        // The same device (however padded) or none at all is fine.
        let same = fingerprint("test-agent/1.0")
            .trim_end_matches('=')
            .to_owned();
        let reply = app
            .post(
                "/api/v2/my/2fa/google",
                json!({ "uuid": uuid, "code": code, "device_fingerprint": same }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    }
}

#[tokio::test]
async fn a_rolled_back_login_judges_the_next_email_afresh() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let sms_user = app.create_user(UserSpec::sms("+15550101500")).await;
        let plain_user = app.create_user(UserSpec::default()).await;
        let uuid = app.start().await;
        app.sms.set_failing(true);
        assert_eq!(
            app.signin(&uuid, &sms_user.email, &sms_user.password)
                .await
                .error(),
            "sms_delivery_failed"
        );
        app.sms.set_failing(false);
        // Back at `login`, the wizard is bound to nobody: another account may sign in with it.
        let reply = app
            .signin(&uuid, &plain_user.email, &plain_user.password)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "{backend:?}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn a_refused_value_is_never_repeated_in_the_answer() {
    const SECRET: &str = "hunter2-never-echoed";
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let uuid = app.start().await;
        let fp = fingerprint("agent");
        let cases = [
            (
                "/api/v2/my/signin",
                json!({ "uuid": uuid, "email": "a@b.c", "password": 12345678, "device_fingerprint": fp }),
                "password",
            ),
            (
                "/api/v2/my/signin",
                json!({ "uuid": uuid, "email": "a@b.c", "password": [SECRET], "device_fingerprint": fp }),
                "password",
            ),
            (
                "/api/v2/my/signin",
                json!({ "uuid": uuid, "email": { "x": SECRET }, "password": "pw", "device_fingerprint": fp }),
                "email",
            ),
            (
                "/api/v2/my/2fa/google",
                json!({ "uuid": uuid, "code": 12345678 }),
                "code",
            ),
            (
                "/api/v2/my/signin/2fa",
                json!({ "uuid": uuid, "type": SECRET }),
                "type",
            ),
            (
                "/api/v2/my/2fa/sms",
                json!({ "uuid": uuid, "code": "123456", "device_fingerprint": 12345678 }),
                "device_fingerprint",
            ),
        ];
        for (path, body, field) in cases {
            let reply = app.post(path, body.clone()).await;
            reply.assert_envelope();
            assert_eq!(
                (reply.status, reply.error()),
                (StatusCode::BAD_REQUEST, "invalid_request"),
                "{body}"
            );
            let text = reply.body.to_string();
            assert!(text.contains(&format!("`{field}`")), "{text}");
            assert!(
                !text.contains(SECRET) && !text.contains("12345678"),
                "{text}"
            );
        }
        let reply = app
            .post_raw("/api/v2/my/signin", format!("\"{SECRET}\""))
            .await;
        assert_eq!(reply.error(), "invalid_request");
        assert!(!reply.body.to_string().contains(SECRET), "{}", reply.body);

        let (status, answer) = app
            .admin(
                reqwest::Method::POST,
                "/api/v2/admin/users",
                Some(json!({ "email": "a@b.test", "password": 12345678 })),
            )
            .await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_field")),
            "{answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("`password`") && !message.contains("12345678"),
            "{message}"
        );
    }
}

/// A device header that is not text is unusable, not absent: 400, and the
/// wizard stays at its step.
#[tokio::test]
async fn a_device_header_that_is_not_text_is_refused() {
    let app = spawn_app(Backend::Memory).await;
    let user = app.create_user(UserSpec::totp()).await;
    let uuid = app.past_password(&user).await;
    let response = app
        .client
        .post(format!("{}/api/v2/my/2fa/google", app.address))
        .header(
            "X-Device-Fingerprint",
            reqwest::header::HeaderValue::from_bytes(b"eyJ1c2VyX2FnZW50Ijoi\xff\xfe").unwrap(),
        )
        .json(&json!({ "uuid": uuid, "code": app.totp_now(&user) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["error"]["code"], "invalid_device_fingerprint");
    assert_eq!(body["workflow"], "2fa_google_auth");
}
