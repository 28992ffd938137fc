//! The per-IP limit on /api/v2/my/*.

use crate::helpers::{
    ADMIN_TOKEN, BACKENDS, Backend, FakeSms, SHARED_STORES, UserSpec, spawn_with, test_settings,
};
use reqwest::StatusCode;
use serde_json::Value;

async fn app_with_limit(per_minute: u32, trust_localhost: bool) -> crate::helpers::TestApp {
    app_on(Backend::Redis, per_minute, trust_localhost).await
}

async fn app_on(
    backend: Backend,
    per_minute: u32,
    trust_localhost: bool,
) -> crate::helpers::TestApp {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(backend, &sms);
    settings.ip_limit_per_minute = per_minute;
    if trust_localhost {
        settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    }
    spawn_with(settings, sms).await
}

/// Starts a wizard through our proxy (127.0.0.1), with this X-Forwarded-For line.
async fn start_forwarded(app: &crate::helpers::TestApp, forwarded: impl AsRef<[u8]>) -> StatusCode {
    let line = reqwest::header::HeaderValue::from_bytes(forwarded.as_ref()).unwrap();
    app.client
        .get(format!("{}/api/v2/my/signin/wizard", app.address))
        .header("X-Forwarded-For", line)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn one_ip_spraying_many_accounts_is_stopped_while_others_sign_in() {
    let app = app_with_limit(120, true).await;
    let victim = app.create_user(UserSpec::default()).await;
    let attacker = app.reached_from("203.0.113.7");
    let user = app.reached_from("198.51.100.2");

    let mut passed = 0;
    let mut limited = 0;
    for n in 0..200 {
        let uuid = match attacker.get("/api/v2/my/signin/wizard").await {
            reply if reply.status == StatusCode::OK => {
                passed += 1;
                reply.body["uuid"].as_str().unwrap().to_owned()
            }
            reply => {
                reply.assert_envelope();
                assert_eq!(reply.error(), "rate_limited");
                assert!(reply.body["data"]["error"]["retry_after"].as_u64().unwrap() >= 1);
                limited += 1;
                continue;
            }
        };
        let reply = attacker
            .signin(&uuid, &format!("account-{n}@example.test"), "guess")
            .await;
        if reply.error() == "rate_limited" {
            limited += 1;
        } else {
            passed += 1;
        }
    }
    println!("one IP, 200 accounts sprayed: {passed} requests served, {limited} refused with 429");
    assert!(
        passed <= 125,
        "at most a minute's allowance (plus refills) gets through: {passed}"
    );
    assert!(limited >= 130, "the rest is refused: {limited}");

    // Another address is untouched, and so is the victim's account.
    let uuid = user.start().await;
    let reply = user.signin(&uuid, &victim.email, &victim.password).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
}

#[tokio::test]
async fn every_answer_carries_the_rate_limit_headers() {
    let app = app_with_limit(3, false).await;
    let url = format!("{}/api/v2/my/signin/wizard", app.address);
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let response = app.client.get(&url).send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert!(headers.contains_key("x-ratelimit-reset"));
        remaining.push(
            headers["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(headers.contains_key("retry-after"));
        }
    }
    assert_eq!(remaining, ["2", "1", "0", "0"]);
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    let app = app_with_limit(2, false).await;
    for (n, ip) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].into_iter().enumerate() {
        let reply = app.reached_from(ip).get("/api/v2/my/signin/wizard").await;
        let expected = if n < 2 {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(
            reply.status, expected,
            "a spoofed X-Forwarded-For must not buy a fresh allowance"
        );
    }
}

#[tokio::test]
async fn the_limit_can_be_changed_and_switched_off_at_run_time() {
    let app = app_with_limit(1, false).await;
    assert_eq!(
        app.get("/api/v2/my/signin/wizard").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/v2/my/signin/wizard").await.error(),
        "rate_limited"
    );
    let (status, _) = app
        .put_settings(serde_json::json!({ "ip_limit_per_minute": 0 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(
            app.get("/api/v2/my/signin/wizard").await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_forged_forwarded_for_line_before_the_proxys_own_is_not_believed() {
    let app = app_with_limit(2, true).await;
    let mut statuses = Vec::new();
    for forged in ["1.1.1.1", "2.2.2.2", "3.3.3.3"] {
        // The client forged the first line; the trusted proxy appended the real address.
        let response = app
            .client
            .get(format!("{}/api/v2/my/signin/wizard", app.address))
            .header("X-Forwarded-For", forged)
            .header("X-Forwarded-For", "198.51.100.9")
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn a_client_cannot_choose_its_address_past_a_proxy_that_writes_ports_or_junk() {
    for backend in BACKENDS {
        // What the proxy appends for the same real client, request after request.
        for appended in [
            "198.51.100.9:40123",
            "[2001:db8::9]:443",
            "[2001:db8::9]",
            "unknown",
        ] {
            let app = app_on(backend, 2, true).await;
            let mut statuses = Vec::new();
            for forged in ["1.1.1.1", "2.2.2.2", "3.3.3.3"] {
                statuses.push(start_forwarded(&app, format!("{forged}, {appended}")).await);
            }
            assert_eq!(
                statuses,
                [
                    StatusCode::OK,
                    StatusCode::OK,
                    StatusCode::TOO_MANY_REQUESTS
                ],
                "{backend:?}, proxy appends {appended:?}"
            );
        }
        // Bytes that are not text in front of the proxy's entry: only that entry is junk.
        let app = app_on(backend, 2, true).await;
        for _ in 0..2 {
            assert_eq!(start_forwarded(&app, "198.51.100.4").await, StatusCode::OK);
        }
        assert_eq!(
            start_forwarded(&app, b"\xc3\xa9, 198.51.100.4").await,
            StatusCode::TOO_MANY_REQUESTS,
            "{backend:?}: no fresh allowance from junk"
        );
        assert_eq!(
            start_forwarded(&app, b"\xff, 198.51.100.5").await,
            StatusCode::OK,
            "{backend:?}: another client, counted as itself"
        );
    }
}

#[tokio::test]
async fn ipv6_clients_share_an_allowance_per_slash_64() {
    for backend in BACKENDS {
        let app = app_on(backend, 2, true).await;
        let mut statuses = Vec::new();
        for client in [
            "2001:db8:1:2::1",
            "2001:db8:1:2::2",
            "2001:db8:1:2:ffff::3",
            "2001:db8:1:3::1",
        ] {
            statuses.push(start_forwarded(&app, client).await);
        }
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::OK
            ],
            "{backend:?}: the fourth is another /64"
        );
    }
}

#[tokio::test]
async fn the_admin_api_has_a_limit_of_its_own_per_client_ip() {
    for backend in BACKENDS {
        let sms = FakeSms::spawn().await;
        let mut settings = test_settings(backend, &sms);
        settings.admin_ip_limit_per_minute = 3;
        settings.ip_limit_per_minute = 3;
        settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        let app = spawn_with(settings, sms).await;
        let url = format!("{}/api/v2/admin/settings", app.address);
        let guess = |token: &str, from: &str| {
            app.client
                .get(&url)
                .bearer_auth(token)
                .header("X-Forwarded-For", from)
                .send()
        };
        for n in 0..3 {
            let response = guess(&format!("guess-{n}"), "203.0.113.7").await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(response.headers()["x-ratelimit-limit"], "3");
        }
        // Past the limit even the right token waits: guessing is slowed, not just counted.
        let response = guess(ADMIN_TOKEN, "203.0.113.7").await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{backend:?}"
        );
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        assert!(body["error"]["retry_after"].as_u64().unwrap() >= 1);
        // Another address, and the wizard's own limit, are untouched.
        let response = guess(ADMIN_TOKEN, "198.51.100.2").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(start_forwarded(&app, "203.0.113.7").await, StatusCode::OK);
    }
}

/// Instances sharing a store share each address's allowance: together they
/// allow the configured rate, not one allowance each.
#[tokio::test]
async fn the_limit_holds_in_total_across_instances() {
    for backend in SHARED_STORES {
        let sms = FakeSms::spawn().await;
        let mut settings = test_settings(backend, &sms);
        settings.ip_limit_per_minute = 10;
        settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        let first = spawn_with(settings.clone(), sms.clone()).await;
        let second = spawn_with(settings, sms).await;
        let (first, second) = (
            first.reached_from("203.0.113.9"),
            second.reached_from("203.0.113.9"),
        );
        let mut allowed = 0;
        let mut remaining_seen = Vec::new();
        for n in 0..20 {
            let via = if n % 2 == 0 { &first } else { &second };
            let url = format!("{}/api/v2/my/signin/wizard", via.address);
            let response = via.client.get(url).send().await.unwrap();
            match response.status() {
                StatusCode::OK => allowed += 1,
                status => assert_eq!(status, StatusCode::TOO_MANY_REQUESTS),
            }
            remaining_seen.push(
                response.headers()["x-ratelimit-remaining"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        // The burst is a minute's worth (10); at most one more trickles in meanwhile.
        assert!(
            (10..=11).contains(&allowed),
            "{backend:?}: {allowed} allowed"
        );
        assert_eq!(remaining_seen[0], "9", "{backend:?}");
        assert_eq!(remaining_seen[1], "8", "{backend:?}: shared, not 9 again");
    }
}

/// The address's allowance is checked in the step's own first round trip,
/// which also takes the account's attempt: a refused request gives it back.
#[tokio::test]
async fn a_request_over_the_limit_costs_the_account_no_attempt() {
    for backend in BACKENDS {
        let app = app_on(backend, 2, true).await;
        let user = app.create_user(UserSpec::default()).await;
        let limited = app.reached_from("203.0.113.20");
        let uuid = limited.start().await;
        let reply = limited.signin(&uuid, &user.email, "wrong").await;
        assert_eq!(reply.error(), "invalid_credentials", "{backend:?}");
        let reply = limited.signin(&uuid, &user.email, "wrong").await;
        assert_eq!(reply.error(), "rate_limited", "{backend:?}: {}", reply.body);

        // One attempt of five used: four more wrong passwords are still
        // checked (each from its own address, within its allowance of two).
        for n in 1..=5 {
            let other = app.reached_from(&format!("198.51.100.{n}"));
            let uuid = other.start().await;
            let reply = other.signin(&uuid, &user.email, "wrong").await;
            let expected = if n < 5 {
                "invalid_credentials"
            } else {
                "too_many_attempts"
            };
            assert_eq!(reply.error(), expected, "{backend:?} {n}");
        }
    }
}

/// A request that never reaches the store (a malformed body) still counts.
#[tokio::test]
async fn malformed_requests_draw_on_the_allowance_too() {
    for backend in BACKENDS {
        let app = app_on(backend, 2, true).await;
        let client = app.reached_from("203.0.113.21");
        for _ in 0..2 {
            let reply = client.post_raw("/api/v2/my/signin", "{not json").await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{backend:?}");
        }
        let reply = client.get("/api/v2/my/signin/wizard").await;
        assert_eq!(reply.error(), "rate_limited", "{backend:?}: {}", reply.body);
    }
}
