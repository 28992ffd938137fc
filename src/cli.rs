//! The `signin-wizard` command line: `serve` (the default), `user add`,
//! `totp-code`, `spec`, `replay`, `keys rotate`.

use crate::clock::Clock;
use crate::config::Settings;
use crate::credentials::{PasswordHasher, SigningAlgorithm, TotpSecret, TotpVault};
use crate::domain::AdminToken;
use crate::domain::{Email, NewPassword, PhoneNumber};
use crate::replay::mailbox::{MailSinkOptions, MailTls, Recipients};
use crate::replay::{self, MailSink, ScenarioReport, SmsSink, Target, Time};
use crate::signing_keys::SigningKeys;
use crate::spec::{self, Spec};
use crate::startup::{Application, open_store};
use crate::users::{self, NewUser, UserView};
use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "signin-wizard",
    version,
    about = "A multi-step sign-in service (password, TOTP, SMS) speaking the B2Core sign-in API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (what happens with no command).
    Serve {
        #[command(flatten)]
        settings: Settings,
    },
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Print the current authenticator-app code for a base32 TOTP secret.
    TotpCode { secret: String },
    /// Print the state machine from wizard-spec/.
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Run QA scenarios (wizard-spec/scenarios/) against a server, or export them.
    Replay(ReplayArgs),
    /// Manage the token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key: published at once, signing five minutes later;
    /// keys no token needs any more leave. Straight in Redis when
    /// WIZARD_REDIS_URL is set, otherwise through a running server's admin API.
    Rotate(RotateKeys),
    /// Seal a keyring stored in clear with the KEK (WIZARD_KEK or
    /// WIZARD_KEK_FILE), in Redis, once every instance runs this version;
    /// then rotate: the keys were readable until now.
    Seal {
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Debug, Args)]
pub struct RotateKeys {
    /// The new key's algorithm (default: WIZARD_JWT_ALGORITHM).
    #[arg(long, value_enum)]
    pub algorithm: Option<SigningAlgorithm>,
    /// The running server whose admin API to use (default: http://WIZARD_BIND).
    #[arg(long)]
    pub server: Option<reqwest::Url>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReplayArgs {
    #[command(subcommand)]
    pub action: Option<ReplayAction>,
    #[command(flatten)]
    pub run: ReplayRun,
}

#[derive(Debug, Args)]
pub struct ReplayRun {
    /// Scenario files or folders of them.
    #[arg(default_value = replay::SHIPPED)]
    pub paths: Vec<PathBuf>,
    /// The server to run them against (its admin API must be on).
    #[arg(long, required_unless_present = "spawn", conflicts_with = "spawn")]
    pub base_url: Option<reqwest::Url>,
    /// The server's admin token (fixtures are created through the admin API).
    #[arg(
        long,
        env = "WIZARD_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "spawn"
    )]
    pub admin_token: Option<SecretString>,
    #[command(flatten)]
    pub sink: SinkArgs,
    /// Where replay's SMTP mailbox listens (codes mailed to the fixtures);
    /// the server's WIZARD_SMTP_URL must be the URL it prints.
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub mail_sink: SocketAddr,
    /// Start a server in this process instead (embedded store, other
    /// settings from WIZARD_* as for `serve`; its SMS and email go to the
    /// sinks; waits move its clock).
    #[arg(long)]
    pub spawn: bool,
    /// Also run scenarios that change the service's settings (for
    /// everyone, while they run): only on an instance of your own.
    #[arg(long)]
    pub allow_settings_changes: bool,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Scenarios run at the same time (those that change settings or wait run alone).
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
}

/// Where replay's SMS sink listens.
#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Its address; the server's WIZARD_SMS_WEBHOOK_URL must be the URL it prints.
    #[arg(long = "sms-sink", default_value = "127.0.0.1:9797")]
    pub address: SocketAddr,
    /// The secret path segment of its URLs (random if not given, so give it
    /// to keep the server's webhook URL from one run to the next).
    #[arg(long, env = "REPLAY_SINK_TOKEN", hide_env_values = true)]
    pub sink_token: Option<String>,
    /// Listen beyond loopback, the mailbox too (whoever reaches a sink can
    /// read its codes).
    #[arg(long)]
    pub sink_public: bool,
}

impl SinkArgs {
    fn options(&self, serve_reads: bool) -> replay::sink::SinkOptions {
        replay::sink::SinkOptions {
            address: self.address,
            token: self.sink_token.clone(),
            serve_reads,
            public: self.sink_public,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ReplayAction {
    /// Write each scenario as a file for another tool.
    Export {
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Also export scenarios that change the service's settings.
        #[arg(long)]
        with_settings: bool,
        #[arg(default_value = replay::SHIPPED)]
        paths: Vec<PathBuf>,
    },
    /// Run only the SMS sink, for exported Hurl files: it prints the URL for
    /// the server's WIZARD_SMS_WEBHOOK_URL and Hurl's `sms_sink` variable.
    Sink {
        #[command(flatten)]
        sink: SinkArgs,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    Hurl,
}

#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// The spec as JSON (what GET /api/v2/my/signin/wizard/spec serves).
    Json,
    /// A Mermaid state diagram of its transitions.
    Mermaid,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user: straight into Redis when WIZARD_REDIS_URL is set,
    /// otherwise through a running server's admin API.
    Add(AddUser),
}

#[derive(Debug, Args)]
pub struct AddUser {
    #[arg(long)]
    pub email: String,
    /// The password (prefer --password-stdin: arguments show up in `ps`).
    #[arg(
        long,
        env = "WIZARD_NEW_USER_PASSWORD",
        hide_env_values = true,
        required_unless_present = "password_stdin"
    )]
    pub password: Option<SecretString>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Enrol an authenticator app: a secret is generated and its otpauth:// URI printed.
    #[arg(long)]
    pub totp: bool,
    /// Phone number for SMS codes, in international form.
    #[arg(long)]
    pub phone: Option<String>,
    /// The user must reset the password at the next sign-in.
    #[arg(long)]
    pub force_password_reset: bool,
    /// This user must have a second factor: without one, the next sign-in
    /// enrols an authenticator app (`--require-second-factor` is everyone's).
    #[arg(long)]
    pub second_factor_required: bool,
    /// The running server whose admin API to use (default: http://WIZARD_BIND).
    #[arg(long)]
    pub server: Option<reqwest::Url>,
    #[command(flatten)]
    pub settings: Settings,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(Settings::from_env()?).await,
        Some(Command::Serve { settings }) => serve(settings).await,
        Some(Command::User(UserCommand::Add(add))) => {
            let view = add_user(add).await?;
            println!("{}", serde_json::to_string_pretty(&view)?);
            Ok(())
        }
        Some(Command::Spec(SpecCommand::Json)) => {
            print!("{}", spec::JSON);
            Ok(())
        }
        Some(Command::Spec(SpecCommand::Mermaid)) => {
            print!("{}", Spec::load()?.mermaid());
            Ok(())
        }
        Some(Command::Replay(args)) => replay_command(args).await,
        Some(Command::Keys(KeysCommand::Rotate(rotate))) => rotate_keys(rotate).await,
        Some(Command::Keys(KeysCommand::Seal { settings })) => {
            anyhow::ensure!(
                settings.redis_url.is_some(),
                "the embedded store lives in its process and is never stored: nothing to seal"
            );
            let keys = SigningKeys::new(
                open_store(&settings).await?,
                settings.kek()?,
                settings.jwt_algorithm,
                None,
                Clock::default(),
            );
            match keys.seal_stored().await? {
                true => println!(
                    "sealed; now rotate the signing keys (`keys rotate`): they were stored in clear until now"
                ),
                false => println!("nothing in clear to seal"),
            }
            Ok(())
        }
        Some(Command::TotpCode { secret }) => {
            let secret = TotpSecret::parse(&secret)?;
            println!(
                "{}",
                secret
                    .code_at(chrono::Utc::now())
                    .context("the clock is out of range")?
            );
            Ok(())
        }
    }
}

async fn replay_command(args: ReplayArgs) -> anyhow::Result<()> {
    let spec = Spec::load()?;
    match args.action {
        Some(ReplayAction::Export {
            format: ExportFormat::Hurl,
            out,
            with_settings,
            paths,
        }) => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for scenario in replay::scenario::load_all(&paths, &spec)? {
                if scenario.settings.is_some() && !with_settings {
                    println!(
                        "skipped {} (it changes the service's settings: --with-settings)",
                        scenario.name
                    );
                    continue;
                }
                // Scenario names are unique and safe as file names.
                let file = out.join(format!("{}.hurl", scenario.name));
                let text = replay::hurl::export(&scenario)
                    .with_context(|| format!("in {}", scenario.file.display()))?;
                std::fs::write(&file, text)
                    .with_context(|| format!("writing {}", file.display()))?;
                println!("{}", file.display());
            }
            Ok(())
        }
        Some(ReplayAction::Sink { sink }) => {
            let sink = SmsSink::start(sink.options(true)).await?;
            println!("WIZARD_SMS_WEBHOOK_URL={}", sink.webhook_url());
            println!("SMS_SINK={}", sink.base_url());
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        None => {
            let run = args.run;
            let scenarios = replay::scenario::load_all(&run.paths, &spec)?;
            let target = replay_target(&run).await?;
            let reports = replay::run_all(&scenarios, &target, run.jobs, |report| {
                print!("{}", replay::report::console(report));
            })
            .await;
            println!("{}", replay::report::totals(&reports));
            if let Some(file) = &run.junit {
                std::fs::write(file, replay::report::junit(&reports)?)
                    .with_context(|| format!("writing {}", file.display()))?;
            }
            if reports.iter().any(ScenarioReport::failed) {
                bail!("some scenarios failed")
            }
            Ok(())
        }
    }
}

/// The server the scenarios run against: the one named, or one started here.
async fn replay_target(run: &ReplayRun) -> anyhow::Result<Target> {
    let client = reqwest::Client::new();
    if !run.spawn {
        let sink = SmsSink::start(run.sink.options(false)).await?;
        println!(
            "SMS sink: the server's WIZARD_SMS_WEBHOOK_URL must be {}",
            sink.webhook_url()
        );
        let mail = MailSink::start(MailSinkOptions {
            address: run.mail_sink,
            public: run.sink.sink_public,
            tls: MailTls::Plain,
            recipients: Recipients::Replay,
        })
        .await?;
        println!(
            "mailbox: the server's WIZARD_SMTP_URL must be {}",
            mail.smtp_url()
        );
        return Ok(Target {
            base_url: run.base_url.clone().context("give --base-url or --spawn")?,
            admin_token: run
                .admin_token
                .clone()
                .context("give --admin-token (or WIZARD_ADMIN_TOKEN): fixtures are made through the admin API")?,
            inbox: sink.inbox,
            mailbox: mail.mailbox,
            time: Time::Real,
            client,
            may_change_settings: run.allow_settings_changes,
        });
    }
    let sink = SmsSink::start(replay::sink::SinkOptions {
        address: "127.0.0.1:0".parse()?,
        token: None,
        serve_reads: false,
        public: false,
    })
    .await?;
    let mail = MailSink::start(MailSinkOptions::loopback(
        MailTls::Plain,
        Recipients::Replay,
    ))
    .await?;
    let mut settings = Settings::from_env()?;
    let token = AdminToken::generate();
    settings.bind = "127.0.0.1:0".parse()?;
    // Its own store: nothing of the run outlives it.
    settings.redis_url = None;
    settings.sms_webhook_url = Some(sink.webhook_url().parse()?);
    settings.smtp_url = Some(mail.smtp_url().parse()?);
    settings.smtp_ca_file = None;
    settings.admin_token = Some(token.clone());
    settings.demo_users = Some(false);
    // Every scenario comes from 127.0.0.1; the rate-limit scenario sets its own limit.
    settings.ip_limit_per_minute = 0;
    settings.admin_ip_limit_per_minute = 0;
    let clock = Clock::default();
    let app = Application::build_with_clock(settings, clock.clone()).await?;
    let base_url: reqwest::Url = format!("http://127.0.0.1:{}", app.port()).parse()?;
    println!("replay: started a server at {base_url}");
    tokio::spawn(app.run_until_stopped());
    Ok(Target {
        base_url,
        admin_token: SecretString::from(token.expose().to_owned()),
        inbox: sink.inbox,
        mailbox: mail.mailbox,
        time: Time::Shared(clock),
        client,
        may_change_settings: true,
    })
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings.clone()).await?;
    print_welcome(&app, &settings);
    app.run_until_stopped()
        .await
        .context("the HTTP server failed")
}

fn print_welcome(app: &Application, settings: &Settings) {
    let welcome = app.welcome();
    let base = format!("http://{}:{}", settings.bind.ip(), app.port());
    println!(
        "signin-wizard listening on {base} ({} store)",
        welcome.backend
    );
    println!("  start a sign-in:  curl -s {base}/api/v2/my/signin/wizard");
    println!("  public keys:      {base}/.well-known/jwks.json");
    if let Some(token) = &welcome.generated_admin_token {
        println!(
            "  admin API token (generated for this run; set WIZARD_ADMIN_TOKEN to choose one):"
        );
        println!("    export WIZARD_ADMIN_TOKEN={}", token.expose());
    }
    if !welcome.demo_accounts.is_empty() {
        println!(
            "  demo accounts (password for all: {}):",
            welcome.demo_accounts[0].password
        );
        for account in &welcome.demo_accounts {
            println!("    {:<18} {}", account.email.as_str(), account.what);
            if let Some(secret) = &account.totp_secret {
                println!(
                    "      TOTP secret {}  (current code: signin-wizard totp-code {0})",
                    secret.expose_base32()
                );
                if let Some(uri) =
                    secret.provisioning_uri(&settings.jwt_issuer, account.email.as_str())
                {
                    println!("      {uri}");
                }
            }
        }
    }
}

async fn rotate_keys(rotate: RotateKeys) -> anyhow::Result<()> {
    let settings = rotate.settings;
    if settings.redis_url.is_some() {
        let store = open_store(&settings).await?;
        let keys = SigningKeys::new(
            store,
            settings.kek()?,
            settings.jwt_algorithm,
            settings.operator_key()?,
            Clock::default(),
        );
        let keep_for = chrono::Duration::seconds(settings.access_token_ttl_secs.into())
            + crate::credentials::LEEWAY;
        let keyring = keys.rotate(rotate.algorithm, keep_for).await?;
        for key in keyring.keys() {
            println!(
                "{}\t{}\tsigns from {}",
                key.signer()?.kid(),
                key.algorithm,
                crate::clock::rfc3339(key.signs_from)
            );
        }
        return Ok(());
    }
    let body = serde_json::json!({ "algorithm": rotate.algorithm });
    let answer =
        post_to_admin_api(&settings, rotate.server, "api/v2/admin/keys/rotate", &body).await?;
    println!("{answer}");
    Ok(())
}

/// POSTs `body` to the running server's admin API (at `server`, or where
/// `serve` would listen) with `WIZARD_ADMIN_TOKEN`; the answer's text.
async fn post_to_admin_api(
    settings: &Settings,
    server: Option<reqwest::Url>,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<String> {
    let server = match server {
        Some(url) => url,
        None => format!("http://{}", settings.bind).parse()?,
    };
    let token = settings
        .admin_token
        .as_ref()
        .context("set WIZARD_ADMIN_TOKEN (printed by the running server) to use its admin API")?;
    let response = reqwest::Client::new()
        .post(server.join(path)?)
        .bearer_auth(token.expose())
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the admin API at {server}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("the admin API answered {status}: {text}");
    }
    Ok(text)
}

async fn add_user(add: AddUser) -> anyhow::Result<UserView> {
    let password = match (add.password, add.password_stdin) {
        (_, true) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            SecretString::from(line.trim_end_matches(['\r', '\n']).to_owned())
        }
        (Some(password), false) => password,
        (None, false) => bail!("give --password or --password-stdin"),
    };
    let totp_secret = add.totp.then(TotpSecret::generate);
    let new = NewUser {
        email: Email::parse(&add.email)?,
        password: NewPassword::parse(password)?,
        totp_secret: totp_secret.clone(),
        phone: add.phone.as_deref().map(PhoneNumber::parse).transpose()?,
        force_password_reset: add.force_password_reset,
        second_factor_required: add.second_factor_required,
    };
    if add.settings.redis_url.is_some() {
        let store = open_store(&add.settings).await?;
        let passwords = PasswordHasher::new(add.settings.password_policy(), 1, 0).await?;
        let vault = TotpVault::new(add.settings.kek()?);
        let user = users::register(store.as_ref(), &passwords, &vault, new).await?;
        let enrolled = totp_secret
            .as_ref()
            .map(|s| (add.settings.jwt_issuer.as_str(), s));
        return Ok(user.view(enrolled));
    }
    let body = serde_json::json!({
        "email": new.email,
        "password": new.password.expose(),
        "totp_secret": new.totp_secret.map(String::from),
        "phone": new.phone,
        "force_password_reset": new.force_password_reset,
        "second_factor_required": new.second_factor_required,
    });
    let answer = post_to_admin_api(&add.settings, add.server, "api/v2/admin/users", &body).await?;
    serde_json::from_str(&answer).context("reading the admin API's answer")
}
