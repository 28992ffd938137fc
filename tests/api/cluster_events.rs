//! A Redis Cluster changing under load: a slot range moving to another
//! primary, a primary failing over to its replica. Every answer meanwhile
//! is the wizard's own or 503 `store_unavailable`; no wrong code ever earns
//! a token; and the service serves again without a restart.

use crate::helpers::{
    Backend, FakeSms, RedisCluster, Reply, TestApp, TestUser, UserSpec, other_code, spawn_with,
    test_settings,
};
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Two instances on `cluster`, sharing one key prefix.
async fn instances_on(cluster: &RedisCluster) -> [TestApp; 2] {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Cluster, &sms);
    settings.redis_url = Some(cluster.url().parse().unwrap());
    settings.redis_timeout_ms = 2000;
    let first = spawn_with(settings.clone(), sms.clone()).await;
    // Attempts are not what these tests are about.
    let (status, _) = first
        .put_settings(serde_json::json!({ "max_attempts": 1000 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    [first, spawn_with(settings, sms).await]
}

/// What one flow saw, step by step.
#[derive(Default)]
struct Seen {
    answers: Vec<(StatusCode, String)>,
    wrong_code_tokens: usize,
    completed: usize,
}

impl Seen {
    fn record(&mut self, reply: &Reply) {
        self.answers.push((reply.status, reply.error().to_owned()));
    }

    /// Every answer is one the wizard gives, or the store's 503.
    fn assert_sound(&self) {
        for (status, error) in &self.answers {
            assert!(
                status.is_success()
                    || (*status == StatusCode::SERVICE_UNAVAILABLE && error == "store_unavailable")
                    || (status.is_client_error() && error != "<none>"),
                "unexpected answer {status} {error}; all: {:?}",
                self.answers
            );
        }
        assert_eq!(self.wrong_code_tokens, 0, "a wrong code earned a token");
    }
}

/// Sign-ins (a wrong code, then the right one) until `stop`.
async fn flows(app: Arc<TestApp>, user: Arc<TestUser>, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let started = app.get("/api/v2/my/signin/wizard").await;
        seen.record(&started);
        let Some(uuid) = started.body["uuid"]
            .as_str()
            .filter(|_| started.status.is_success())
        else {
            continue;
        };
        let reply = app.signin(uuid, &user.email, &user.password).await;
        seen.record(&reply);
        if !reply.status.is_success() {
            continue;
        }
        let code = app.totp_now(&user);
        let wrong = app.totp(uuid, &other_code(&code)).await;
        seen.record(&wrong);
        if !wrong.body["data"]["accessToken"].is_null() {
            seen.wrong_code_tokens += 1;
        }
        let right = app.totp(uuid, &code).await;
        seen.record(&right);
        if right.status == StatusCode::ACCEPTED {
            assert!(right.body["data"]["accessToken"]["token"].is_string());
            seen.completed += 1;
        }
        // One TOTP step per account: wait for the next one.
        app.advance_clock(chrono::Duration::seconds(30));
    }
    seen
}

/// Runs flows on two instances while `event` happens, then checks them and
/// one more full sign-in on each.
async fn under_load(cluster: &RedisCluster, event: impl FnOnce(&RedisCluster)) {
    let apps = instances_on(cluster).await.map(Arc::new);
    let stop = Arc::new(AtomicBool::new(false));
    let mut runners = Vec::new();
    for app in &apps {
        let user = Arc::new(app.create_user(UserSpec::totp()).await);
        runners.push(tokio::spawn(flows(app.clone(), user, stop.clone())));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| event(cluster));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for runner in runners {
        let seen = runner.await.unwrap();
        seen.assert_sound();
        assert!(
            seen.completed > 0,
            "no sign-in completed: {:?}",
            seen.answers
        );
    }

    // Served again, without a restart.
    for app in &apps {
        let user = app.create_user(UserSpec::totp()).await;
        let uuid = app.start().await;
        let reply = app.signin(&uuid, &user.email, &user.password).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let reply = app.totp(&uuid, &app.totp_now(&user)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_range_moving_to_another_primary_mid_run_loses_nothing() {
    let cluster = RedisCluster::spawn();
    under_load(&cluster, |cluster| {
        let (from, _) = cluster.primary_and_replica_of("{policy}");
        let to = cluster
            .nodes
            .iter()
            .find(|n| n.port != from.port && n.cli(&["role"]).starts_with("master"))
            .unwrap();
        let from_id = from.cli(&["cluster", "myid"]).trim().to_owned();
        let to_id = to.cli(&["cluster", "myid"]).trim().to_owned();
        let moved = crate::redis_servers::redis_cli(&[
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", from.port),
            "--cluster-from",
            &from_id,
            "--cluster-to",
            &to_id,
            "--cluster-slots",
            &cluster.slots_of(from).to_string(),
            "--cluster-yes",
        ]);
        assert!(!moved.contains("[ERR]"), "reshard: {moved}");
        cluster.wait_until_healthy();
        let (now, _) = cluster.primary_and_replica_of("{policy}");
        assert_eq!(now.port, to.port, "the settings' slot moved");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_failing_over_to_its_replica_mid_run_loses_nothing() {
    let cluster = RedisCluster::spawn();
    under_load(&cluster, |cluster| {
        let (primary, replica) = cluster.primary_and_replica_of("{policy}");
        assert_eq!(replica.cli(&["cluster", "failover"]).trim(), "OK");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !replica.cli(&["role"]).starts_with("master") {
            assert!(
                std::time::Instant::now() < deadline,
                "the replica did not take over"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        cluster.wait_until_healthy();
        assert!(primary.cli(&["role"]).starts_with("slave"));
    })
    .await;
}
