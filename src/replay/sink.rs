//! `replay`'s own SMS gateway: the server's `WIZARD_SMS_WEBHOOK_URL` points
//! here, so a scenario reads the codes its fixtures' phones were sent. It
//! runs beside `replay`, never inside the server: nothing in the service can
//! hand out a code.
//!
//! It takes only the made-up numbers replay gives its fixtures (`+1555…`;
//! `+1999…` it refuses, as a gateway that cannot reach them would), so a
//! real person's code sent here by mistake is neither kept nor shown: the
//! service answers that person `sms_delivery_failed`. Its URLs carry a
//! random token, and it listens on loopback unless told otherwise.

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context as _, ensure};
use rand::Rng as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Numbers the sink receives for.
const REACHABLE_PREFIX: &str = "+1555";
/// Numbers the sink refuses (503): +1 999 is no North American area code.
pub const UNREACHABLE_PREFIX: &str = "+1999";
/// Most numbers the inbox holds a code for.
const MAX_NUMBERS: usize = 100_000;

/// The last code received per number. Shared with the HTTP handlers.
#[derive(Debug, Clone)]
pub struct Inbox {
    codes: Arc<Mutex<HashMap<String, String>>>,
    /// Made-up numbers differ within a sink: a random start, then a counter.
    next_number: Arc<AtomicU32>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            codes: Arc::default(),
            next_number: Arc::new(AtomicU32::new(rand::thread_rng().gen_range(0..50_000_000))),
        }
    }
}

/// Why the sink did not keep a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a number replay made up.
    NotOurs,
    /// A number in the unreachable range.
    Unreachable,
    Full,
}

impl Inbox {
    pub fn receive(&self, to: &str, code: &str) -> Result<(), Refused> {
        if to.starts_with(UNREACHABLE_PREFIX) {
            return Err(Refused::Unreachable);
        }
        if !to.starts_with(REACHABLE_PREFIX) {
            return Err(Refused::NotOurs);
        }
        let mut codes = self.lock();
        if codes.len() >= MAX_NUMBERS && !codes.contains_key(to) {
            return Err(Refused::Full);
        }
        codes.insert(to.to_owned(), code.to_owned());
        Ok(())
    }

    pub fn last_code_for(&self, to: &str) -> Option<String> {
        self.lock().get(to).cloned()
    }

    /// A number no other fixture of this sink has.
    pub fn new_number(&self, unreachable: bool) -> String {
        let n = self.next_number.fetch_add(1, Ordering::Relaxed) % 100_000_000;
        let prefix = if unreachable {
            UNREACHABLE_PREFIX
        } else {
            REACHABLE_PREFIX
        };
        format!("{prefix}{n:08}")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // The map stays consistent even if a holder panicked.
        self.codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The service's webhook message (`delivery::sms`).
#[derive(Deserialize)]
struct Message {
    to: String,
    code: String,
}

#[derive(Deserialize)]
struct LastQuery {
    to: String,
}

#[derive(Deserialize)]
struct NumberQuery {
    #[serde(default)]
    unreachable: bool,
}

/// How a sink is started.
pub struct SinkOptions {
    pub address: SocketAddr,
    /// The secret path segment of every URL; random when not given.
    pub token: Option<String>,
    /// Also serve the codes over HTTP (`GET .../sms/last`, for Hurl).
    pub serve_reads: bool,
    /// Listen beyond loopback.
    pub public: bool,
}

/// A running sink.
pub struct SmsSink {
    pub inbox: Inbox,
    pub address: SocketAddr,
    token: String,
}

impl SmsSink {
    /// Listens and serves until the process ends: `POST /TOKEN/sms` takes the
    /// service's webhook calls; with `serve_reads`, `GET /TOKEN/sms/last?to=`
    /// answers `{"to", "code"}` and `GET /TOKEN/numbers/new` a made-up number.
    pub async fn start(options: SinkOptions) -> anyhow::Result<Self> {
        ensure!(
            options.public || options.address.ip().is_loopback(),
            "the SMS sink shows codes to whoever reaches it: {} is not loopback (--sink-public to allow it)",
            options.address
        );
        let listener = TcpListener::bind(options.address)
            .with_context(|| format!("the SMS sink cannot listen on {}", options.address))?;
        let address = listener.local_addr()?;
        let token = options
            .token
            .unwrap_or_else(|| format!("{:032x}", rand::thread_rng().r#gen::<u128>()));
        ensure!(
            token.len() >= 16 && token.chars().all(|c| c.is_ascii_alphanumeric()),
            "the sink token: at least 16 letters or digits"
        );
        let inbox = Inbox::default();
        let shared = web::Data::new(inbox.clone());
        let scope = format!("/{token}");
        let serve_reads = options.serve_reads;
        let server = HttpServer::new(move || {
            let mut routes = web::scope(&scope).route("/sms", web::post().to(receive));
            if serve_reads {
                routes = routes
                    .route("/sms/last", web::get().to(last))
                    .route("/numbers/new", web::get().to(new_number));
            }
            App::new().app_data(shared.clone()).service(routes)
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        tokio::spawn(server);
        Ok(Self {
            inbox,
            address,
            token,
        })
    }

    /// What the service's `WIZARD_SMS_WEBHOOK_URL` must be.
    pub fn webhook_url(&self) -> String {
        format!("{}/sms", self.base_url())
    }

    /// The root of its URLs (Hurl's `sms_sink`).
    pub fn base_url(&self) -> String {
        format!("http://{}/{}", self.address, self.token)
    }
}

async fn receive(inbox: web::Data<Inbox>, message: web::Json<Message>) -> HttpResponse {
    match inbox.receive(&message.to, &message.code) {
        Ok(()) => HttpResponse::Accepted().finish(),
        Err(Refused::NotOurs) => {
            HttpResponse::UnprocessableEntity().body("not a number replay made up")
        }
        Err(Refused::Unreachable | Refused::Full) => HttpResponse::ServiceUnavailable().finish(),
    }
}

async fn last(inbox: web::Data<Inbox>, query: web::Query<LastQuery>) -> HttpResponse {
    match inbox.last_code_for(&query.to) {
        Some(code) => HttpResponse::Ok().json(serde_json::json!({ "to": query.to, "code": code })),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn new_number(inbox: web::Data<Inbox>, query: web::Query<NumberQuery>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "number": inbox.new_number(query.unreachable) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_keeps_only_numbers_replay_made_up() {
        let inbox = Inbox::default();
        let ours = inbox.new_number(false);
        assert_ne!(ours, inbox.new_number(false));
        assert_eq!(inbox.receive(&ours, "123456"), Ok(()));
        assert_eq!(inbox.last_code_for(&ours).as_deref(), Some("123456"));
        assert_eq!(
            inbox.receive("+4915112345678", "654321"),
            Err(Refused::NotOurs)
        );
        assert_eq!(inbox.last_code_for("+4915112345678"), None);
        assert_eq!(
            inbox.receive(&inbox.new_number(true), "1"),
            Err(Refused::Unreachable)
        );
    }
}
