//! Load tool: drives complete TOTP sign-ins over real HTTP against an
//! in-process server, on the embedded store and on a private redis-server,
//! and prints throughput, per-step latency, CPU and Redis commands per sign-in;
//! then refreshes each session once, and prints the same for a refresh.
//!
//!     cargo bench --bench load
//!     LOAD_SIGNINS=2000 LOAD_CONCURRENCY=64 cargo bench --bench load
//!
//! Password hashing uses the production (OWASP) argon2 cost unless
//! LOAD_CHEAP_ARGON2=1, so sign-in throughput is mostly argon2 throughput.

use futures::StreamExt;
use serde_json::{Value, json};
use signin_wizard::config::{ServiceUrl, Settings};
use signin_wizard::credentials::TotpSecret;
use signin_wizard::domain::AdminToken;
use signin_wizard::startup::Application;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "load-tool-admin-token-0123456789abcdef";
const PASSWORD: &str = "load-test passphrase 7f3a9c";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; this harness has no options of its own.
    let signins = env_or("LOAD_SIGNINS", 1000);
    let concurrency = env_or("LOAD_CONCURRENCY", 32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "{signins} sign-ins, {concurrency} concurrent clients, {} cores",
            std::thread::available_parallelism()?
        );
        run("embedded", None, signins, concurrency).await?;
        let redis = PrivateRedis::start()?;
        run("redis", Some(&redis), signins, concurrency).await
    })
}

async fn run(
    label: &str,
    redis: Option<&PrivateRedis>,
    signins: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let mut settings = Settings::from_env()?;
    settings.bind = "127.0.0.1:0".parse()?;
    settings.redis_url = redis.map(PrivateRedis::url).transpose()?;
    settings.admin_token = Some(AdminToken::parse(ADMIN_TOKEN)?);
    settings.demo_users = Some(false);
    settings.hash_queue = signins; // measure throughput, not shedding
    // Every client here is one address: a limit it never reaches, still checked on every request.
    settings.ip_limit_per_minute = 1_000_000;
    settings.admin_ip_limit_per_minute = 0;
    if std::env::var("LOAD_CHEAP_ARGON2").is_ok_and(|v| v == "1") {
        settings.argon2_memory_kib = 64;
        settings.argon2_iterations = 1;
    }
    let app = Application::build(settings).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;

    // One account per sign-in: a TOTP code is accepted once per account and time step.
    let users: Vec<anyhow::Result<(String, TotpSecret)>> = futures::stream::iter(0..signins)
        .map(|i| create_user(&client, &base, i))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let users = users.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    let commands_before = redis.map(PrivateRedis::commands).transpose()?;
    let trips_before = store_round_trips(&client, &base).await?;
    let cpu_before = process_cpu();
    let started = Instant::now();
    let results: Vec<anyhow::Result<([Duration; 3], String)>> = futures::stream::iter(0..signins)
        .map(|i| {
            let (email, secret) = &users[i];
            sign_in(&client, &base, email, secret)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let cpu = process_cpu() - cpu_before;
    let round_trips = store_round_trips(&client, &base).await? - trips_before;
    let commands_after = redis.map(PrivateRedis::commands).transpose()?;

    let mut steps: [Vec<Duration>; 3] = Default::default();
    let mut refresh_tokens = Vec::new();
    for result in results {
        let (took, refresh_token) = result?;
        for (step, took) in took.into_iter().enumerate() {
            steps[step].push(took);
        }
        refresh_tokens.push(refresh_token);
    }
    println!(
        "\n[{label}] {signins} complete sign-ins in {:.2?}: {:.1} sign-ins/s",
        elapsed,
        signins as f64 / elapsed.as_secs_f64()
    );
    for (name, samples) in [
        "GET  /signin/wizard",
        "POST /signin (argon2)",
        "POST /2fa/google",
    ]
    .into_iter()
    .zip(steps)
    {
        print_percentiles(name, samples);
    }
    println!(
        "  CPU per sign-in (this process: server and load clients): {:.2} ms",
        cpu.as_secs_f64() * 1000.0 / signins as f64
    );
    if let (Some(before), Some(after)) = (commands_before, commands_after) {
        println!(
            "  Redis per sign-in (3 steps): {:.2} round trips, {:.2} commands incl. those inside scripts",
            round_trips as f64 / signins as f64,
            (after.commands - before.commands) as f64 / signins as f64,
        );
    }

    // One refresh of each session just opened.
    let (trips_before, cpu_before, started) = (
        store_round_trips(&client, &base).await?,
        process_cpu(),
        Instant::now(),
    );
    let took: Vec<anyhow::Result<Duration>> = futures::stream::iter(refresh_tokens)
        .map(|token| refresh(&client, &base, token))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let (elapsed, cpu) = (started.elapsed(), process_cpu() - cpu_before);
    let round_trips = store_round_trips(&client, &base).await? - trips_before;
    let took = took.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "[{label}] {signins} refreshes in {elapsed:.2?}: {:.1} refreshes/s",
        signins as f64 / elapsed.as_secs_f64()
    );
    print_percentiles("POST /refresh", took);
    println!(
        "  CPU per refresh: {:.2} ms",
        cpu.as_secs_f64() * 1000.0 / signins as f64
    );
    if redis.is_some() {
        println!(
            "  Redis per refresh: {:.2} round trips",
            round_trips as f64 / signins as f64
        );
    }
    Ok(())
}

fn print_percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    println!(
        "  {name:<24} p50 {:>9.2?}  p90 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
}

async fn refresh(client: &reqwest::Client, base: &str, token: String) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let reply: Value = client
        .post(format!("{base}/api/v2/my/refresh"))
        .json(&json!({ "refreshToken": token }))
        .send()
        .await?
        .json()
        .await?;
    let took = t.elapsed();
    anyhow::ensure!(reply["code"] == 200, "refresh failed: {reply}");
    Ok(took)
}

/// User plus system CPU time of this process so far (every thread).
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        let failed = libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0;
        assert!(!failed, "getrusage failed");
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

async fn create_user(
    client: &reqwest::Client,
    base: &str,
    i: usize,
) -> anyhow::Result<(String, TotpSecret)> {
    let secret = TotpSecret::generate();
    let email = format!("load-{i}@example.test");
    let created: Value = client
        .post(format!("{base}/api/v2/admin/users"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({ "email": email, "password": PASSWORD, "totp_secret": secret.expose_base32() }),
        )
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        created["id"].is_string(),
        "creating a user failed: {created}"
    );
    Ok((email, secret))
}

async fn sign_in(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    secret: &TotpSecret,
) -> anyhow::Result<([Duration; 3], String)> {
    let fingerprint = "eyJ1c2VyX2FnZW50IjoibG9hZCJ9";
    let t = Instant::now();
    let start: Value = client
        .get(format!("{base}/api/v2/my/signin/wizard"))
        .send()
        .await?
        .json()
        .await?;
    let first = t.elapsed();
    let uuid = start["uuid"].as_str().unwrap_or_default().to_owned();

    let t = Instant::now();
    let reply: Value = client
        .post(format!("{base}/api/v2/my/signin"))
        .json(&json!({ "uuid": uuid, "email": email, "password": PASSWORD, "device_fingerprint": fingerprint }))
        .send()
        .await?
        .json()
        .await?;
    let second = t.elapsed();
    anyhow::ensure!(
        reply["workflow"] == "2fa_google_auth",
        "unexpected answer: {reply}"
    );

    let code = secret.code_at(chrono::Utc::now()).unwrap_or_default();
    let t = Instant::now();
    let reply: Value = client
        .post(format!("{base}/api/v2/my/2fa/google"))
        .json(&json!({ "uuid": uuid, "code": code }))
        .send()
        .await?
        .json()
        .await?;
    let third = t.elapsed();
    anyhow::ensure!(reply["code"] == 202, "sign-in did not complete: {reply}");
    let refresh_token = reply["data"]["refreshToken"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(([first, second, third], refresh_token))
}

#[derive(Default)]
struct CommandStats {
    commands: u64,
}

/// The store round trips the service made so far (`GET /api/v2/admin/store`).
async fn store_round_trips(client: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let stats: Value = client
        .get(format!("{base}/api/v2/admin/store"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    stats["round_trips"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no round_trips in {stats}"))
}

/// A throw-away redis-server on a free port (killed on drop).
struct PrivateRedis {
    port: u16,
    child: Child,
}

impl PrivateRedis {
    fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Self { port, child });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("redis-server did not start")
    }

    fn url(&self) -> anyhow::Result<ServiceUrl> {
        Ok(ServiceUrl::parse(&format!(
            "redis://127.0.0.1:{}",
            self.port
        ))?)
    }

    /// Counts from INFO commandstats, including what scripts run inside.
    fn commands(&self) -> anyhow::Result<CommandStats> {
        let client = redis::Client::open(self.url()?.expose().as_str())?;
        let mut conn = client.get_connection()?;
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut conn)?;
        let mut stats = CommandStats::default();
        for line in info.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let calls: u64 = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if name == "info" {
                continue;
            }
            stats.commands += calls;
        }
        Ok(stats)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
