//! What a pending wizard costs Redis: at most 320 bytes, by `MEMORY USAGE`
//! of one record and by `used_memory` over 10,000 started wizards on a
//! Redis of their own.

use crate::helpers::{Backend, FakeSms, RedisServer, spawn_with, test_settings};
use crate::redis_servers::redis_cli;

const WIZARDS: u64 = 10_000;
const BUDGET: u64 = 320;

fn used_memory(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["info", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_wizard_costs_at_most_320_bytes_of_redis() {
    let redis = RedisServer::spawn();
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Redis, &sms);
    settings.redis_url = Some(redis.url().parse().unwrap());
    // The production prefix: key names are part of the cost.
    settings.redis_prefix = "signin-wizard:".into();
    let app = spawn_with(settings.clone(), sms).await;

    let uuid = app.start().await;
    let key = format!("{}{{w:{uuid}}}", settings.redis_prefix);
    let one: u64 = redis_cli(&[
        "-p",
        &redis.port.to_string(),
        "memory",
        "usage",
        &key,
        "samples",
        "0",
    ])
    .trim()
    .parse()
    .unwrap_or_else(|_| panic!("no record at {key}"));

    let before = used_memory(&redis);
    let started = futures::future::join_all((0..WIZARDS / 100).map(|_| async {
        for _ in 0..100 {
            app.start().await;
        }
    }));
    started.await;
    let per_wizard = (used_memory(&redis) - before) / WIZARDS;
    println!(
        "a pending wizard: MEMORY USAGE {one} bytes; used_memory {per_wizard} bytes each over {WIZARDS}"
    );
    assert!(one <= BUDGET, "MEMORY USAGE of one wizard: {one} bytes");
    assert!(
        per_wizard <= BUDGET,
        "used_memory per wizard: {per_wizard} bytes"
    );
}
