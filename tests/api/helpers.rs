//! `TestApp`: a real server on a free port, with its own store, a fake SMS
//! gateway speaking HTTP, cheap argon2 and a clock the test can move.

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine;
use chrono::Duration;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use reqwest::StatusCode;
use serde_json::{Value, json};
use signin_wizard::clock::Clock;
use signin_wizard::config::Settings;
use signin_wizard::credentials::{AccessClaims, TotpSecret};
use signin_wizard::domain::AdminToken;
use signin_wizard::replay::mailbox::{MailSink, MailSinkOptions, MailTls, Mailbox, Recipients};
use signin_wizard::startup::Application;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use crate::redis_servers::{RedisCluster, RedisServer, shared_cluster_url};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Redis,
    /// A Redis Cluster of three primaries and three replicas.
    Cluster,
}

/// Every store: the conformance suite is every test that runs on all of them.
pub const BACKENDS: [Backend; 3] = [Backend::Memory, Backend::Redis, Backend::Cluster];

/// The stores several instances can share.
pub const SHARED_STORES: [Backend; 2] = [Backend::Redis, Backend::Cluster];

pub const ADMIN_TOKEN: &str = "test-admin-token-of-at-least-32-chars";

/// The Redis the ordinary tests share: WIZARD_TEST_REDIS_URL, or one
/// `redis-server` started for this test binary. Tests isolate by key prefix.
pub fn shared_redis_url() -> String {
    static SHARED: OnceLock<(String, Option<Mutex<RedisServer>>)> = OnceLock::new();
    SHARED
        .get_or_init(|| match std::env::var("WIZARD_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let server = RedisServer::spawn();
                (server.url(), Some(Mutex::new(server)))
            }
        })
        .0
        .clone()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An SMS gateway that records what it is sent, or fails on demand.
#[derive(Clone)]
pub struct FakeSms {
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
    failing: Arc<AtomicBool>,
}

impl FakeSms {
    pub async fn spawn() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}/sms",
            listener.local_addr().unwrap().port()
        );
        let state = (received.clone(), failing.clone());
        let server = HttpServer::new(move || {
            let state = state.clone();
            App::new().route(
                "/sms",
                web::post().to(move |body: web::Json<Value>| {
                    let (received, failing) = state.clone();
                    async move {
                        if failing.load(Ordering::SeqCst) {
                            return HttpResponse::InternalServerError().finish();
                        }
                        received.lock().unwrap().push(body.into_inner());
                        HttpResponse::Accepted().finish()
                    }
                }),
            )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self {
            url,
            received,
            failing,
        }
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn messages(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// The code of the last message sent to `to`.
    pub fn last_code_for(&self, to: &str) -> Option<String> {
        self.messages()
            .iter()
            .rev()
            .find(|m| m["to"] == to)
            .map(|m| m["code"].as_str().unwrap().to_owned())
    }
}

/// A reCAPTCHA `siteverify` endpoint: tokens starting with `pass-` succeed
/// once each (like Google's, a token cannot be used twice); `slow` makes it
/// answer after 3 s.
#[derive(Clone)]
pub struct FakeRecaptcha {
    pub url: String,
    pub remote_ips: Arc<Mutex<Vec<String>>>,
}

pub const RECAPTCHA_SECRET: &str = "test-recaptcha-secret";

impl FakeRecaptcha {
    pub async fn spawn(slow: bool) -> Self {
        let used = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
        let remote_ips = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}/siteverify",
            listener.local_addr().unwrap().port()
        );
        let state = (used, remote_ips.clone());
        let server = HttpServer::new(move || {
            let state = state.clone();
            App::new().route(
                "/siteverify",
                web::post().to(
                    move |form: web::Form<std::collections::HashMap<String, String>>| {
                        let (used, remote_ips) = state.clone();
                        async move {
                            if slow {
                                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                            }
                            let response = form.get("response").cloned().unwrap_or_default();
                            remote_ips
                                .lock()
                                .unwrap()
                                .push(form.get("remoteip").cloned().unwrap_or_default());
                            let fresh = used.lock().unwrap().insert(response.clone());
                            let success = form.get("secret").map(String::as_str)
                                == Some(RECAPTCHA_SECRET)
                                && response.starts_with("pass-")
                                && fresh;
                            let errors: Vec<&str> = if success {
                                vec![]
                            } else {
                                vec!["invalid-input-response"]
                            };
                            HttpResponse::Ok()
                                .json(json!({ "success": success, "hostname": "portal.example", "error-codes": errors }))
                        }
                    },
                ),
            )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { url, remote_ips }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Clock,
    pub sms: FakeSms,
    /// The mail server the app sends to (an SMTP server of the test's own).
    pub mail: Mailbox,
    pub settings: Settings,
}

/// Settings for a test instance: free port, cheap argon2, fresh key prefix.
pub fn test_settings(backend: Backend, sms: &FakeSms) -> Settings {
    let mut settings =
        Settings::from_env().expect("WIZARD_* variables in the environment are valid");
    settings.bind = "127.0.0.1:0".parse().unwrap();
    settings.redis_url = match backend {
        Backend::Memory => None,
        Backend::Redis => Some(shared_redis_url().parse().unwrap()),
        Backend::Cluster => Some(shared_cluster_url().parse().unwrap()),
    };
    settings.redis_cluster = matches!(backend, Backend::Cluster);
    settings.redis_prefix = format!("test:{}:", uuid::Uuid::new_v4());
    settings.sms_webhook_url = Some(sms.url.parse().unwrap());
    settings.admin_token = Some(AdminToken::parse(ADMIN_TOKEN).unwrap());
    settings.demo_users = Some(false);
    settings.argon2_memory_kib = 64;
    settings.argon2_iterations = 1;
    settings.jwt_issuer = "https://signin.test".into();
    settings.jwt_audience = "portal".into();
    // Every test client is 127.0.0.1; the rate-limit tests turn the limits on.
    settings.ip_limit_per_minute = 0;
    settings.admin_ip_limit_per_minute = 0;
    settings
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    let sms = FakeSms::spawn().await;
    let settings = test_settings(backend, &sms);
    spawn_with(settings, sms).await
}

/// An app whose password checks are slow (about a second here) and run one
/// at a time, so that a request sits between loading its wizard and saving
/// it for a while; a wizard may try many codes, leaving the account's
/// lockout as the only limit.
pub async fn slow_hashing_app(backend: Backend) -> TestApp {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(backend, &sms);
    settings.argon2_memory_kib = 128 * 1024;
    settings.argon2_iterations = 4;
    settings.hash_workers = Some(1);
    settings.code_attempts_per_wizard = 100;
    spawn_with(settings, sms).await
}

/// Two instances sharing one Redis (and one key prefix).
/// Two instances sharing one store (`Redis` or `Cluster`) under one key prefix.
pub async fn spawn_pair(backend: Backend) -> (TestApp, TestApp) {
    let sms = FakeSms::spawn().await;
    let settings = test_settings(backend, &sms);
    (
        spawn_with(settings.clone(), sms.clone()).await,
        spawn_with(settings, sms).await,
    )
}

/// Starts the app; unless the settings name a mail server or turn email
/// off, it sends email to an SMTP server of its own (`TestApp::mail`).
pub async fn spawn_with(mut settings: Settings, sms: FakeSms) -> TestApp {
    let sink = MailSink::start(MailSinkOptions::loopback(MailTls::Plain, Recipients::Any))
        .await
        .expect("the test's SMTP server starts");
    if settings.smtp_url.is_none() && settings.email_log != Some(false) {
        settings.smtp_url = Some(sink.smtp_url().parse().unwrap());
    }
    let clock = Clock::default();
    let app = Application::build_with_clock(settings.clone(), clock.clone())
        .await
        .expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        clock,
        sms,
        mail: sink.mailbox,
        settings,
    }
}

/// A user created through the admin API, with what a test needs to sign in.
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub totp: Option<TotpSecret>,
    pub phone: Option<String>,
}

#[derive(Default)]
pub struct UserSpec {
    pub totp: bool,
    pub phone: Option<&'static str>,
    pub force_password_reset: bool,
    pub second_factor_required: bool,
}

impl UserSpec {
    /// An account with an authenticator app.
    pub fn totp() -> Self {
        Self {
            totp: true,
            ..Self::default()
        }
    }

    /// An account with a phone for SMS codes.
    pub fn sms(phone: &'static str) -> Self {
        Self {
            phone: Some(phone),
            ..Self::default()
        }
    }
}

pub fn fingerprint(user_agent: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({ "user_agent": user_agent }).to_string())
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The stable error code of an error envelope.
    pub fn error(&self) -> &str {
        self.body["data"]["error"]["code"]
            .as_str()
            .unwrap_or("<none>")
    }

    pub fn workflow(&self) -> &str {
        self.body["workflow"].as_str().unwrap_or("<none>")
    }

    /// Every envelope has its five fields, and `code` equals the HTTP status.
    pub fn assert_envelope(&self) {
        for field in ["code", "data", "done", "uuid", "workflow"] {
            assert!(
                self.body.get(field).is_some(),
                "envelope lacks `{field}`: {}",
                self.body
            );
        }
        assert_eq!(
            self.body["code"],
            self.status.as_u16(),
            "code != status: {}",
            self.body
        );
    }
}

impl TestApp {
    /// The same app, reached as if from `ip` through a proxy (X-Forwarded-For).
    pub fn reached_from(&self, ip: &str) -> TestApp {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("X-Forwarded-For", ip.parse().unwrap());
        TestApp {
            address: self.address.clone(),
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            clock: self.clock.clone(),
            sms: self.sms.clone(),
            mail: self.mail.clone(),
            settings: self.settings.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap();
        reply(response).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        reply(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn start(&self) -> String {
        let reply = self.get("/api/v2/my/signin/wizard").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["uuid"].as_str().unwrap().to_owned()
    }

    pub async fn signin(&self, uuid: &str, email: &str, password: &str) -> Reply {
        let body = json!({ "uuid": uuid, "email": email, "password": password, "device_fingerprint": fingerprint("test-agent/1.0") });
        self.post("/api/v2/my/signin", body).await
    }

    pub async fn signin_with_captcha(
        &self,
        uuid: &str,
        email: &str,
        password: &str,
        captcha: &str,
    ) -> Reply {
        let body = json!({ "uuid": uuid, "email": email, "password": password, "device_fingerprint": fingerprint("test-agent/1.0"), "recaptchaResponse": captcha });
        self.post("/api/v2/my/signin", body).await
    }

    pub async fn choose(&self, uuid: &str, factor: &str) -> Reply {
        self.post(
            "/api/v2/my/signin/2fa",
            json!({ "uuid": uuid, "type": factor }),
        )
        .await
    }

    pub async fn totp(&self, uuid: &str, code: &str) -> Reply {
        self.post(
            "/api/v2/my/2fa/google",
            json!({ "uuid": uuid, "code": code }),
        )
        .await
    }

    pub async fn sms_code(&self, uuid: &str, code: &str) -> Reply {
        self.post("/api/v2/my/2fa/sms", json!({ "uuid": uuid, "code": code }))
            .await
    }

    /// The last SMS code sent to the user's phone.
    pub fn sms_code_of(&self, user: &TestUser) -> String {
        self.sms
            .last_code_for(user.phone.as_deref().expect("a user with a phone"))
            .expect("an SMS was sent")
    }

    /// `POST /signin/password/restore`: with `email` at `login`, without later.
    pub async fn restore(&self, uuid: &str, email: Option<&str>) -> Reply {
        let mut body = json!({ "uuid": uuid });
        if let Some(email) = email {
            body["email"] = json!(email);
        }
        self.post("/api/v2/my/signin/password/restore", body).await
    }

    /// `POST /signin/password/reset`, the confirmation equal to the password.
    pub async fn reset(&self, uuid: &str, code: &str, password: &str) -> Reply {
        let body = json!({ "uuid": uuid, "code": code, "password": password, "password_confirmation": password });
        self.post("/api/v2/my/signin/password/reset", body).await
    }

    /// The last code emailed to `email`.
    pub fn email_code_to(&self, email: &str) -> String {
        self.mail.last_code_for(email).expect("a code was emailed")
    }

    /// A started wizard at which `user` has given the right password.
    pub async fn past_password(&self, user: &TestUser) -> String {
        let uuid = self.start().await;
        let reply = self.signin(&uuid, &user.email, &user.password).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        uuid
    }

    /// The code the user's authenticator app shows now (by this app's clock).
    pub fn totp_now(&self, user: &TestUser) -> String {
        user.totp
            .as_ref()
            .unwrap()
            .code_at(self.clock.now())
            .unwrap()
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `PATCH /api/v2/admin/users/{id}` with `change`; the status.
    pub async fn patch_user(&self, user: &TestUser, change: Value) -> StatusCode {
        let path = format!("/api/v2/admin/users/{}", user.id);
        self.admin(reqwest::Method::PATCH, &path, Some(change))
            .await
            .0
    }

    /// `DELETE /api/v2/admin/users/{id}`; the status.
    pub async fn delete_user(&self, user: &TestUser) -> StatusCode {
        let path = format!("/api/v2/admin/users/{}", user.id);
        self.admin(reqwest::Method::DELETE, &path, None).await.0
    }

    /// `POST /api/v2/admin/users/{id}/unlock`.
    pub async fn unlock(&self, user: &TestUser) -> StatusCode {
        let path = format!("/api/v2/admin/users/{}/unlock", user.id);
        self.admin(reqwest::Method::POST, &path, None).await.0
    }

    /// `PUT /api/v2/admin/settings` with `patch`.
    pub async fn put_settings(&self, patch: Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::PUT, "/api/v2/admin/settings", Some(patch))
            .await
    }

    pub async fn create_user(&self, spec: UserSpec) -> TestUser {
        let email = format!("user-{}@Example.test", uuid::Uuid::new_v4().simple());
        let password = format!("pw-{}", uuid::Uuid::new_v4());
        let totp = spec.totp.then(TotpSecret::generate);
        let body = json!({
            "email": email,
            "password": password,
            "totp_secret": totp.as_ref().map(|s| s.expose_base32()),
            "phone": spec.phone,
            "force_password_reset": spec.force_password_reset,
            "second_factor_required": spec.second_factor_required,
        });
        let (status, created) = self
            .admin(reqwest::Method::POST, "/api/v2/admin/users", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        TestUser {
            id: created["id"].as_str().unwrap().to_owned(),
            email,
            password,
            totp,
            phone: spec.phone.map(|p| p.replace([' ', '-'], "")),
        }
    }

    /// Verifies an access token against this app's published JWKS.
    pub async fn verify_access_token(&self, token: &str) -> AccessClaims {
        let jwks: JwkSet = self
            .client
            .get(format!("{}/.well-known/jwks.json", self.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        let kid = header.kid.expect("tokens name their key");
        let jwk = jwks.find(&kid).expect("the key is published");
        // The algorithm the published key says, never the token's own word.
        let algorithm: Algorithm = jwk
            .common
            .key_algorithm
            .expect("keys name their algorithm")
            .to_string()
            .parse()
            .unwrap();
        assert_eq!(header.alg, algorithm);
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[&self.settings.jwt_audience]);
        validation.set_issuer(&[&self.settings.jwt_issuer]);
        jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
            .expect("the token verifies")
            .claims
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// A request with `Authorization: Bearer <token>` (and a JSON body if given).
    pub async fn with_bearer(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.unwrap()).await
    }

    pub async fn get_with_bearer(&self, path: &str, token: &str) -> Reply {
        self.with_bearer(reqwest::Method::GET, path, token, None)
            .await
    }

    /// `POST /api/v2/my/refresh` with `token`.
    pub async fn refresh(&self, token: &str) -> Reply {
        self.post("/api/v2/my/refresh", json!({ "refreshToken": token }))
            .await
    }

    /// Signs a password-only `user` in from a device with `user_agent`: the session's tokens.
    pub async fn sign_in_as(&self, user: &TestUser, user_agent: &str) -> Tokens {
        let uuid = self.start().await;
        let body = json!({ "uuid": uuid, "email": user.email, "password": user.password, "device_fingerprint": fingerprint(user_agent) });
        let reply = self.post("/api/v2/my/signin", body).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        Tokens::of(&reply)
    }
}

/// An access and refresh token, as an answer carried them.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    pub fn of(reply: &Reply) -> Tokens {
        let token = |name: &str| {
            reply.body["data"][name]["token"]
                .as_str()
                .unwrap_or_else(|| panic!("no {name}: {}", reply.body))
                .to_owned()
        };
        Tokens {
            access: token("accessToken"),
            refresh: token("refreshToken"),
        }
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    Reply { status, body }
}

/// A six-digit code other than `code` (never valid in the same window).
pub fn other_code(code: &str) -> String {
    let n: u64 = code.parse().expect("digits");
    let modulus = 10u64.pow(u32::try_from(code.len()).unwrap());
    format!(
        "{:0width$}",
        (n + modulus / 2) % modulus,
        width = code.len()
    )
}

/// What a camera reads from a QR code in a PNG `data:` URL.
pub fn read_qr(data_url: &str) -> String {
    let png = base64::engine::general_purpose::STANDARD
        .decode(
            data_url
                .strip_prefix("data:image/png;base64,")
                .expect("a PNG data URL"),
        )
        .unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let width = info.width as usize;
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(width, info.height as usize, |x, y| {
            pixels[y * width + x]
        });
    let grids = image.detect_grids();
    let [grid] = grids.as_slice() else {
        panic!("{} QR codes found", grids.len())
    };
    grid.decode().unwrap().1
}
