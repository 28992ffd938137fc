//! Several instances sharing one Redis behave as one service.

use crate::helpers::{Backend, SHARED_STORES, TestApp, UserSpec, spawn_app, spawn_pair};
use reqwest::StatusCode;

#[tokio::test]
async fn a_wizard_started_on_one_instance_finishes_on_another() {
    for backend in SHARED_STORES {
        let (first, second) = spawn_pair(backend).await;
        one_wizard_across_two_instances(&first, &second).await;
    }
}

async fn one_wizard_across_two_instances(first: &TestApp, second: &TestApp) {
    let user = first
        .create_user(UserSpec {
            totp: true,
            phone: Some("+15550100900"),
            ..Default::default()
        })
        .await;
    let uuid = first.start().await;
    assert_eq!(
        second
            .signin(&uuid, &user.email, &user.password)
            .await
            .workflow(),
        "2fa"
    );
    assert_eq!(
        first.choose(&uuid, "google").await.workflow(),
        "2fa_google_auth"
    );
    let reply = second.totp(&uuid, &second.totp_now(&user)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);

    // Tokens minted by either instance verify against either instance's JWKS.
    let token = reply.body["data"]["accessToken"]["token"].as_str().unwrap();
    assert_eq!(first.verify_access_token(token).await.sub, user.id);
    let jwks = |app: &TestApp| {
        let url = format!("{}/.well-known/jwks.json", app.address);
        let client = app.client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(jwks(first).await, jwks(second).await);
}

#[tokio::test]
async fn separate_stores_do_not_share_wizards() {
    let first = spawn_app(Backend::Redis).await;
    let second = spawn_app(Backend::Memory).await;
    let uuid = first.start().await;
    let reply = second.choose(&uuid, "sms").await;
    assert_eq!(
        (reply.status, reply.error()),
        (StatusCode::NOT_FOUND, "wizard_not_found")
    );
}
