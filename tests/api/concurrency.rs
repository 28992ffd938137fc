//! Racing submissions on one wizard: the compare-and-set lets exactly one through.

use crate::helpers::{BACKENDS, UserSpec, spawn_app};
use reqwest::StatusCode;

const RACERS: usize = 20;

#[tokio::test]
async fn concurrent_final_submissions_mint_exactly_one_token_pair() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app
            .create_user(UserSpec {
                totp: true,
                ..Default::default()
            })
            .await;
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
        let user = app
            .create_user(UserSpec {
                phone: Some("+15550100800"),
                ..Default::default()
            })
            .await;
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
