//! Guessing: per-account lockout, the per-wizard cap on codes, one-time
//! TOTP codes and the settings API. Time moves by the test clock, never by sleeping.

use crate::helpers::{
    BACKENDS, Backend, Reply, SHARED_STORES, TestApp, UserSpec, other_code, shared_redis_url,
    slow_hashing_app, spawn_app, spawn_pair,
};
use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Five wrong passwords (the default `max_attempts`), each answered plainly;
/// the account is blocked after them.
async fn use_up_attempts(app: &TestApp, uuid: &str, email: &str) {
    for _ in 0..5 {
        assert_eq!(
            app.signin(uuid, email, "wrong").await.error(),
            "invalid_credentials"
        );
    }
}

fn assert_blocked(reply: &Reply) -> u64 {
    reply.assert_envelope();
    assert_eq!(
        (reply.status, reply.error()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
        "{}",
        reply.body
    );
    let retry_after = reply.body["data"]["error"]["retry_after"]
        .as_u64()
        .expect("retry_after in seconds");
    assert!(retry_after > 0);
    retry_after
}

#[tokio::test]
async fn concurrent_wrong_passwords_run_no_more_checks_than_the_limit() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let mut uuids = Vec::new();
        for _ in 0..50 {
            uuids.push(app.start().await);
        }
        let replies = futures::future::join_all(
            uuids
                .iter()
                .map(|uuid| app.signin(uuid, &user.email, "wrong password")),
        )
        .await;
        let checked = replies
            .iter()
            .filter(|r| r.error() == "invalid_credentials")
            .count();
        let refused = replies
            .iter()
            .filter(|r| r.error() == "too_many_attempts")
            .count();
        println!(
            "{backend:?}: 50 concurrent wrong passwords -> {checked} checked (argon2), {refused} refused unchecked"
        );
        assert_eq!(
            checked, 5,
            "{backend:?}: exactly max_attempts verifications"
        );
        assert_eq!(refused, 45);
        // Blocked now: the right password gets the same answer as a wrong one.
        let uuid = app.start().await;
        let right = app.signin(&uuid, &user.email, &user.password).await;
        let wrong = app.signin(&uuid, &user.email, "still wrong").await;
        assert_blocked(&right);
        assert_blocked(&wrong);
        assert_eq!(right.body["data"], wrong.body["data"]);
        assert_eq!(right.workflow(), "login", "the wizard stays where it was");
    }
}

#[tokio::test]
async fn a_block_lasts_its_time_and_attempts_while_blocked_do_not_extend_it() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let uuid = app.start().await;
        use_up_attempts(&app, &uuid, &user.email).await;
        let first = app.signin(&uuid, &user.email, &user.password).await;
        assert!((599..=600).contains(&assert_blocked(&first)));
        let response = app
            .client
            .post(format!("{}/api/v2/my/signin", app.address))
            .json(&json!({ "uuid": uuid, "email": user.email, "password": "x", "device_fingerprint": crate::helpers::fingerprint("a") }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["retry-after"], "600");

        app.advance_clock(Duration::seconds(300));
        let later = app.signin(&uuid, &user.email, "wrong").await;
        assert!(
            (299..=300).contains(&assert_blocked(&later)),
            "not extended by attempts"
        );
        app.advance_clock(Duration::seconds(300));
        let uuid = app.start().await;
        assert_eq!(
            app.signin(&uuid, &user.email, &user.password).await.status,
            StatusCode::ACCEPTED
        );
    }
}

#[tokio::test]
async fn a_success_forgives_earlier_failures() {
    let app = spawn_app(Backend::Redis).await;
    let user = app.create_user(UserSpec::default()).await;
    for _ in 0..3 {
        let uuid = app.start().await;
        for _ in 0..4 {
            assert_eq!(
                app.signin(&uuid, &user.email, "wrong").await.error(),
                "invalid_credentials"
            );
        }
        assert_eq!(
            app.signin(&uuid, &user.email, &user.password).await.status,
            StatusCode::ACCEPTED
        );
    }
}

#[tokio::test]
async fn unknown_emails_lock_exactly_like_known_ones() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::default()).await;
        let unknown = format!("ghost-{}@example.test", uuid::Uuid::new_v4().simple());
        let mut answers = Vec::new();
        for email in [user.email.as_str(), unknown.as_str()] {
            let uuid = app.start().await;
            let mut seen = Vec::new();
            for _ in 0..6 {
                let reply = app.signin(&uuid, email, "wrong").await;
                seen.push((reply.status, reply.error().to_owned()));
            }
            answers.push(seen);
        }
        assert_eq!(
            answers[0], answers[1],
            "{backend:?}: no enumeration through the lockout"
        );
        assert_eq!(answers[0][5].1, "too_many_attempts");
    }
}

#[tokio::test]
async fn wrong_codes_count_against_the_account_and_close_the_wizard() {
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
        let right = app.totp_now(&user);
        let wrong = other_code(&right);
        for _ in 0..5 {
            assert_eq!(app.totp(&uuid, &wrong).await.error(), "invalid_code");
        }
        let closed = app.totp(&uuid, &right).await;
        closed.assert_envelope();
        assert_eq!(
            (closed.status, closed.error()),
            (StatusCode::GONE, "wizard_closed")
        );
        // Five wrong codes were five failures of the account too.
        let uuid = app.start().await;
        assert_blocked(&app.signin(&uuid, &user.email, &user.password).await);
    }
}

#[tokio::test]
async fn the_wizard_cap_on_codes_holds_even_when_the_account_limit_is_high() {
    let app = spawn_app(Backend::Memory).await;
    let (status, _) = app.put_settings(json!({ "max_attempts": 100 })).await;
    assert_eq!(status, StatusCode::OK);
    let user = app.create_user(UserSpec::sms("+15550101200")).await;
    let uuid = app.past_password(&user).await;
    let right = app.sms_code_of(&user);
    let wrong = other_code(&right);
    for _ in 0..5 {
        assert_eq!(app.sms_code(&uuid, &wrong).await.error(), "invalid_code");
    }
    assert_eq!(app.sms_code(&uuid, &right).await.error(), "wizard_closed");
    let uuid = app.start().await;
    assert_eq!(
        app.signin(&uuid, &user.email, &user.password)
            .await
            .workflow(),
        "2fa_sms_auth"
    );
}

#[tokio::test]
async fn a_totp_code_is_accepted_once_per_account() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::totp()).await;
        let code = app.totp_now(&user);
        let first = app.start().await;
        app.signin(&first, &user.email, &user.password).await;
        assert_eq!(app.totp(&first, &code).await.status, StatusCode::ACCEPTED);
        let second = app.start().await;
        app.signin(&second, &user.email, &user.password).await;
        let replay = app.totp(&second, &code).await;
        assert_eq!(
            (replay.status, replay.error()),
            (StatusCode::UNAUTHORIZED, "invalid_code"),
            "{backend:?}"
        );
        // The next time step brings a new code, which works.
        app.advance_clock(Duration::seconds(30));
        assert_eq!(
            app.totp(&second, &app.totp_now(&user)).await.status,
            StatusCode::ACCEPTED
        );
    }
}

#[tokio::test]
async fn one_totp_code_raced_through_many_wizards_on_two_instances_succeeds_once() {
    for backend in SHARED_STORES {
        let (first, second) = spawn_pair(backend).await;
        let user = first.create_user(UserSpec::totp()).await;
        let mut uuids = Vec::new();
        for i in 0..16 {
            let app = if i % 2 == 0 { &first } else { &second };
            let uuid = app.start().await;
            assert_eq!(
                app.signin(&uuid, &user.email, &user.password)
                    .await
                    .workflow(),
                "2fa_google_auth"
            );
            uuids.push(uuid);
        }
        let code = first.totp_now(&user);
        let replies = futures::future::join_all(uuids.iter().enumerate().map(|(i, uuid)| {
            let app = if i % 2 == 0 { &first } else { &second };
            app.totp(uuid, &code)
        }))
        .await;
        let accepted = replies
            .iter()
            .filter(|r| r.status == StatusCode::ACCEPTED)
            .count();
        println!(
            "16 concurrent submissions of one TOTP code over 16 wizards, 2 instances -> {accepted} accepted"
        );
        assert_eq!(accepted, 1);
        assert!(replies.iter().all(|r| r.status == StatusCode::ACCEPTED
            || ["invalid_code", "too_many_attempts"].contains(&r.error())));

        // And 16 on a single wizard.
        let uuid = first.start().await;
        let user = first.create_user(UserSpec::totp()).await;
        first.signin(&uuid, &user.email, &user.password).await;
        let code = first.totp_now(&user);
        let replies = futures::future::join_all((0..16).map(|i| {
            if i % 2 == 0 {
                first.totp(&uuid, &code)
            } else {
                second.totp(&uuid, &code)
            }
        }))
        .await;
        let answers: Vec<_> = replies
            .iter()
            .map(|r| (r.status, r.error().to_owned()))
            .collect();
        assert_eq!(
            replies
                .iter()
                .filter(|r| r.status == StatusCode::ACCEPTED)
                .count(),
            1,
            "{backend:?}: {answers:?}"
        );
    }
}

#[tokio::test]
async fn an_admin_can_unlock_a_blocked_account() {
    let app = spawn_app(Backend::Redis).await;
    let user = app.create_user(UserSpec::default()).await;
    let uuid = app.start().await;
    for _ in 0..6 {
        app.signin(&uuid, &user.email, "wrong").await;
    }
    assert_blocked(&app.signin(&uuid, &user.email, &user.password).await);
    let status = app.unlock(&user).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.signin(&uuid, &user.email, &user.password).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn settings_are_validated_and_reach_every_instance() {
    for backend in SHARED_STORES {
        let (first, second) = spawn_pair(backend).await;
        let (status, current) = first
            .admin(Method::GET, "/api/v2/admin/settings", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            current,
            json!({ "max_attempts": 5, "attempts_window_secs": 60, "block_secs": 600, "wizard_ttl_secs": 600, "ip_limit_per_minute": 0, "recaptcha_enabled": false, "second_factor_required": false })
        );
        for (body, field) in [
            (json!({ "max_attempts": 0 }), "max_attempts"),
            (json!({ "block_secs": 0 }), "block_secs"),
            (json!({ "wizard_ttl_secs": 5 }), "wizard_ttl_secs"),
            (json!({ "recaptcha_enabled": true }), "recaptcha_enabled"),
        ] {
            let (status, answer) = first.put_settings(body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
            assert!(
                answer["error"]["message"].as_str().unwrap().contains(field),
                "{answer}"
            );
        }
        let (status, _) = first.put_settings(json!({ "nonsense": 1 })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, updated) = first.put_settings(json!({ "max_attempts": 2 })).await;
        assert_eq!(
            (status, updated["max_attempts"].as_u64()),
            (StatusCode::OK, Some(2))
        );
        assert_eq!(
            updated["block_secs"], 600,
            "a PUT changes only what it names"
        );
        // The other instance picks it up within its refresh period.
        let user = first.create_user(UserSpec::default()).await;
        let mut applied = false;
        for _ in 0..40 {
            let (_, seen) = second
                .admin(Method::GET, "/api/v2/admin/settings", None)
                .await;
            if seen["max_attempts"] == 2 {
                applied = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            applied,
            "the second instance applies the new settings within seconds"
        );
        let uuid = second.start().await;
        for _ in 0..2 {
            assert_eq!(
                second.signin(&uuid, &user.email, "wrong").await.error(),
                "invalid_credentials"
            );
        }
        assert_blocked(&second.signin(&uuid, &user.email, &user.password).await);
    }
}

#[tokio::test]
async fn giving_the_password_again_does_not_wipe_out_wrong_codes() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::totp()).await;
        let wrong = || {
            let right = app.totp_now(&user);
            other_code(&right)
        };
        let first = app.start().await;
        assert_eq!(
            app.signin(&first, &user.email, &user.password)
                .await
                .workflow(),
            "2fa_google_auth"
        );
        for _ in 0..4 {
            assert_eq!(app.totp(&first, &wrong()).await.error(), "invalid_code");
        }
        // A fresh wizard and the right password: the four wrong codes still count.
        let second = app.start().await;
        assert_eq!(
            app.signin(&second, &user.email, &user.password)
                .await
                .workflow(),
            "2fa_google_auth"
        );
        assert_eq!(app.totp(&second, &wrong()).await.error(), "invalid_code");
        assert_blocked(&app.totp(&second, &app.totp_now(&user)).await);
    }
}

#[tokio::test]
async fn requests_that_never_reach_a_check_use_up_nothing() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let user = app.create_user(UserSpec::totp()).await;
        let uuid = app.past_password(&user).await;
        let other_device = crate::helpers::fingerprint("another-device");
        for _ in 0..10 {
            let reply = app
                .post(
                    "/api/v2/my/2fa/google",
                    json!({ "uuid": uuid, "code": "123456", "device_fingerprint": other_device }),
                )
                .await;
            assert_eq!(reply.error(), "device_mismatch");
        }
        // Neither the account nor the wizard paid for those.
        assert_eq!(
            app.totp(&uuid, &app.totp_now(&user)).await.status,
            StatusCode::ACCEPTED,
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn the_last_millisecond_before_expiry_is_gated_like_any_other() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        // Wizards started now expire at an instant with a sub-millisecond part,
        // unless the service keeps whole milliseconds.
        app.clock.stop_at(Utc::now() + Duration::microseconds(700));
        let user = app.create_user(UserSpec::default()).await;
        let blocked = app.start().await;
        let late = app.start().await;
        let ttl = Duration::seconds(app.settings.wizard_ttl_secs.into());
        let expires_at = app.clock.now() + ttl;
        use_up_attempts(&app, &blocked, &user.email).await;
        // Half a millisecond before the end: still the wizard's time, and still gated.
        app.clock.stop_at(expires_at - Duration::microseconds(500));
        let reply = app.signin(&late, &user.email, &user.password).await;
        assert_blocked(&reply);
        assert!(reply.body["data"]["accessToken"].is_null(), "{backend:?}");
        assert_eq!(
            app.signin(&late, &user.email, "wrong").await.error(),
            "too_many_attempts"
        );
        // On the instant itself it is over, before any gate.
        app.clock.stop_at(expires_at);
        assert_eq!(
            app.signin(&late, &user.email, &user.password).await.error(),
            "wizard_expired"
        );

        // A fresh account, guessed at in the last half millisecond: the sixth guess is refused.
        let other = app.create_user(UserSpec::default()).await;
        app.clock.stop_at(Utc::now() + Duration::microseconds(300));
        let uuid = app.start().await;
        let expires_at = app.clock.now() + ttl;
        app.clock.stop_at(expires_at - Duration::microseconds(500));
        let answers: Vec<String> =
            futures::future::join_all((0..8).map(|_| app.signin(&uuid, &other.email, "wrong")))
                .await
                .iter()
                .map(|r| r.error().to_owned())
                .collect();
        let checked = answers
            .iter()
            .filter(|e| *e == "invalid_credentials")
            .count();
        assert_eq!(checked, 5, "{backend:?}: {answers:?}");
    }
}

#[tokio::test]
async fn attempts_given_back_late_buy_nothing_in_the_next_window() {
    for backend in BACKENDS {
        let app = slow_hashing_app(backend).await;
        app.clock.stop_at(Utc::now());
        let user = app.create_user(UserSpec::totp()).await;
        let guessing = app.past_password(&user).await;
        let wrong = || other_code(&app.totp_now(&user));
        let in_flight = app.start().await;
        // Four right passwords for one wizard queue for the one hash worker,
        // each holding an attempt of this window; the window ends while they
        // wait, and wrong codes start counting in the next one. One of them
        // then saves (and gives its attempt back with the save), the other
        // three lose the save and give theirs back on the way out.
        let (passwords, mut answers) = tokio::join!(
            futures::future::join_all((0..4).map(|_| app.signin(
                &in_flight,
                &user.email,
                &user.password
            ))),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                app.advance_clock(Duration::seconds(61));
                let mut answers = Vec::new();
                for _ in 0..4 {
                    answers.push(app.totp(&guessing, &wrong()).await.error().to_owned());
                }
                answers
            }
        );
        let mut outcomes: Vec<&str> = passwords
            .iter()
            .map(|reply| match reply.status {
                StatusCode::OK => "saved",
                _ => reply.error(),
            })
            .collect();
        outcomes.sort_unstable();
        assert_eq!(
            outcomes,
            [
                "concurrent_request",
                "concurrent_request",
                "concurrent_request",
                "saved"
            ],
            "{backend:?}"
        );
        // All four gave back attempts of a window that is over: the new
        // window still allows exactly max_attempts wrong codes in all.
        loop {
            let answer = app.totp(&guessing, &wrong()).await.error().to_owned();
            let blocked = answer == "too_many_attempts";
            answers.push(answer);
            if blocked || answers.len() > 20 {
                break;
            }
        }
        let checked = answers.iter().filter(|a| *a == "invalid_code").count();
        assert_eq!(checked, 5, "{backend:?}: {answers:?}");
    }
}

#[tokio::test]
async fn no_settings_change_is_lost_to_another() {
    // Instance B's copy of the settings is up to 2 s old when it saves.
    for backend in SHARED_STORES {
        let (first, second) = spawn_pair(backend).await;
        let (status, _) = first.put_settings(json!({ "max_attempts": 3 })).await;
        assert_eq!(status, StatusCode::OK);
        let (status, saved) = second.put_settings(json!({ "block_secs": 1200 })).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (saved["max_attempts"].as_u64(), saved["block_secs"].as_u64()),
            (Some(3), Some(1200)),
            "{saved}"
        );

        // Concurrent saves on one instance, each naming another setting.
        for backend in BACKENDS {
            let app = spawn_app(backend).await;
            let patches = [
                json!({ "max_attempts": 7 }),
                json!({ "attempts_window_secs": 120 }),
                json!({ "block_secs": 900 }),
                json!({ "wizard_ttl_secs": 300 }),
                json!({ "ip_limit_per_minute": 77 }),
            ];
            let answers =
                futures::future::join_all(patches.iter().map(|p| app.put_settings(p.clone())))
                    .await;
            assert!(
                answers.iter().all(|(status, _)| *status == StatusCode::OK),
                "{answers:?}"
            );
            let (_, settings) = app.admin(Method::GET, "/api/v2/admin/settings", None).await;
            assert_eq!(
                settings,
                json!({ "max_attempts": 7, "attempts_window_secs": 120, "block_secs": 900, "wizard_ttl_secs": 300, "ip_limit_per_minute": 77, "recaptcha_enabled": false, "second_factor_required": false }),
                "{backend:?}"
            );
        }
    }
}

/// A wizard past `login` whose record does not name its account (written by
/// hand here; no step writes one) has no account to check the code against
/// nor a counter to take an attempt from: it is refused unverified.
#[tokio::test]
async fn a_bound_wizard_without_its_account_is_refused_unverified() {
    use signin_wizard::domain::{WizardId, WizardKey};
    use signin_wizard::store::{Records, RedisStore, RedisStoreConfig};
    use signin_wizard::wizard::{BoundUser, Step, Wizard};

    let app = spawn_app(Backend::Redis).await;
    let user = app.create_user(UserSpec::totp()).await;
    let store = RedisStore::connect(&RedisStoreConfig {
        url: app.settings.redis_url.clone().unwrap(),
        cluster: false,
        prefix: app.settings.redis_prefix.clone(),
        timeout: std::time::Duration::from_secs(1),
    })
    .await
    .unwrap();
    let mut orphan = Wizard::start(
        WizardId::random(),
        &WizardKey::generate(),
        app.clock.now(),
        Duration::seconds(600),
    );
    orphan.step = Step::TotpCode {
        user: BoundUser {
            id: signin_wizard::domain::UserId::parse(&user.id).unwrap(),
            version: 1,
        },
    };
    store.insert_wizard(&orphan).await.unwrap();

    let reply = app.totp(&orphan.id.to_string(), &app.totp_now(&user)).await;
    reply.assert_envelope();
    assert_eq!(
        (reply.status, reply.error()),
        (StatusCode::GONE, "account_changed"),
        "{}",
        reply.body
    );
    assert!(reply.body["data"]["accessToken"].is_null());
}

#[tokio::test]
async fn the_lockout_holds_when_our_clock_runs_behind_the_stores() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        // Longer behind than the window (60 s) and the block (600 s).
        app.advance_clock(Duration::minutes(-20));
        let user = app.create_user(UserSpec::default()).await;
        let uuid = app.start().await;
        use_up_attempts(&app, &uuid, &user.email).await;
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        assert!((599..=600).contains(&assert_blocked(&reply)), "{backend:?}");
    }
}

#[tokio::test]
async fn settings_saved_by_another_version_or_unreadable_do_not_lock_the_api() {
    let app = spawn_app(Backend::Redis).await;
    let redis = redis::Client::open(shared_redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}{{policy}}", app.settings.redis_prefix);
    for stored in [
        // A newer version's setting this one does not know.
        r#"{"max_attempts":5,"attempts_window_secs":60,"block_secs":600,"wizard_ttl_secs":600,"ip_limit_per_minute":0,"recaptcha_enabled":false,"future_setting":true}"#,
        // Nothing this version can read.
        r#"{"max_attempts":"#,
    ] {
        // A record: version, write nonce, no account, then the body (see store/redis.rs).
        let record = [
            &1u64.to_be_bytes()[..],
            &7u64.to_be_bytes(),
            &[0],
            stored.as_bytes(),
        ]
        .concat();
        redis::cmd("SET")
            .arg(&key)
            .arg(record)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let (status, saved) = app.put_settings(json!({ "block_secs": 1200 })).await;
        assert_eq!(status, StatusCode::OK, "{stored}: {saved}");
        assert_eq!(saved["block_secs"], 1200);
        let now: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let now = String::from_utf8_lossy(&now);
        assert!(now.contains("\"block_secs\":1200"), "{now}");
    }
}

/// An operator changing an account's email neither lifts its block nor
/// makes the TOTP code it just used good again under the new address.
#[tokio::test]
async fn an_email_change_keeps_the_block_and_the_last_totp_step() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        app.clock.stop_at(app.clock.now());
        let user = app.create_user(UserSpec::totp()).await;
        let code = app.totp_now(&user);
        let uuid = app.start().await;
        app.signin(&uuid, &user.email, &user.password).await;
        assert_eq!(app.totp(&uuid, &code).await.status, StatusCode::ACCEPTED);
        let uuid = app.start().await;
        use_up_attempts(&app, &uuid, &user.email).await;

        let moved = format!("moved-{}", user.email);
        let status = app.patch_user(&user, json!({ "email": moved })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}");
        let uuid = app.start().await;
        let reply = app.signin(&uuid, &moved, &user.password).await;
        assert_blocked(&reply);

        let status = app.unlock(&user).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let reply = app.signin(&uuid, &moved, &user.password).await;
        assert_eq!(
            reply.workflow(),
            "2fa_google_auth",
            "{backend:?}: {}",
            reply.body
        );
        let reply = app.totp(&uuid, &code).await;
        assert_eq!(
            reply.error(),
            "invalid_code",
            "{backend:?}: the code was used"
        );
    }
}
