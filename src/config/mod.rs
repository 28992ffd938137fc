//! Settings, read once at start-up from `WIZARD_*` environment variables
//! (each also a `serve` flag; `signin-wizard serve --help` lists them).
//! Values that may carry credentials are hidden from `--help`, never
//! echoed in errors, and refused when set but empty.

mod values;

pub use values::ServiceUrl;

use crate::credentials::{Kek, PasswordPolicy, SigningAlgorithm, TokenSettings};
use crate::domain::AdminToken;
use crate::policy::Policy;
use crate::sessions::Lifetimes;
use anyhow::Context as _;
use clap::Args;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use values::quiet;

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "WIZARD_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Redis URL; when unset, an embedded in-process store is used.
    #[arg(long, env = "WIZARD_REDIS_URL", hide_env_values = true, value_parser = quiet(ServiceUrl::parse))]
    pub redis_url: Option<ServiceUrl>,

    /// `WIZARD_REDIS_URL` is a node of a Redis Cluster (any one: the client finds the rest).
    #[arg(long, env = "WIZARD_REDIS_CLUSTER", default_value_t = false)]
    pub redis_cluster: bool,

    /// Prefix of every Redis key, so several deployments can share one Redis.
    /// No braces: keys carry Redis Cluster hash tags after it.
    #[arg(long, env = "WIZARD_REDIS_PREFIX", default_value = "signin-wizard:", value_parser = quiet(values::key_prefix))]
    pub redis_prefix: String,

    /// Upper bound for one Redis command or connection attempt, in milliseconds.
    #[arg(long, env = "WIZARD_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,

    /// Absolute lifetime of a sign-in wizard, in seconds (start-up value; see the settings API).
    #[arg(long, env = "WIZARD_TTL_SECS", default_value_t = 600, value_parser = clap::value_parser!(u32).range(30..=86_400))]
    pub wizard_ttl_secs: u32,

    /// Failed password/code submissions per account within the window before it is blocked.
    #[arg(long, env = "WIZARD_LOCKOUT_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub lockout_max_attempts: u32,

    /// The window over which failures are counted, in seconds.
    #[arg(long, env = "WIZARD_LOCKOUT_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub lockout_window_secs: u32,

    /// How long a blocked account stays blocked, in seconds.
    #[arg(long, env = "WIZARD_LOCKOUT_BLOCK_SECS", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=604_800))]
    pub lockout_block_secs: u32,

    /// Codes (TOTP or SMS) one wizard may try before it is closed.
    #[arg(long, env = "WIZARD_CODE_ATTEMPTS_PER_WIZARD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub code_attempts_per_wizard: u32,

    /// Requests per minute per client IP on /api/v2/my/*; 0 turns the limit off.
    #[arg(long, env = "WIZARD_IP_LIMIT_PER_MINUTE", default_value_t = 120, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub ip_limit_per_minute: u32,

    /// Every account must have a second factor: one without any enrols an
    /// authenticator app during sign-in (start-up value; see the settings API).
    #[arg(long, env = "WIZARD_REQUIRE_SECOND_FACTOR", default_value_t = false)]
    pub require_second_factor: bool,

    /// reCAPTCHA site key, shown to clients by GET /signin/wizard.
    #[arg(long, env = "WIZARD_RECAPTCHA_SITE_KEY", value_parser = quiet(values::text))]
    pub recaptcha_site_key: Option<String>,

    /// reCAPTCHA secret; with the site key, reCAPTCHA starts enabled.
    #[arg(long, env = "WIZARD_RECAPTCHA_SECRET", hide_env_values = true, value_parser = quiet(values::secret))]
    pub recaptcha_secret: Option<SecretString>,

    /// Where reCAPTCHA answers are verified.
    #[arg(
        long,
        env = "WIZARD_RECAPTCHA_VERIFY_URL",
        hide_env_values = true,
        value_parser = quiet(ServiceUrl::parse),
        default_value = "https://www.google.com/recaptcha/api/siteverify"
    )]
    pub recaptcha_verify_url: ServiceUrl,

    /// Hostnames (comma-separated) reCAPTCHA tokens must have been solved on; unset accepts any.
    #[arg(long, env = "WIZARD_RECAPTCHA_HOSTNAMES", value_delimiter = ',', value_parser = quiet(values::text))]
    pub recaptcha_hostnames: Vec<String>,

    /// Refuse steps that lack the wizard's X-Wizard-Key (plain B2Core clients send none).
    #[arg(long, env = "WIZARD_REQUIRE_WIZARD_KEY", default_value_t = false)]
    pub require_wizard_key: bool,

    /// Requests per minute per client IP on /api/v2/admin/*; 0 turns the limit off.
    #[arg(long, env = "WIZARD_ADMIN_IP_LIMIT_PER_MINUTE", default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub admin_ip_limit_per_minute: u32,

    /// Peers (comma-separated IPs) whose X-Forwarded-For is believed.
    #[arg(long, env = "WIZARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Lifetime of an SMS code, in seconds.
    #[arg(long, env = "WIZARD_SMS_CODE_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub sms_code_ttl_secs: u32,

    /// Least time between two SMS codes of one wizard, in seconds.
    #[arg(long, env = "WIZARD_SMS_RESEND_COOLDOWN_SECS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub sms_resend_cooldown_secs: u32,

    /// SMS codes one wizard may have sent again.
    #[arg(long, env = "WIZARD_SMS_MAX_RESENDS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub sms_max_resends: u32,

    /// SMS gateway webhook (user and password in the URL go out as Basic auth);
    /// when unset, SMS messages are written to the log.
    #[arg(long, env = "WIZARD_SMS_WEBHOOK_URL", hide_env_values = true, value_parser = quiet(ServiceUrl::parse))]
    pub sms_webhook_url: Option<ServiceUrl>,

    /// SMTP server for email (password-reset codes): `smtps://host:port`
    /// (implicit TLS), `smtp://host:port?tls=required` (STARTTLS) or
    /// `smtp://host:port` (unencrypted: a local relay only); a user and
    /// password in the URL are sent as SMTP AUTH.
    #[arg(long, env = "WIZARD_SMTP_URL", hide_env_values = true, value_parser = quiet(ServiceUrl::parse))]
    pub smtp_url: Option<ServiceUrl>,

    /// A PEM file of a root certificate to trust for the SMTP server, beside
    /// the usual ones (a private relay's own CA).
    #[arg(long, env = "WIZARD_SMTP_CA_FILE", value_parser = quiet(values::path))]
    pub smtp_ca_file: Option<PathBuf>,

    /// The From of every email, as `Name <address>`.
    #[arg(
        long,
        env = "WIZARD_EMAIL_FROM",
        default_value = "signin-wizard <no-reply@localhost>"
    )]
    pub email_from: lettre::message::Mailbox,

    /// Without WIZARD_SMTP_URL, write emails to the log (default: only with
    /// the embedded store); with neither, no email goes out and password
    /// recovery is off.
    #[arg(long, env = "WIZARD_EMAIL_LOG")]
    pub email_log: Option<bool>,

    /// Bearer token for the admin API, at least 32 characters; the admin API is
    /// off when unset (except on the embedded store, which generates one and prints it).
    #[arg(long, env = "WIZARD_ADMIN_TOKEN", hide_env_values = true, value_parser = quiet(AdminToken::parse))]
    pub admin_token: Option<AdminToken>,

    /// Create demo accounts at start-up (default: only with the embedded store).
    #[arg(long, env = "WIZARD_DEMO_USERS")]
    pub demo_users: Option<bool>,

    /// `iss` of issued tokens.
    #[arg(long, env = "WIZARD_JWT_ISSUER", default_value = "signin-wizard", value_parser = quiet(values::text))]
    pub jwt_issuer: String,

    /// `aud` of issued tokens.
    #[arg(long, env = "WIZARD_JWT_AUDIENCE", default_value = "signin-wizard", value_parser = quiet(values::text))]
    pub jwt_audience: String,

    /// RSA private key (PEM) to sign tokens with; when unset, a key is
    /// generated once and shared through the store.
    #[arg(long, env = "WIZARD_JWT_PRIVATE_KEY_FILE", value_parser = quiet(values::path))]
    pub jwt_private_key_file: Option<PathBuf>,

    /// Algorithm of the signing keys made from now on: the first one, and
    /// each rotation's (RS256 for B2Core clients; ES256 and EdDSA are faster).
    #[arg(long, env = "WIZARD_JWT_ALGORITHM", value_enum, default_value_t = SigningAlgorithm::RS256)]
    pub jwt_algorithm: SigningAlgorithm,

    /// Key-encryption key (32 bytes, base64): the keyring is sealed with it
    /// (AES-256-GCM) in the store. Without one it is stored in clear.
    #[arg(long, env = "WIZARD_KEK", hide_env_values = true, value_parser = quiet(values::secret), conflicts_with = "kek_file")]
    pub kek: Option<SecretString>,

    /// A file holding the key-encryption key, instead of WIZARD_KEK.
    #[arg(long, env = "WIZARD_KEK_FILE", value_parser = quiet(values::path))]
    pub kek_file: Option<PathBuf>,

    /// Access token lifetime, in seconds.
    #[arg(long, env = "WIZARD_ACCESS_TOKEN_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(u32).range(1..))]
    pub access_token_ttl_secs: u32,

    /// Refresh token lifetime, in seconds: a session not refreshed within
    /// it ends (the idle timeout).
    #[arg(long, env = "WIZARD_REFRESH_TOKEN_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u32).range(1..))]
    pub refresh_token_ttl_secs: u32,

    /// A session's absolute lifetime from sign-in, in seconds (30 days).
    #[arg(long, env = "WIZARD_SESSION_LIFETIME_SECS", default_value_t = 2_592_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub session_lifetime_secs: u32,

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

    /// The runtime policy until an admin changes it through the settings API.
    pub fn initial_policy(&self) -> Policy {
        Policy {
            max_attempts: self.lockout_max_attempts,
            attempts_window_secs: self.lockout_window_secs,
            block_secs: self.lockout_block_secs,
            wizard_ttl_secs: self.wizard_ttl_secs,
            ip_limit_per_minute: self.ip_limit_per_minute,
            recaptcha_enabled: self.recaptcha_site_key.is_some() && self.recaptcha_secret.is_some(),
            second_factor_required: self.require_second_factor,
        }
    }

    pub fn sms_code_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.sms_code_ttl_secs.into())
    }

    /// The operator's key-encryption key, if one is configured.
    pub fn kek(&self) -> anyhow::Result<Option<Kek>> {
        let text = match (&self.kek, &self.kek_file) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read WIZARD_KEK_FILE {}", path.display()))?
                .into(),
            (None, None) => return Ok(None),
        };
        Kek::parse(&text).map(Some)
    }

    /// The operator's signing key (`WIZARD_JWT_PRIVATE_KEY_FILE`), if any.
    pub fn operator_key(&self) -> anyhow::Result<Option<SecretString>> {
        self.jwt_private_key_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(SecretString::from)
                    .with_context(|| {
                        format!("cannot read WIZARD_JWT_PRIVATE_KEY_FILE {}", path.display())
                    })
            })
            .transpose()
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
        }
    }

    pub fn session_lifetimes(&self) -> Lifetimes {
        let absolute = chrono::Duration::seconds(self.session_lifetime_secs.into());
        Lifetimes {
            absolute,
            idle: chrono::Duration::seconds(self.refresh_token_ttl_secs.into()).min(absolute),
        }
    }
}
