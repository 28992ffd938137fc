//! Settings, read once at start-up from `WIZARD_*` environment variables
//! (each also a `serve` flag; `signin-wizard serve --help` lists them).

use crate::credentials::{PasswordPolicy, TokenSettings};
use clap::Args;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "WIZARD_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Redis URL; when unset, an embedded in-process store is used.
    #[arg(long, env = "WIZARD_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = "WIZARD_REDIS_PREFIX", default_value = "signin-wizard:")]
    pub redis_prefix: String,

    /// Upper bound for one Redis command or connection attempt, in milliseconds.
    #[arg(long, env = "WIZARD_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,

    /// Absolute lifetime of a sign-in wizard, in seconds.
    #[arg(long, env = "WIZARD_TTL_SECS", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub wizard_ttl_secs: u32,

    /// Lifetime of an SMS code, in seconds.
    #[arg(long, env = "WIZARD_SMS_CODE_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub sms_code_ttl_secs: u32,

    /// SMS gateway webhook; when unset, SMS messages are written to the log.
    #[arg(long, env = "WIZARD_SMS_WEBHOOK_URL")]
    pub sms_webhook_url: Option<reqwest::Url>,

    /// Bearer token for the admin API; the admin API is off when unset
    /// (except on the embedded store, which generates one and prints it).
    #[arg(long, env = "WIZARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Create demo accounts at start-up (default: only with the embedded store).
    #[arg(long, env = "WIZARD_DEMO_USERS")]
    pub demo_users: Option<bool>,

    /// `iss` of issued tokens.
    #[arg(long, env = "WIZARD_JWT_ISSUER", default_value = "signin-wizard")]
    pub jwt_issuer: String,

    /// `aud` of issued tokens.
    #[arg(long, env = "WIZARD_JWT_AUDIENCE", default_value = "signin-wizard")]
    pub jwt_audience: String,

    /// RSA private key (PEM) to sign tokens with; when unset, a key is
    /// generated once and shared through the store.
    #[arg(long, env = "WIZARD_JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,

    /// Access token lifetime, in seconds.
    #[arg(long, env = "WIZARD_ACCESS_TOKEN_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(u32).range(1..))]
    pub access_token_ttl_secs: u32,

    /// Refresh token lifetime, in seconds.
    #[arg(long, env = "WIZARD_REFRESH_TOKEN_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u32).range(1..))]
    pub refresh_token_ttl_secs: u32,

    /// argon2id memory cost for new password hashes, in KiB.
    #[arg(long, env = "WIZARD_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// argon2id passes for new password hashes.
    #[arg(long, env = "WIZARD_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// argon2id lanes for new password hashes.
    #[arg(long, env = "WIZARD_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Password hashes computed at once (default: one per CPU core).
    #[arg(long, env = "WIZARD_HASH_WORKERS")]
    pub hash_workers: Option<usize>,

    /// Password checks allowed to wait for a worker before answering 503 `overloaded`.
    #[arg(long, env = "WIZARD_HASH_QUEUE", default_value_t = 64)]
    pub hash_queue: usize,
}

impl Settings {
    /// Defaults overlaid with the environment, as `serve` sees them.
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        <Only as clap::Parser>::try_parse_from(["signin-wizard"]).map(|o| o.settings)
    }

    pub fn wizard_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.wizard_ttl_secs.into())
    }

    pub fn sms_code_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.sms_code_ttl_secs.into())
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn demo_users(&self) -> bool {
        self.demo_users.unwrap_or(self.redis_url.is_none())
    }

    pub fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }

    pub fn hash_workers(&self) -> usize {
        self.hash_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
    }

    pub fn token_settings(&self) -> TokenSettings {
        TokenSettings {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            access_ttl: chrono::Duration::seconds(self.access_token_ttl_secs.into()),
            refresh_ttl: chrono::Duration::seconds(self.refresh_token_ttl_secs.into()),
        }
    }
}
