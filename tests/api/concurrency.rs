//! Racing submissions on one wizard: the compare-and-set lets exactly one through.

use crate::helpers::{BACKENDS, UserSpec, spawn_app};
use reqwest::StatusCode;

const RACERS: usize = 20;

#[tokio::test]
async fn concurrent_final_submissions_mint_exactly_one_token_pair() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::totp()).await;
        let uuid = app.start().await;
        assert_eq!(
            app.signin(&uuid, &user.email, &user.password)
                .await
                .workflow(),
            "2fa_google_auth"
        );
        let code = app.totp_now(&user);
        let replies = futures::future::join_all((0..RACERS).map(|_| app.totp(&uuid, &code))).await;

        let winners: Vec<_> = replies
            .iter()
            .filter(|r| r.status == StatusCode::ACCEPTED)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "{backend:?}: exactly one 202 among {RACERS}"
        );
        assert!(winners[0].body["data"]["accessToken"]["token"].is_string());
        for loser in replies.iter().filter(|r| r.status != StatusCode::ACCEPTED) {
            loser.assert_envelope();
            // Completed, beaten to the compare-and-set, or past the caps on codes.
            let expected = [
                "wizard_completed",
                "concurrent_request",
                "wizard_closed",
                "too_many_attempts",
            ];
            assert!(expected.contains(&loser.error()), "{}", loser.body);
            assert!(loser.body["data"].get("accessToken").is_none());
        }
        println!("{backend:?}: {RACERS} concurrent final submissions -> 1 token pair");
    }
}

#[tokio::test]
async fn concurrent_password_submissions_move_the_wizard_once() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::sms("+15550100800")).await;
        let uuid = app.start().await;
        let replies = futures::future::join_all(
            (0..RACERS).map(|_| app.signin(&uuid, &user.email, &user.password)),
        )
        .await;
        let moved = replies
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        assert_eq!(moved, 1, "{backend:?}: one submission moves the wizard");
        assert_eq!(
            app.sms.messages().len(),
            1,
            "{backend:?}: and only one SMS is sent"
        );
    }
}

#[tokio::test]
async fn a_full_password_queue_sheds_load_with_503_overloaded() {
    let sms = crate::helpers::FakeSms::spawn().await;
    let mut settings = crate::helpers::test_settings(crate::helpers::Backend::Memory, &sms);
    // Slow hashes, one worker, one waiting slot: the rest must be turned away at once.
    settings.argon2_memory_kib = 32_768;
    settings.argon2_iterations = 3;
    settings.hash_workers = Some(1);
    settings.hash_queue = 1;
    let app = crate::helpers::spawn_with(settings, sms).await;
    let mut uuids = Vec::new();
    for _ in 0..12 {
        uuids.push(app.start().await);
    }
    let emails: Vec<String> = (0..uuids.len())
        .map(|n| format!("nobody-{n}@example.test"))
        .collect();
    let replies = futures::future::join_all(
        uuids
            .iter()
            .zip(&emails)
            .map(|(uuid, email)| app.signin(uuid, email, "pw")),
    )
    .await;
    let shed = replies.iter().filter(|r| r.error() == "overloaded").count();
    let checked = replies
        .iter()
        .filter(|r| r.error() == "invalid_credentials")
        .count();
    println!(
        "12 concurrent password checks, 1 worker + 1 queue slot: {checked} checked, {shed} shed with 503"
    );
    assert!(shed >= 1, "some requests are shed");
    assert!(checked >= 2);
    for reply in replies.iter().filter(|r| r.error() == "overloaded") {
        reply.assert_envelope();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.workflow(), "login", "the wizard stays where it was");
    }
}
