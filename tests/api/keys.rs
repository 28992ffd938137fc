//! Signing keys: rotation without breaking live tokens, every instance
//! following it, the keyring sealed with the operator's KEK, and the
//! keyring of the layout before rotation carried over.

use crate::helpers::{
    Backend, FakeSms, SHARED_STORES, TestApp, UserSpec, shared_redis_url, spawn_pair, spawn_with,
    test_settings,
};
use crate::tokens::verify_with_ring;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use signin_wizard::clock::Clock;
use signin_wizard::config::Settings;
use signin_wizard::credentials::{Signer, SigningAlgorithm};
use signin_wizard::signing_keys::SigningKeys;
use signin_wizard::startup::Application;

async fn jwks(app: &TestApp) -> Value {
    app.get("/.well-known/jwks.json").await.body
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn rotate(app: &TestApp, body: Option<Value>) -> (StatusCode, Value) {
    app.admin(Method::POST, "/api/v2/admin/keys/rotate", body)
        .await
}

#[tokio::test]
async fn a_rotated_in_key_is_published_first_and_the_old_one_verifies_until_its_tokens_expired() {
    for backend in [Backend::Memory, Backend::Redis, Backend::Cluster] {
        let app = crate::helpers::spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let old = app.sign_in_as(&user, "test-agent/1.0").await;
        let old_kid = kid_of(&old.access);
        assert_eq!(kids(&jwks(&app).await), std::slice::from_ref(&old_kid));

        let (status, body) = rotate(&app, Some(json!({ "algorithm": "ES256" }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let keys = body["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2, "{body}");
        assert_eq!(
            (&keys[0]["kid"], &keys[0]["signing"]),
            (&json!(old_kid), &json!(true))
        );
        assert_eq!(
            (&keys[1]["algorithm"], &keys[1]["signing"]),
            (&json!("ES256"), &json!(false))
        );
        let new_kid = keys[1]["kid"].as_str().unwrap().to_owned();
        assert!(body.to_string().find("PRIVATE").is_none());

        // Published at once; tokens are still signed with the old key for five minutes.
        assert_eq!(kids(&jwks(&app).await), [old_kid.clone(), new_kid.clone()]);
        let still_old = app.sign_in_as(&user, "test-agent/1.0").await;
        assert_eq!(kid_of(&still_old.access), old_kid);
        app.advance_clock(Duration::minutes(5));
        let new = app.sign_in_as(&user, "test-agent/1.0").await;
        assert_eq!(kid_of(&new.access), new_kid, "{backend:?}");
        verify_with_ring(&new.access, &jwks(&app).await);
        app.verify_access_token(&new.access).await;

        // A token of the old key keeps working until it expires; refresh moves it to the new key.
        let me = app.get_with_bearer("/api/v2/my/me", &old.access).await;
        assert_eq!(me.status, StatusCode::OK, "{}", me.body);
        let refreshed = app.refresh(&old.refresh).await;
        assert_eq!(
            kid_of(
                refreshed.body["data"]["accessToken"]["token"]
                    .as_str()
                    .unwrap()
            ),
            new_kid
        );

        // The old key leaves once the longest token it signed has expired (15 min + 30 s leeway).
        app.advance_clock(Duration::minutes(15));
        assert_eq!(kids(&jwks(&app).await).len(), 2);
        app.advance_clock(Duration::seconds(30));
        assert_eq!(kids(&jwks(&app).await), std::slice::from_ref(&new_kid));
        let (_, listed) = app.admin(Method::GET, "/api/v2/admin/keys", None).await;
        assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "{listed}");

        for bad in [json!({ "algorithm": "HS256" }), json!({ "alg": "ES256" })] {
            let (status, body) = rotate(&app, Some(bad)).await;
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
                "{status} {body}"
            );
        }
    }
}

#[tokio::test]
async fn every_instance_follows_a_rotation_within_seconds() {
    for backend in SHARED_STORES {
        let (first, second) = spawn_pair(backend).await;
        let (status, _) = rotate(&first, Some(json!({ "algorithm": "EdDSA" }))).await;
        assert_eq!(status, StatusCode::OK);
        let expected = kids(&jwks(&first).await);
        assert_eq!(expected.len(), 2);
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen = kids(&jwks(&second).await);
            if seen == expected {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(
            seen, expected,
            "{backend:?}: the other instance reloaded the keyring"
        );
    }
}

/// The keyring record as Redis holds it, for a prefix.
async fn stored_keyring(prefix: &str) -> String {
    let client = redis::Client::open(shared_redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(format!("{prefix}{{keyring}}k"))
        .query_async(&mut conn)
        .await
        .unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

fn kek(byte: u8) -> secrecy::SecretString {
    STANDARD.encode([byte; 32]).into()
}

async fn build(settings: &Settings) -> anyhow::Result<Application> {
    Application::build(settings.clone()).await
}

#[tokio::test]
async fn with_a_kek_the_keyring_is_sealed_in_redis_and_only_that_kek_opens_it() {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Redis, &sms);
    settings.kek = Some(kek(1));
    let app = spawn_with(settings.clone(), sms.clone()).await;
    let stored = stored_keyring(&settings.redis_prefix).await;
    assert!(stored.contains("sealed"), "{stored}");
    assert!(!stored.contains("PRIVATE KEY") && !stored.contains("code_pepper"));
    let published = kids(&jwks(&app).await);

    // The same KEK opens it (the same keys); another, or none, does not start.
    let again = spawn_with(settings.clone(), sms.clone()).await;
    assert_eq!(kids(&jwks(&again).await), published);
    settings.kek = Some(kek(2));
    let error = build(&settings)
        .await
        .err()
        .expect("another KEK cannot open it")
        .to_string();
    assert!(error.contains("does not open"), "{error}");
    settings.kek = None;
    let error = build(&settings)
        .await
        .err()
        .expect("no KEK cannot open it")
        .to_string();
    assert!(error.contains("WIZARD_KEK"), "{error}");
    // A KEK that is not 32 bytes of base64 is refused at start, without repeating it.
    settings.kek = Some("not-a-key-at-all".to_owned().into());
    let error = build(&settings).await.err().unwrap().to_string();
    assert!(
        error.contains("32 bytes") && !error.contains("not-a-key-at-all"),
        "{error}"
    );
}

#[tokio::test]
async fn keys_carry_over_from_the_old_layout_and_an_operator_seals_them_when_a_kek_comes() {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Redis, &sms);
    // The layout before rotation: one RSA key and the pepper, in clear at `{keyring}`.
    let pem = Signer::generate(SigningAlgorithm::RS256).unwrap();
    let old_kid = Signer::from_pem(SigningAlgorithm::RS256, &pem)
        .unwrap()
        .kid()
        .to_owned();
    let old = json!({
        "signing_key_pem": secrecy::ExposeSecret::expose_secret(&pem),
        "code_pepper": STANDARD.encode([5u8; 32]),
    });
    let client = redis::Client::open(shared_redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{}{{keyring}}", settings.redis_prefix))
        .arg(old.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();

    let app = spawn_with(settings.clone(), sms.clone()).await;
    assert_eq!(
        kids(&jwks(&app).await),
        std::slice::from_ref(&old_kid),
        "the old key carried over"
    );
    assert!(
        stored_keyring(&settings.redis_prefix)
            .await
            .contains("PRIVATE KEY")
    );

    // A KEK does not take a keyring found in clear on its own (anyone who
    // can write the store could have put it there): an operator seals it.
    settings.kek = Some(kek(3));
    let error = build(&settings).await.err().expect("refused").to_string();
    assert!(error.contains("keys seal"), "{error}");
    let keys = SigningKeys::new(
        signin_wizard::startup::open_store(&settings).await.unwrap(),
        settings.kek().unwrap(),
        settings.jwt_algorithm,
        None,
        Clock::default(),
    );
    assert!(keys.seal_stored().await.unwrap());
    assert!(!keys.seal_stored().await.unwrap(), "once");
    let sealed = spawn_with(settings.clone(), sms).await;
    let stored = stored_keyring(&settings.redis_prefix).await;
    assert!(
        stored.contains("sealed") && !stored.contains("PRIVATE KEY"),
        "{stored}"
    );
    // The old layout's copy, in clear, is gone with it.
    let old_copy: Option<String> = redis::cmd("GET")
        .arg(format!("{}{{keyring}}", settings.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(old_copy, None);
    assert_eq!(kids(&jwks(&sealed).await), [old_kid]);
    let user = sealed.create_user(UserSpec::default()).await;
    sealed.sign_in_as(&user, "test-agent/1.0").await;
}

#[tokio::test]
async fn an_operators_key_file_pins_the_key_and_rotation_says_so() {
    let path = std::env::temp_dir().join(format!("signin-wizard-key-{}.pem", uuid::Uuid::new_v4()));
    let pem = Signer::generate(SigningAlgorithm::RS256).unwrap();
    std::fs::write(&path, secrecy::ExposeSecret::expose_secret(&pem)).unwrap();
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Memory, &sms);
    settings.jwt_private_key_file = Some(path);
    let app = spawn_with(settings.clone(), sms).await;
    let _ = std::fs::remove_file(settings.jwt_private_key_file.as_ref().unwrap());
    let kid = Signer::from_pem(SigningAlgorithm::RS256, &pem)
        .unwrap()
        .kid()
        .to_owned();
    assert_eq!(kids(&jwks(&app).await), [kid]);
    let (status, body) = rotate(&app, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("keys_pinned"))
    );
}

/// Everything Redis holds under `prefix`, as text: strings, hash fields and
/// sorted-set members.
async fn everything_stored(prefix: &str) -> String {
    let client = redis::Client::open(shared_redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut all = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
            ],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            other => panic!("{key}: a {other} this test cannot read"),
        };
        for value in values {
            all += &String::from_utf8_lossy(&value);
            all.push('\n');
        }
    }
    all
}

#[tokio::test]
async fn with_a_kek_totp_secrets_are_sealed_in_redis_and_still_check_codes() {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Redis, &sms);
    settings.kek = Some(kek(4));
    let app = spawn_with(settings.clone(), sms).await;
    let created = app.create_user(UserSpec::totp()).await;
    let secret = created.totp.as_ref().unwrap().expose_base32().to_owned();
    // An operator's change sets another secret: sealed too.
    let changed = signin_wizard::credentials::TotpSecret::generate();
    let (status, view) = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/api/v2/admin/users/{}", created.id),
            Some(serde_json::json!({ "totp_secret": changed.expose_base32() })),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{view}");
    assert!(
        view["otpauth_uri"]
            .as_str()
            .unwrap()
            .contains(changed.expose_base32())
    );
    let stored = everything_stored(&settings.redis_prefix).await;
    for clear in [secret.as_str(), changed.expose_base32()] {
        assert!(!stored.contains(clear), "a TOTP secret in clear in Redis");
    }
    assert!(stored.contains("ciphertext"), "{stored}");
    // The sealed secret still checks codes.
    let user = crate::helpers::TestUser {
        totp: Some(changed),
        ..created
    };
    let uuid = app.past_password(&user).await;
    let reply = app.totp(&uuid, &app.totp_now(&user)).await;
    assert_eq!(
        reply.status,
        reqwest::StatusCode::ACCEPTED,
        "{}",
        reply.body
    );
}
