//! Wiring: builds every part from the settings and binds the HTTP server.

use crate::captcha::Recaptcha;
use crate::clock::Clock;
use crate::config::Settings;
use crate::credentials::{OneTimeCodes, PasswordHasher, TokenIssuer, TotpVault};
use crate::delivery::{Mailer, SmsGateway};
use crate::demo::{self, DemoAccount};
use crate::domain::AdminToken;
use crate::http::{self, AdminApi, AdminParts, IpLimiter, MyAccount, TrustedProxies};
use crate::policy::LivePolicy;
use crate::second_factors::SecondFactors;
use crate::sessions::{RefreshKey, Sessions};
use crate::signin::SignIn;
use crate::signing_keys::SigningKeys;
use crate::store::{MemoryStore, RedisStore, RedisStoreConfig, Store};
use crate::wizard::RESET_CODE_TTL;
use actix_web::dev::Server;
use actix_web::middleware::Logger;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// How long an SMS gateway may take to accept a message.
const SMS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where email goes; said loudly when reset codes land in a shared
/// deployment's log, where whoever reads it can take accounts over.
fn mailer(settings: &Settings) -> anyhow::Result<Option<Mailer>> {
    let embedded = settings.redis_url.is_none();
    let mailer = Mailer::from_settings(settings, embedded)?;
    if !embedded && mailer.as_ref().is_some_and(Mailer::writes_to_log) {
        tracing::warn!(
            "WIZARD_EMAIL_LOG: password-reset codes are written to the log; \
             set WIZARD_SMTP_URL for real use"
        );
    }
    Ok(mailer)
}

pub struct Application {
    port: u16,
    server: Server,
    welcome: Welcome,
}

/// What the operator should be told once the service is up.
pub struct Welcome {
    pub backend: &'static str,
    /// Set when no token was configured and one was generated for this run.
    pub generated_admin_token: Option<AdminToken>,
    pub demo_accounts: Vec<DemoAccount>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::default()).await
    }

    /// Like [`Application::build`], with a clock tests can move.
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        // Every envelope's `meta.next` comes from the spec: it must read.
        crate::spec::Spec::load().context("wizard-spec/wizard.json, compiled in, does not read")?;
        crate::openapi::json().map_err(|e| {
            anyhow::anyhow!("wizard-spec/openapi.yaml, compiled in, does not read: {e}")
        })?;
        let store = open_store(&settings).await?;
        let signing_keys = Arc::new(SigningKeys::new(
            Arc::clone(&store),
            settings.kek()?,
            settings.jwt_algorithm,
            settings.operator_key()?,
            clock.clone(),
        ));
        if store.backend() != "embedded" && signing_keys.in_clear() {
            tracing::warn!(
                "the keyring (signing keys and pepper) and users' TOTP secrets are stored \
                 in clear in Redis: set WIZARD_KEK or WIZARD_KEK_FILE to seal them"
            );
        }
        let keyring = signing_keys.load().await?;
        let tokens = Arc::new(TokenIssuer::new(
            keyring.clone(),
            settings.token_settings(),
        )?);
        tokio::spawn(Arc::clone(&signing_keys).keep_fresh(Arc::clone(&tokens)));
        let passwords = Arc::new(
            PasswordHasher::new(
                settings.password_policy(),
                settings.hash_workers(),
                settings.hash_queue,
            )
            .await?,
        );
        let policy = Arc::new(LivePolicy::load(store.clone(), settings.initial_policy()).await?);
        if policy.get().recaptcha_enabled && settings.recaptcha_secret.is_none() {
            tracing::error!(
                "the stored settings turn reCAPTCHA on, but this instance has no reCAPTCHA keys: \
                 its login step answers 503 captcha_unavailable until they are set"
            );
        }
        tokio::spawn(Arc::clone(&policy).keep_fresh());
        let sms = match &settings.sms_webhook_url {
            Some(url) => SmsGateway::webhook(url.clone(), SMS_TIMEOUT)?,
            None => SmsGateway::Log,
        };
        let sessions = Arc::new(Sessions::new(
            Arc::clone(&store),
            Arc::clone(&tokens),
            RefreshKey::new(&keyring.code_pepper()?),
            settings.session_lifetimes(),
        ));
        let totp = TotpVault::new(settings.kek()?);
        let codes = OneTimeCodes::new(&keyring.code_pepper()?)?;
        let factors = Arc::new(SecondFactors {
            store: Arc::clone(&store),
            passwords: Arc::clone(&passwords),
            codes: codes.clone(),
            totp: totp.clone(),
            sessions: Arc::clone(&sessions),
            policy: Arc::clone(&policy),
            clock: clock.clone(),
            sms: sms.clone(),
            sms_code_ttl: settings.sms_code_ttl(),
            resend_cooldown: chrono::Duration::seconds(settings.sms_resend_cooldown_secs.into()),
            max_resends: settings.sms_max_resends,
        });
        let signin = web::Data::new(SignIn {
            store: Arc::clone(&store),
            passwords: Arc::clone(&passwords),
            codes,
            totp: totp.clone(),
            totp_issuer: settings.jwt_issuer.clone(),
            sms,
            mailer: mailer(&settings)?,
            sessions: Arc::clone(&sessions),
            clock: clock.clone(),
            policy: Arc::clone(&policy),
            captcha: recaptcha(&settings)?,
            codes_per_wizard: settings.code_attempts_per_wizard,
            sms_code_ttl: settings.sms_code_ttl(),
            reset_code_ttl: RESET_CODE_TTL,
            resend_cooldown: chrono::Duration::seconds(settings.sms_resend_cooldown_secs.into()),
            max_resends: settings.sms_max_resends,
            require_wizard_key: settings.require_wizard_key,
        });

        // The embedded store can only be reached through this process, so an
        // operator needs the admin API: make a token if none was configured.
        let generated_admin_token = (settings.admin_token.is_none()
            && settings.redis_url.is_none())
        .then(AdminToken::generate);
        let admin = settings
            .admin_token
            .as_ref()
            .or(generated_admin_token.as_ref())
            .map(|token| {
                web::Data::new(AdminApi::new(
                    token,
                    AdminParts {
                        store: Arc::clone(&store),
                        passwords: Arc::clone(&passwords),
                        policy: Arc::clone(&policy),
                        recaptcha_configured: signin.captcha.is_some(),
                        totp_issuer: settings.jwt_issuer.clone(),
                        totp: totp.clone(),
                        sessions: Arc::clone(&sessions),
                        clock: clock.clone(),
                        signing_keys: Arc::clone(&signing_keys),
                        tokens: Arc::clone(&tokens),
                    },
                ))
            });
        let demo_accounts = if settings.demo_users() {
            demo::create(store.as_ref(), &passwords, &totp).await?
        } else {
            Vec::new()
        };

        let proxies = TrustedProxies::new(settings.trusted_proxies.clone());
        let ip_limiter = web::Data::new(IpLimiter::for_wizard(
            Arc::clone(&policy),
            proxies.clone(),
            Arc::clone(&store),
        ));
        tokio::spawn(forget_idle_addresses(ip_limiter.clone().into_inner()));
        let admin_limiter = admin.as_ref().map(|_| {
            web::Data::new(IpLimiter::for_admin(
                settings.admin_ip_limit_per_minute,
                proxies,
                Arc::clone(&store),
            ))
        });
        if let Some(limiter) = &admin_limiter {
            tokio::spawn(forget_idle_addresses(limiter.clone().into_inner()));
        }

        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let backend = store.backend();
        let store = web::Data::new(store);
        let tokens = web::Data::new(tokens);
        let my_account = web::Data::new(MyAccount {
            sessions,
            factors,
            totp_issuer: settings.jwt_issuer.clone(),
            clock: clock.clone(),
        });
        let clock = web::Data::new(clock);
        let server = HttpServer::new(move || {
            let mut app = App::new()
                .wrap(Logger::new(r#"%a "%r" %s %b %Dms"#))
                .app_data(signin.clone())
                .app_data(store.clone())
                .app_data(tokens.clone())
                .app_data(my_account.clone())
                .app_data(clock.clone())
                .app_data(ip_limiter.clone());
            if let Some(admin) = &admin {
                app = app.app_data(admin.clone());
            }
            app.configure(|cfg| http::routes(cfg, admin_limiter.clone()))
        })
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            welcome: Welcome {
                backend,
                generated_admin_token,
                demo_accounts,
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &settings.redis_url {
        Some(url) => {
            let config = RedisStoreConfig {
                url: url.clone(),
                cluster: settings.redis_cluster,
                prefix: settings.redis_prefix.clone(),
                timeout: settings.redis_timeout(),
            };
            Arc::new(RedisStore::connect(&config).await?)
        }
        None => Arc::new(MemoryStore::new()),
    })
}

async fn forget_idle_addresses(limiter: Arc<IpLimiter>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticks.tick().await;
        limiter.forget_idle();
    }
}

fn recaptcha(settings: &Settings) -> anyhow::Result<Option<Recaptcha>> {
    match (&settings.recaptcha_site_key, &settings.recaptcha_secret) {
        (Some(site_key), Some(secret)) => Ok(Some(Recaptcha::new(
            site_key.clone(),
            secret.clone(),
            settings.recaptcha_verify_url.clone(),
            settings.recaptcha_hostnames.clone(),
        )?)),
        (None, None) => Ok(None),
        _ => anyhow::bail!(
            "set both WIZARD_RECAPTCHA_SITE_KEY and WIZARD_RECAPTCHA_SECRET, or neither"
        ),
    }
}
