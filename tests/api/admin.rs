//! The admin API and the `user add` command.

use crate::helpers::{
    ADMIN_TOKEN, BACKENDS, Backend, FakeSms, read_qr, shared_redis_url, spawn_app, spawn_with,
    test_settings,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::process::Command;

#[tokio::test]
async fn admin_requires_the_bearer_token() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let url = format!("{}/api/v2/admin/users", app.address);
        let body = json!({ "email": "a@b.test", "password": "long enough" });
        let token_without_scheme = ADMIN_TOKEN.to_owned();
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer "),
            Some("Bearer"),
            Some("Basic dGVzdA=="),
            Some(token_without_scheme.as_str()),
        ] {
            let mut request = app.client.post(&url).json(&body);
            if let Some(auth) = auth {
                request = request.header("Authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{backend:?} {auth:?}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        // The scheme is case-insensitive.
        let response = app
            .client
            .get(format!("{}/api/v2/admin/settings", app.address))
            .header("Authorization", format!("bearer {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_setting_of_the_wrong_type_is_refused_like_one_out_of_range() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let (_, out_of_range) = app.put_settings(json!({ "max_attempts": 0 })).await;
        for body in [
            json!({ "max_attempts": "5" }),
            json!({ "max_attempts": 2.5 }),
            json!({ "max_attempts": -1 }),
            json!({ "max_attempts": [5] }),
        ] {
            let (status, answer) = app.put_settings(body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{backend:?} {body}: {answer}"
            );
            assert_eq!(answer, out_of_range, "{backend:?} {body}");
        }
        let (status, answer) = app
            .put_settings(json!({ "recaptcha_enabled": "yes" }))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(
            answer["error"]["message"],
            "recaptcha_enabled must be true or false"
        );
        let (_, settings) = app.admin(Method::GET, "/api/v2/admin/settings", None).await;
        assert_eq!(
            settings["max_attempts"], 5,
            "{backend:?}: nothing was changed"
        );
    }
}

#[tokio::test]
async fn admin_api_is_absent_without_a_token_on_redis() {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Redis, &sms);
    settings.admin_token = None;
    let app = spawn_with(settings, sms).await;
    let (status, body) = app
        .admin(Method::POST, "/api/v2/admin/users", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["data"]["error"]["code"], "route_not_found");
}

#[tokio::test]
async fn users_can_be_created_read_updated_and_deleted() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let email = format!("crud-{}@example.test", uuid::Uuid::new_v4().simple());
        let (status, created) = app
            .admin(Method::POST, "/api/v2/admin/users", Some(json!({ "email": email, "password": "a long password", "generate_totp": true, "phone": "+15550101000" })))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["totp_enabled"], true);
        let uri = created["otpauth_uri"].as_str().unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        // The QR code an authenticator app scans says the same URI.
        assert_eq!(read_qr(created["qr_code"].as_str().unwrap()), uri);
        assert!(created.get("password_hash").is_none() && created.get("totp_secret").is_none());
        let path = format!("/api/v2/admin/users/{}", created["id"].as_str().unwrap());

        let (status, conflict) = app
            .admin(
                Method::POST,
                "/api/v2/admin/users",
                Some(json!({ "email": email.to_uppercase(), "password": "a long password" })),
            )
            .await;
        assert_eq!(
            (status, &conflict["error"]["code"]),
            (StatusCode::CONFLICT, &json!("email_taken"))
        );

        let (status, fetched) = app.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(fetched["email"], email.as_str());
        assert!(
            fetched.get("otpauth_uri").is_none() && fetched.get("qr_code").is_none(),
            "the secret is shown only when set"
        );

        let new_email = format!("moved-{}@example.test", uuid::Uuid::new_v4().simple());
        let (status, updated) = app
            .admin(Method::PATCH, &path, Some(json!({ "email": new_email, "phone": null, "totp_secret": null, "force_password_reset": true })))
            .await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert_eq!(updated["email"], new_email.as_str());
        assert_eq!(
            (updated["phone"].clone(), updated["totp_enabled"].clone()),
            (Value::Null, json!(false))
        );
        assert_eq!(updated["force_password_reset"], true);
        // The old email is free again; the new one is taken.
        let (status, _) = app
            .admin(
                Method::POST,
                "/api/v2/admin/users",
                Some(json!({ "email": email, "password": "a long password" })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = app
            .admin(
                Method::POST,
                "/api/v2/admin/users",
                Some(json!({ "email": new_email, "password": "a long password" })),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);

        let (status, _) = app.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        for method in [Method::GET, Method::DELETE] {
            let (status, body) = app.admin(method, &path, None).await;
            assert_eq!(
                (status, &body["error"]["code"]),
                (StatusCode::NOT_FOUND, &json!("user_not_found"))
            );
        }
        let (status, _) = app
            .admin(
                Method::POST,
                "/api/v2/admin/users",
                Some(json!({ "email": new_email, "password": "a long password" })),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "a deleted user's email can be reused"
        );
    }
}

#[tokio::test]
async fn invalid_user_fields_are_422_naming_the_field() {
    let app = spawn_app(Backend::Memory).await;
    let cases = [
        (
            json!({ "email": "nope", "password": "a long password" }),
            "email",
        ),
        (
            json!({ "email": "a@b.test", "password": "short" }),
            "password",
        ),
        // NIST SP 800-63B: a common password is refused whatever its length.
        (
            json!({ "email": "a@b.test", "password": "password123" }),
            "password",
        ),
        (
            json!({ "email": "a@b.test", "password": "qwertyuiop" }),
            "password",
        ),
        (
            json!({ "email": "a@b.test", "password": "a long password", "phone": "555" }),
            "phone",
        ),
        (
            json!({ "email": "a@b.test", "password": "a long password", "totp_secret": "JBSWY3DPEHPK3PXP" }),
            "totp_secret",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app
            .admin(Method::POST, "/api/v2/admin/users", Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_field");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    let (status, answer) = app
        .admin(
            Method::POST,
            "/api/v2/admin/users",
            Some(json!({ "email": "a@b.test" })),
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_request"))
    );
    let (status, _) = app
        .admin(Method::GET, "/api/v2/admin/users/not-a-uuid", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn user_add(envs: &[(&str, String)], email: &str) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signin-wizard"));
    command
        .args([
            "user",
            "add",
            "--email",
            email,
            "--password",
            "cli password",
            "--totp",
        ])
        .env_remove("WIZARD_REDIS_URL")
        .env_remove("WIZARD_ADMIN_TOKEN")
        .env("WIZARD_ARGON2_MEMORY_KIB", "64")
        .env("WIZARD_ARGON2_ITERATIONS", "1");
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn user_add_writes_to_redis_directly() {
    let app = spawn_app(Backend::Redis).await;
    let email = format!("cli-{}@example.test", uuid::Uuid::new_v4().simple());
    let envs = [
        ("WIZARD_REDIS_URL", shared_redis_url()),
        ("WIZARD_REDIS_PREFIX", app.settings.redis_prefix.clone()),
    ];
    let created = tokio::task::spawn_blocking(move || user_add(&envs, &email))
        .await
        .unwrap();
    assert!(created["otpauth_uri"].is_string());
    let (status, fetched) = app
        .admin(
            Method::GET,
            &format!("/api/v2/admin/users/{}", created["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["totp_enabled"], true);
    let uuid = app.start().await;
    assert_eq!(
        app.signin(&uuid, fetched["email"].as_str().unwrap(), "cli password")
            .await
            .workflow(),
        "2fa_google_auth"
    );
}

#[tokio::test]
async fn user_add_goes_through_a_running_embedded_server() {
    let app = spawn_app(Backend::Memory).await;
    let email = format!("cli-{}@example.test", uuid::Uuid::new_v4().simple());
    let envs = [("WIZARD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned())];
    let server = app.address.clone();
    let created = tokio::task::spawn_blocking(move || {
        let mut envs = envs.to_vec();
        envs.push((
            "WIZARD_BIND",
            server.trim_start_matches("http://").to_owned(),
        ));
        user_add(&envs, &email)
    })
    .await
    .unwrap();
    assert!(created["otpauth_uri"].is_string());
    let uuid = app.start().await;
    assert_eq!(
        app.signin(&uuid, created["email"].as_str().unwrap(), "cli password")
            .await
            .workflow(),
        "2fa_google_auth"
    );
}

#[tokio::test]
async fn concurrent_changes_to_one_user_never_lose_one() {
    for backend in BACKENDS {
        let app = crate::helpers::slow_hashing_app(backend).await;
        let user = app.create_user(crate::helpers::UserSpec::default()).await;
        let path = format!("/api/v2/admin/users/{}", user.id);
        // The password change hashes for about a second; the phone change lands meanwhile.
        let ((password, answer), (phone, _)) = tokio::join!(
            app.admin(
                Method::PATCH,
                &path,
                Some(json!({ "password": "a brand new password" }))
            ),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                app.admin(
                    Method::PATCH,
                    &path,
                    Some(json!({ "phone": "+15550101234" })),
                )
                .await
            }
        );
        assert_eq!(phone, StatusCode::OK);
        assert_eq!(
            (password, &answer["error"]["code"]),
            (StatusCode::CONFLICT, &json!("concurrent_request")),
            "{backend:?}: {answer}"
        );
        let (_, stored) = app.admin(Method::GET, &path, None).await;
        assert_eq!(stored["phone"], "+15550101234", "{backend:?}");
        let uuid = app.start().await;
        assert_eq!(
            app.signin(&uuid, &user.email, &user.password)
                .await
                .workflow(),
            "2fa_sms_auth",
            "{backend:?}: the old password still works"
        );
    }
}

#[tokio::test]
async fn a_password_set_with_one_accent_encoding_signs_in_with_the_other() {
    let app = spawn_app(Backend::Memory).await;
    let email = format!("u-{}@example.test", uuid::Uuid::new_v4().simple());
    let (status, _) = app
        .admin(
            Method::POST,
            "/api/v2/admin/users",
            Some(json!({ "email": email, "password": "cafe\u{301} cre\u{300}me tous les jours" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let uuid = app.start().await;
    let reply = app
        .signin(&uuid, &email, "caf\u{e9} cr\u{e8}me tous les jours")
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
}
