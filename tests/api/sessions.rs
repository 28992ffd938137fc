//! Sessions after `Terminate`: the user's own view, refresh with rotation
//! and reuse detection, sign-out, and the admin's hand on them; on every store.

use crate::helpers::{
    BACKENDS, Backend, Reply, SHARED_STORES, TestApp, Tokens, UserSpec, spawn_app, spawn_pair,
    spawn_with, test_settings,
};
use chrono::{DateTime, Duration};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const CHROME_ON_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const SAFARI_ON_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1";

fn assert_signed_in_envelope(reply: &Reply) {
    reply.assert_envelope();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["done"], true);
    assert_eq!(reply.body["uuid"], Value::Null);
    assert_eq!(reply.workflow(), "Terminate");
}

fn assert_refused(reply: &Reply, status: StatusCode, code: &str) {
    reply.assert_envelope();
    assert_eq!(
        (reply.status, reply.error()),
        (status, code),
        "{}",
        reply.body
    );
    assert_eq!(reply.body["done"], false);
    assert_eq!(reply.workflow(), "login");
}

/// The session of `tokens` ended: neither token works any more.
async fn assert_ended(app: &TestApp, tokens: &Tokens) {
    assert_refused(
        &me(app, tokens).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_refused(
        &app.refresh(&tokens.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    );
}

async fn me(app: &TestApp, tokens: &Tokens) -> Reply {
    app.get_with_bearer("/api/v2/my/me", &tokens.access).await
}

async fn sessions(app: &TestApp, tokens: &Tokens) -> Vec<Value> {
    let reply = app
        .get_with_bearer("/api/v2/my/sessions", &tokens.access)
        .await;
    assert_signed_in_envelope(&reply);
    reply.body["data"]["sessions"].as_array().unwrap().clone()
}

async fn end(app: &TestApp, tokens: &Tokens, id: &str) -> Reply {
    let path = format!("/api/v2/my/sessions/{id}");
    app.with_bearer(Method::DELETE, &path, &tokens.access, None)
        .await
}

fn session_id(app_tokens: &Tokens) -> String {
    let payload = app_tokens.access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_sign_in_opens_a_session_its_user_sees_with_its_device_and_can_end() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let laptop = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        app.advance_clock(Duration::seconds(1));
        let phone = app.sign_in_as(&user, SAFARI_ON_IPHONE).await;

        let reply = me(&app, &laptop).await;
        assert_signed_in_envelope(&reply);
        let data = &reply.body["data"];
        assert_eq!(data["id"], user.id.as_str());
        assert_eq!(data["email"].as_str().unwrap(), user.email.to_lowercase());
        assert_eq!(data["tfaProviders"], json!([]));
        assert_eq!(data["session"]["id"], session_id(&laptop).as_str());
        assert_eq!(data["session"]["current"], true);

        let listed = sessions(&app, &laptop).await;
        assert_eq!(listed.len(), 2, "{backend:?}: {listed:?}");
        // Newest first; the caller's own is marked.
        assert_eq!(listed[0]["id"], session_id(&phone).as_str());
        assert_eq!(listed[0]["current"], false);
        assert_eq!(listed[1]["current"], true);
        assert_eq!(
            listed[1]["device"],
            json!({ "browser": "Chrome", "browserVersion": "120.0.0.0", "os": "Windows", "osVersion": "10", "type": "desktop" })
        );
        assert_eq!(listed[0]["device"]["os"], "iOS");
        assert_eq!(listed[0]["device"]["type"], "mobile");
        assert_eq!(listed[1]["ip"], "127.0.0.1");
        let at =
            |field: &str| DateTime::parse_from_rfc3339(listed[1][field].as_str().unwrap()).unwrap();
        assert_eq!(at("expiresAt") - at("createdAt"), Duration::days(30));
        assert_eq!(at("lastActiveAt"), at("createdAt"));

        // The laptop ends the phone's session: its tokens stop working at once.
        let reply = end(&app, &laptop, &session_id(&phone)).await;
        assert_signed_in_envelope(&reply);
        assert_eq!(reply.body["data"]["revoked"], 1);
        assert_ended(&app, &phone).await;
        assert_eq!(sessions(&app, &laptop).await.len(), 1);
        // Gone, malformed, or nobody's: not found, the same way.
        for id in [
            session_id(&phone).as_str(),
            "not-a-uuid",
            &uuid::Uuid::new_v4().to_string(),
        ] {
            assert_refused(
                &end(&app, &laptop, id).await,
                StatusCode::NOT_FOUND,
                "session_not_found",
            );
        }
        assert_signed_in_envelope(&me(&app, &laptop).await);
    }
}

#[tokio::test]
async fn another_users_token_cannot_see_or_end_my_sessions() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let (mine, theirs) = (
            app.create_user(UserSpec::default()).await,
            app.create_user(UserSpec::default()).await,
        );
        let me_ = app.sign_in_as(&mine, CHROME_ON_WINDOWS).await;
        let them = app.sign_in_as(&theirs, CHROME_ON_WINDOWS).await;
        assert_refused(
            &end(&app, &them, &session_id(&me_)).await,
            StatusCode::NOT_FOUND,
            "session_not_found",
        );
        let listed = sessions(&app, &them).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["id"], session_id(&them).as_str());
        assert_signed_in_envelope(&me(&app, &me_).await);
    }
}

#[tokio::test]
async fn refresh_replaces_both_tokens_and_a_replaced_refresh_token_ends_the_session() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let first = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        app.advance_clock(Duration::minutes(20));
        // The access token expired (15 minutes and the leeway); the session did not.
        assert_refused(
            &me(&app, &first).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );

        let reply = app.refresh(&first.refresh).await;
        assert_signed_in_envelope(&reply);
        let second = Tokens::of(&reply);
        assert_ne!(second.refresh, first.refresh);
        assert_eq!(second.refresh.len(), 112);
        let claims = app.verify_access_token(&second.access).await;
        assert_eq!(claims.sub, user.id);
        assert_eq!(
            claims.sid,
            session_id(&first),
            "{backend:?}: the same session"
        );
        let lifetime = |name: &str| {
            let token = &reply.body["data"][name];
            let at = |f: &str| DateTime::parse_from_rfc3339(token[f].as_str().unwrap()).unwrap();
            at("expiresAt") - at("createdAt")
        };
        assert_eq!(lifetime("accessToken"), Duration::minutes(15));
        assert_eq!(lifetime("refreshToken"), Duration::minutes(60));
        let listed = sessions(&app, &second).await;
        let at = |f: &str| DateTime::parse_from_rfc3339(listed[0][f].as_str().unwrap()).unwrap();
        assert_eq!(at("lastActiveAt") - at("createdAt"), Duration::minutes(20));

        // The token just replaced, again within seconds: a lost race, the session lives.
        assert_refused(
            &app.refresh(&first.refresh).await,
            StatusCode::CONFLICT,
            "concurrent_request",
        );
        assert_signed_in_envelope(&me(&app, &second).await);

        // Later, it is a reuse: the whole session ends, the newest tokens too.
        app.advance_clock(Duration::seconds(11));
        assert_refused(
            &app.refresh(&first.refresh).await,
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
        );
        assert_ended(&app, &second).await;
    }
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_have_exactly_one_winner_whose_chain_lives_on() {
    for backend in SHARED_STORES {
        let (first, second) = spawn_pair(backend).await;
        let user = first.create_user(UserSpec::default()).await;
        let tokens = first.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        let replies = futures::future::join_all((0..16).map(|i| {
            let app = if i % 2 == 0 { &first } else { &second };
            app.refresh(&tokens.refresh)
        }))
        .await;
        let answers: Vec<_> = replies
            .iter()
            .map(|r| (r.status, r.error().to_owned()))
            .collect();
        let winners: Vec<&Reply> = replies
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .collect();
        assert_eq!(winners.len(), 1, "{backend:?}: {answers:?}");
        assert!(
            replies.iter().all(|r| r.status == StatusCode::OK
                || (r.status, r.error()) == (StatusCode::CONFLICT, "concurrent_request")),
            "{backend:?}: {answers:?}"
        );
        // The winner's chain goes on; the session was never ended.
        let won = Tokens::of(winners[0]);
        assert_signed_in_envelope(&me(&second, &won).await);
        let next = first.refresh(&won.refresh).await;
        assert_signed_in_envelope(&next);
        assert_signed_in_envelope(&me(&first, &Tokens::of(&next)).await);
    }
}

#[tokio::test]
async fn refresh_sees_the_account_as_it_is_now() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        // Any change an admin makes ends the account's sessions.
        for change in [
            json!({ "password": "a whole new password" }),
            json!({ "force_password_reset": true }),
            json!({ "phone": "+15550111" }),
        ] {
            let user = app.create_user(UserSpec::default()).await;
            let tokens = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
            assert_eq!(app.patch_user(&user, change.clone()).await, StatusCode::OK);
            assert_refused(
                &app.refresh(&tokens.refresh).await,
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
            );
            assert_refused(
                &me(&app, &tokens).await,
                StatusCode::UNAUTHORIZED,
                "invalid_token",
            );
        }
        let user = app.create_user(UserSpec::default()).await;
        let tokens = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        assert_eq!(app.delete_user(&user).await, StatusCode::NO_CONTENT);
        assert_refused(
            &app.refresh(&tokens.refresh).await,
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
        );

        // A locked account cannot refresh, but keeps its session for when it is unlocked.
        let user = app.create_user(UserSpec::default()).await;
        let tokens = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        let uuid = app.start().await;
        for _ in 0..5 {
            app.signin(&uuid, &user.email, "wrong").await;
        }
        let blocked = app.refresh(&tokens.refresh).await;
        assert_refused(&blocked, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
        assert!(
            blocked.body["data"]["error"]["retry_after"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert_eq!(app.unlock(&user).await, StatusCode::NO_CONTENT);
        assert_signed_in_envelope(&app.refresh(&tokens.refresh).await);
    }
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_end() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let tokens = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        // Not refreshed within the refresh token's life (an hour): ended.
        app.advance_clock(Duration::minutes(60));
        assert_refused(
            &app.refresh(&tokens.refresh).await,
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
        );

        // Refreshed often, a session still ends at its absolute end (2 hours here).
        let sms = crate::helpers::FakeSms::spawn().await;
        let mut settings = test_settings(backend, &sms);
        settings.session_lifetime_secs = 2 * 3600;
        let app = spawn_with(settings, sms).await;
        let user = app.create_user(UserSpec::default()).await;
        let mut tokens = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        let mut last_expiry = None;
        for _ in 0..2 {
            app.advance_clock(Duration::minutes(50));
            let reply = app.refresh(&tokens.refresh).await;
            assert_signed_in_envelope(&reply);
            last_expiry = reply.body["data"]["refreshToken"]["expiresAt"]
                .as_str()
                .map(str::to_owned);
            tokens = Tokens::of(&reply);
        }
        // At 100 minutes the refresh token ends with the session, at 120.
        let created = DateTime::parse_from_rfc3339(
            sessions(&app, &tokens).await[0]["createdAt"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let expiry = DateTime::parse_from_rfc3339(&last_expiry.unwrap()).unwrap();
        assert_eq!(expiry - created, Duration::hours(2), "{backend:?}");
        app.advance_clock(Duration::minutes(20));
        assert_ended(&app, &tokens).await;
    }
}

#[tokio::test]
async fn sign_out_and_revoke_all() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let [a, b, c, d] = [
            app.sign_in_as(&user, CHROME_ON_WINDOWS).await,
            app.sign_in_as(&user, SAFARI_ON_IPHONE).await,
            app.sign_in_as(&user, CHROME_ON_WINDOWS).await,
            app.sign_in_as(&user, SAFARI_ON_IPHONE).await,
        ];
        let reply = app
            .with_bearer(Method::POST, "/api/v2/my/signout", &a.access, None)
            .await;
        assert_signed_in_envelope(&reply);
        assert_eq!(reply.body["data"]["revoked"], 1);
        assert_ended(&app, &a).await;

        // All but the current one...
        let reply = app
            .with_bearer(
                Method::POST,
                "/api/v2/my/sessions/revoke-all",
                &b.access,
                Some(json!({ "keepCurrent": true })),
            )
            .await;
        assert_signed_in_envelope(&reply);
        assert_eq!(reply.body["data"]["revoked"], 2, "{backend:?}");
        assert_refused(
            &me(&app, &c).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
        assert_refused(
            &me(&app, &d).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
        assert_eq!(sessions(&app, &b).await.len(), 1);
        // ...then all of them, with no body at all.
        let reply = app
            .with_bearer(
                Method::POST,
                "/api/v2/my/sessions/revoke-all",
                &b.access,
                None,
            )
            .await;
        assert_eq!(reply.body["data"]["revoked"], 1, "{}", reply.body);
        assert_refused(
            &me(&app, &b).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
        let e = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        for body in [json!({ "keepCurrent": "yes" }), json!({ "keep": true })] {
            let reply = app
                .with_bearer(
                    Method::POST,
                    "/api/v2/my/sessions/revoke-all",
                    &e.access,
                    Some(body),
                )
                .await;
            assert_refused(&reply, StatusCode::BAD_REQUEST, "invalid_request");
        }
        assert_signed_in_envelope(&me(&app, &e).await);
    }
}

#[tokio::test]
async fn only_a_valid_bearer_access_token_in_the_header_is_accepted() {
    let app = spawn_app(Backend::Memory).await;
    let user = app.create_user(UserSpec::default()).await;
    let tokens = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", app.address);

    // No token, a token in the query (the Bezala seed's way), another scheme.
    let attempts = [
        client.get(url("/api/v2/my/me")),
        client.get(url(&format!("/api/v2/my/me?token={}", tokens.access))),
        client
            .get(url("/api/v2/my/me"))
            .header("Authorization", format!("Token {}", tokens.access)),
        client.get(url("/api/v2/my/me")).bearer_auth(""),
        // The refresh token is no access token, and a changed access token is none either.
        client
            .get(url("/api/v2/my/me"))
            .bearer_auth(&tokens.refresh),
        client
            .get(url("/api/v2/my/me"))
            .bearer_auth(format!("{}x", tokens.access)),
    ];
    for request in attempts {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["WWW-Authenticate"],
            r#"Bearer error="invalid_token""#
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["error"]["code"], "invalid_token");
    }
    // The scheme's case does not matter.
    let reply = client
        .get(url("/api/v2/my/me"))
        .header("Authorization", format!("bEaReR {}", tokens.access))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);

    // Refresh takes a refresh token, in a well-formed body, and nothing else.
    assert_refused(
        &app.refresh(&tokens.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    );
    let forged = format!("{}A", &tokens.refresh[..111]);
    assert_refused(
        &app.refresh(&forged).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    );
    for body in [
        json!({}),
        json!({ "refreshToken": 7 }),
        json!({ "refreshToken": tokens.refresh, "extra": 1 }),
        json!([tokens.refresh]),
    ] {
        let reply = app.post("/api/v2/my/refresh", body).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    }
    // A forged token ended nothing: the real one still works.
    assert_signed_in_envelope(&app.refresh(&tokens.refresh).await);
}

#[tokio::test]
async fn an_admin_lists_and_ends_a_users_sessions() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let a = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        let b = app.sign_in_as(&user, SAFARI_ON_IPHONE).await;
        let path = format!("/api/v2/admin/users/{}/sessions", user.id);
        let (status, listed) = app.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK);
        let listed = listed["sessions"].as_array().unwrap().clone();
        assert_eq!(listed.len(), 2);
        assert!(
            listed.iter().all(|s| s.get("current").is_none()),
            "{listed:?}"
        );

        let one = format!("{path}/{}", session_id(&a));
        assert_eq!(
            app.admin(Method::DELETE, &one, None).await.0,
            StatusCode::NO_CONTENT
        );
        let (status, body) = app.admin(Method::DELETE, &one, None).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::NOT_FOUND, &json!("session_not_found"))
        );
        assert_refused(
            &me(&app, &a).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
        assert_signed_in_envelope(&me(&app, &b).await);

        let (status, body) = app.admin(Method::DELETE, &path, None).await;
        assert_eq!((status, &body["revoked"]), (StatusCode::OK, &json!(1)));
        assert_refused(
            &me(&app, &b).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
        let nobody = format!("/api/v2/admin/users/{}/sessions", uuid::Uuid::new_v4());
        assert_eq!(
            app.admin(Method::GET, &nobody, None).await.0,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn a_user_keeps_at_most_a_hundred_sessions_and_the_least_recently_used_ends_first() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let oldest = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        app.advance_clock(Duration::seconds(1));
        let second = app.sign_in_as(&user, CHROME_ON_WINDOWS).await;
        app.advance_clock(Duration::seconds(1));
        // Refreshing the oldest makes the second the least recently used.
        let oldest = Tokens::of(&app.refresh(&oldest.refresh).await);
        let mut newest = None;
        for _ in 0..98 {
            newest = Some(app.sign_in_as(&user, SAFARI_ON_IPHONE).await);
        }
        let newest = newest.unwrap();
        assert_eq!(sessions(&app, &newest).await.len(), 100, "{backend:?}");
        // The 101st pushes out the least recently used, which ends at once.
        app.sign_in_as(&user, SAFARI_ON_IPHONE).await;
        assert_eq!(sessions(&app, &newest).await.len(), 100, "{backend:?}");
        assert_ended(&app, &second).await;
        assert_signed_in_envelope(&me(&app, &oldest).await);
    }
}
