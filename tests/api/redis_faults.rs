//! Redis going away: 503 envelopes, no token, and recovery without a restart.

use crate::helpers::{Backend, FakeSms, RedisServer, UserSpec, spawn_with, test_settings};
use reqwest::StatusCode;

#[tokio::test]
async fn redis_down_mid_flow_answers_503_and_recovers_when_it_returns() {
    let mut redis = RedisServer::spawn();
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Redis, &sms);
    settings.redis_url = Some(redis.url().parse().unwrap());
    settings.redis_timeout_ms = 300;
    let app = spawn_with(settings, sms).await;

    let user = app.create_user(UserSpec::totp()).await;
    let uuid = app.start().await;
    assert_eq!(
        app.signin(&uuid, &user.email, &user.password)
            .await
            .workflow(),
        "2fa_google_auth"
    );

    redis.kill();
    let code = app.totp_now(&user);
    for reply in [
        app.totp(&uuid, &code).await,
        app.get("/api/v2/my/signin/wizard").await,
    ] {
        reply.assert_envelope();
        assert_eq!(
            (reply.status, reply.error()),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
        assert!(
            reply.body["data"].get("accessToken").is_none(),
            "no token without the store"
        );
    }
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Same port, empty data: the service reconnects by itself.
    let _redis = RedisServer::spawn_on(redis.port);
    let mut recovered = false;
    for _ in 0..50 {
        let reply = app.get("/api/v2/my/signin/wizard").await;
        if reply.status == StatusCode::OK {
            recovered = true;
            break;
        }
        assert_eq!(reply.error(), "store_unavailable");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "the service serves again once Redis is back");
    // The old wizard died with Redis's memory; a new sign-in works end to end.
    let reply = app.totp(&uuid, &code).await;
    assert_eq!(reply.error(), "wizard_not_found");
    let user = app.create_user(UserSpec::default()).await;
    let uuid = app.start().await;
    assert_eq!(
        app.signin(&uuid, &user.email, &user.password).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn a_stalled_redis_answers_503_within_the_timeout_and_issues_no_token() {
    let redis = RedisServer::spawn();
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Redis, &sms);
    settings.redis_url = Some(redis.url().parse().unwrap());
    settings.redis_timeout_ms = 300;
    let app = spawn_with(settings, sms).await;
    let user = app.create_user(UserSpec::totp()).await;
    let uuid = app.past_password(&user).await;
    let code = app.totp_now(&user);

    redis.signal("-STOP");
    let started = std::time::Instant::now();
    let reply = app.totp(&uuid, &code).await;
    let waited = started.elapsed();
    redis.signal("-CONT");
    reply.assert_envelope();
    assert_eq!(
        (reply.status, reply.error()),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
    );
    assert!(reply.body["data"].get("accessToken").is_none());
    println!("stalled Redis: 503 after {waited:?} (timeout 300 ms per command)");

    // Thawed: the same wizard completes, once.
    let mut finished = None;
    for _ in 0..50 {
        let reply = app.totp(&uuid, &code).await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            finished = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let reply = finished.expect("the service recovers when Redis thaws");
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
}

/// A record the service cannot read is its own fault: 500 internal_error,
/// as an envelope naming the wizard, and no token.
#[tokio::test]
async fn a_corrupt_wizard_record_answers_500_internal_error() {
    let sms = FakeSms::spawn().await;
    let settings = test_settings(Backend::Redis, &sms);
    let prefix = settings.redis_prefix.clone();
    let redis_url = settings.redis_url.clone().unwrap();
    let app = spawn_with(settings, sms).await;
    let user = app.create_user(UserSpec::default()).await;
    let uuid = app.start().await;

    let client = redis::Client::open(redis_url.expose().as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}{{w:{uuid}}}"))
        .arg("not a wizard record")
        .query_async(&mut redis)
        .await
        .unwrap();

    let reply = app.signin(&uuid, &user.email, &user.password).await;
    reply.assert_envelope();
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.error(), "internal_error");
    assert_eq!(reply.body["uuid"], uuid.as_str());
    assert!(reply.body["data"]["accessToken"].is_null());
}
