//! The `signin-wizard` command line: `serve` (the default), `user add`, `totp-code`.

use crate::config::Settings;
use crate::credentials::{PasswordHasher, TotpSecret};
use crate::domain::{Email, NewPassword, PhoneNumber};
use crate::spec::{self, Spec};
use crate::startup::{Application, open_store};
use crate::users::{self, NewUser, UserView};
use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

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
        totp_secret,
        phone: add.phone.as_deref().map(PhoneNumber::parse).transpose()?,
        force_password_reset: add.force_password_reset,
    };
    if add.settings.redis_url.is_some() {
        let store = open_store(&add.settings).await?;
        let passwords = PasswordHasher::new(add.settings.password_policy(), 1, 0).await?;
        let user = users::register(store.as_ref(), &passwords, new).await?;
        return Ok(user.view(Some(&add.settings.jwt_issuer)));
    }
    let server = match add.server {
        Some(url) => url,
        None => format!("http://{}", add.settings.bind).parse()?,
    };
    let token = add
        .settings
        .admin_token
        .context("set WIZARD_ADMIN_TOKEN (printed by the running server) to use its admin API")?;
    let body = serde_json::json!({
        "email": new.email,
        "password": new.password.expose(),
        "totp_secret": new.totp_secret.map(String::from),
        "phone": new.phone,
        "force_password_reset": new.force_password_reset,
    });
    let response = reqwest::Client::new()
        .post(server.join("api/v2/admin/users")?)
        .bearer_auth(token.expose())
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the admin API at {server}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "the admin API answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    response
        .json()
        .await
        .context("reading the admin API's answer")
}
