//! `replay`'s own mail server: the service's `WIZARD_SMTP_URL` points here,
//! so a scenario reads the codes mailed to its fixtures, and the integration
//! tests read whole messages. It speaks real SMTP (see `session`) in clear,
//! with STARTTLS offered, or with implicit TLS, and parses what it receives
//! as MIME. Like the SMS sink it runs beside the service, never inside it,
//! and listens on loopback unless told otherwise.
//!
//! For replay ([`Recipients::Replay`]) it keeps mail only for addresses at
//! `replay.test`, the domain replay makes its fixtures' addresses in, and
//! refuses others (550), so a real person's code sent here by mistake is
//! neither kept nor shown. A local part that starts with `unreachable` (the
//! address of a fixture named `unreachable…`) is answered 451, a temporary
//! failure, as a server that cannot take mail now would: a scenario can show
//! a failed delivery with it.

mod session;

use anyhow::{Context as _, ensure};
use mail_parser::{MessageParser, PartType};
use secrecy::SecretString;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The domain replay makes its fixtures' addresses in.
pub const REPLAY_DOMAIN: &str = "replay.test";
/// Local parts (at [`REPLAY_DOMAIN`]) answered with a temporary failure.
pub const UNREACHABLE_PREFIX: &str = "unreachable";
/// Most messages kept; the oldest go first.
const MAX_MESSAGES: usize = 10_000;
/// Most bytes of messages kept; the oldest go first.
const MAX_KEPT_BYTES: usize = 64 << 20;
/// SMTP conversations at once; more are closed at once.
const MAX_SESSIONS: usize = 64;
/// Conversations one client address may hold at once.
const MAX_SESSIONS_PER_PEER: usize = 8;
/// The longest a conversation may last, however it trickles.
const SESSION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// What the mailbox received. Shared with the server.
#[derive(Debug, Clone, Default)]
pub struct Mailbox {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<ReceivedMail>,
    bytes: usize,
    failing: Option<FailAt>,
}

/// One message as received: its envelope, how it came, and its MIME parsed.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `MAIL FROM` (empty for the null sender).
    pub envelope_from: String,
    /// The `RCPT TO` addresses accepted.
    pub recipients: Vec<String>,
    /// The `From` header's address and name.
    pub from: Option<String>,
    pub from_name: Option<String>,
    /// The `To` header's addresses.
    pub to: Vec<String>,
    pub subject: Option<String>,
    /// The text/plain part, decoded.
    pub text: Option<String>,
    /// The text/html part, decoded.
    pub html: Option<String>,
    /// The message as it arrived, dot-unstuffed.
    pub raw: String,
    /// Who authenticated (SMTP AUTH), if anyone did.
    pub login: Option<Login>,
    /// Whether it came over TLS.
    pub encrypted: bool,
}

/// Credentials a client authenticated with.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: SecretString,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"..")
            .finish()
    }
}

/// Where the mailbox fails on purpose, each answered with a temporary
/// failure (4xx) so that the sender sees mail not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAt {
    /// 421 instead of the greeting.
    Connect,
    /// 451 to every `RCPT TO`.
    Recipient,
    /// 451 after the message's final dot (the message is not kept).
    Data,
}

/// Whose mail the mailbox takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipients {
    /// Every address (the integration tests).
    Any,
    /// Only replay's made-up addresses; see the module's documentation.
    Replay,
}

/// Why a recipient was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not an address replay made up: 550.
    NotOurs,
    /// Replay's unreachable form: 451.
    Unreachable,
}

impl Recipients {
    pub fn check(self, address: &str) -> Result<(), Refused> {
        if self == Recipients::Any {
            return Ok(());
        }
        let (local, domain) = address.rsplit_once('@').ok_or(Refused::NotOurs)?;
        if !domain.eq_ignore_ascii_case(REPLAY_DOMAIN) || local.is_empty() {
            return Err(Refused::NotOurs);
        }
        let unreachable = local
            .get(..UNREACHABLE_PREFIX.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(UNREACHABLE_PREFIX));
        if unreachable {
            return Err(Refused::Unreachable);
        }
        Ok(())
    }
}

impl Mailbox {
    /// Every message kept, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.lock().messages.iter().cloned().collect()
    }

    /// The messages accepted for `to` (an envelope recipient), oldest first.
    pub fn messages_for(&self, to: &str) -> Vec<ReceivedMail> {
        self.lock()
            .messages
            .iter()
            .filter(|m| m.recipients.iter().any(|r| r.eq_ignore_ascii_case(to)))
            .cloned()
            .collect()
    }

    /// The code (6 or 8 digits) of the newest message for `to` that has one.
    pub fn last_code_for(&self, to: &str) -> Option<String> {
        self.messages_for(to)
            .iter()
            .rev()
            .find_map(|m| {
                m.text
                    .as_deref()
                    .or(m.html.as_deref())
                    .and_then(standalone_code)
            })
            .map(str::to_owned)
    }

    /// Fail at `at` from now on; `None` recovers.
    pub fn fail_at(&self, at: Option<FailAt>) {
        self.lock().failing = at;
    }

    fn failing(&self) -> Option<FailAt> {
        self.lock().failing
    }

    fn keep(&self, mail: ReceivedMail) {
        let mut state = self.lock();
        state.bytes += mail.size();
        state.messages.push_back(mail);
        while state.messages.len() > MAX_MESSAGES || state.bytes > MAX_KEPT_BYTES {
            let Some(oldest) = state.messages.pop_front() else {
                break;
            };
            state.bytes -= oldest.size();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The first run of exactly six digits.
/// A code (six digits, or eight for a reset) standing alone: not inside an
/// address or a longer word, as in a hex id.
fn standalone_code(text: &str) -> Option<&str> {
    text.split(|c: char| c.is_whitespace() || "<>()\"'".contains(c))
        .map(|word| word.trim_matches(|c: char| c.is_ascii_punctuation()))
        .find(|word| matches!(word.len(), 6 | 8) && word.bytes().all(|b| b.is_ascii_digit()))
}

impl ReceivedMail {
    /// What keeping it costs: the message and the parts parsed out of it.
    fn size(&self) -> usize {
        let part = |p: &Option<String>| p.as_ref().map_or(0, String::len);
        self.raw.len() + part(&self.text) + part(&self.html) + part(&self.subject)
    }

    fn parse(
        envelope_from: String,
        recipients: Vec<String>,
        raw: Vec<u8>,
        login: Option<Login>,
        encrypted: bool,
    ) -> Self {
        let mut mail = ReceivedMail {
            envelope_from,
            recipients,
            from: None,
            from_name: None,
            to: Vec::new(),
            subject: None,
            text: None,
            html: None,
            raw: String::new(),
            login,
            encrypted,
        };
        if let Some(message) = MessageParser::default().parse(&raw) {
            let from = message.from().and_then(|a| a.first());
            mail.from = from.and_then(|a| a.address()).map(str::to_owned);
            mail.from_name = from.and_then(|a| a.name()).map(str::to_owned);
            mail.to = message
                .to()
                .map(|to| {
                    to.iter()
                        .filter_map(|a| a.address())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            mail.subject = message.subject().map(str::to_owned);
            // The parts as sent: mail-parser would make text of HTML and
            // HTML of text where one is missing.
            let part = |ids: &[u32]| {
                ids.iter()
                    .filter_map(|&id| message.parts.get(usize::try_from(id).ok()?))
                    .map(|part| &part.body)
                    .collect::<Vec<_>>()
            };
            mail.text = part(&message.text_body)
                .into_iter()
                .find_map(|body| match body {
                    PartType::Text(text) => Some(text.to_string()),
                    _ => None,
                });
            mail.html = part(&message.html_body)
                .into_iter()
                .find_map(|body| match body {
                    PartType::Html(html) => Some(html.to_string()),
                    _ => None,
                });
        }
        mail.raw = String::from_utf8_lossy(&raw).into_owned();
        mail
    }
}

/// How the mailbox talks TLS.
#[derive(Clone)]
pub enum MailTls {
    /// In clear (replay's own server, a local relay).
    Plain,
    /// STARTTLS offered; AUTH only after it.
    StartTls(Arc<ServerConfig>),
    /// TLS from the first byte (`smtps://`).
    Implicit(Arc<ServerConfig>),
}

/// How a mailbox is started.
pub struct MailSinkOptions {
    pub address: SocketAddr,
    /// Listen beyond loopback.
    pub public: bool,
    pub tls: MailTls,
    pub recipients: Recipients,
}

impl MailSinkOptions {
    /// On a free loopback port.
    pub fn loopback(tls: MailTls, recipients: Recipients) -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            public: false,
            tls,
            recipients,
        }
    }
}

/// A running mailbox.
pub struct MailSink {
    pub mailbox: Mailbox,
    pub address: SocketAddr,
    tls: MailTls,
}

/// What every conversation shares.
struct Server {
    mailbox: Mailbox,
    recipients: Recipients,
    tls: MailTls,
}

impl MailSink {
    /// Listens and serves until the process (or the runtime) ends.
    pub async fn start(options: MailSinkOptions) -> anyhow::Result<Self> {
        ensure!(
            options.public || options.address.ip().is_loopback(),
            "the mailbox shows codes to whoever reaches it: {} is not loopback (--sink-public to allow it)",
            options.address
        );
        let listener = TcpListener::bind(options.address)
            .await
            .with_context(|| format!("the mailbox cannot listen on {}", options.address))?;
        let address = listener
            .local_addr()
            .context("the mailbox's listening address")?;
        let mailbox = Mailbox::default();
        let server = Arc::new(Server {
            mailbox: mailbox.clone(),
            recipients: options.recipients,
            tls: options.tls.clone(),
        });
        tokio::spawn(serve(listener, server));
        Ok(Self {
            mailbox,
            address,
            tls: options.tls,
        })
    }

    /// What the service's `WIZARD_SMTP_URL` must be. With TLS, the
    /// certificate must name the IP address it listens on.
    pub fn smtp_url(&self) -> String {
        match self.tls {
            MailTls::Plain => format!("smtp://{}", self.address),
            MailTls::StartTls(_) => format!("smtp://{}?tls=required", self.address),
            MailTls::Implicit(_) => format!("smtps://{}", self.address),
        }
    }
}

async fn serve(listener: TcpListener, server: Arc<Server>) {
    let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
    let per_peer: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                // Over a limit the connection just closes: the client retries.
                let Ok(permit) = Arc::clone(&sessions).try_acquire_owned() else {
                    continue;
                };
                let Some(slot) = PeerSlot::take(&per_peer, peer.ip()) else {
                    continue;
                };
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    // However it trickles, a conversation ends: one peer cannot hold the mailbox.
                    let ended =
                        match tokio::time::timeout(SESSION_DEADLINE, session::run(tcp, &server))
                            .await
                        {
                            Ok(ended) => ended,
                            Err(_) => Err(anyhow::anyhow!("over {SESSION_DEADLINE:?}")),
                        };
                    if let Err(e) = ended {
                        tracing::debug!(target: "mailbox", %peer, "SMTP session ended: {e:#}");
                    }
                    drop((slot, permit));
                });
            }
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(target: "mailbox", "accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One peer's hold on a conversation, given back when it ends.
struct PeerSlot {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerSlot {
    /// A slot for `ip`, unless it holds [`MAX_SESSIONS_PER_PEER`] already.
    fn take(peers: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<PeerSlot> {
        let mut held = peers.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(ip).or_default();
        if *count >= MAX_SESSIONS_PER_PEER {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: Arc::clone(peers),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// A TLS configuration for the mailbox from a PEM certificate chain and its
/// PEM private key, on AWS-LC (the crate's crypto library).
pub fn tls_config(cert_chain_pem: &str, key_pem: &str) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the mailbox's certificate chain is not PEM")?;
    ensure!(
        !certs.is_empty(),
        "the mailbox's certificate chain is empty"
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .context("the mailbox's private key is not PEM")?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the mailbox's TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the mailbox's certificate and key")?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_takes_only_its_own_addresses_and_fails_the_unreachable_ones() {
        let replay = Recipients::Replay;
        assert_eq!(replay.check("alice-r1@replay.test"), Ok(()));
        assert_eq!(replay.check("Alice-R1@Replay.Test"), Ok(()));
        assert_eq!(
            replay.check("unreachable-r1@replay.test"),
            Err(Refused::Unreachable)
        );
        for other in [
            "ann@example.com",
            "x@replay.test.example",
            "@replay.test",
            "replay.test",
        ] {
            assert_eq!(replay.check(other), Err(Refused::NotOurs), "{other}");
        }
        assert_eq!(Recipients::Any.check("ann@example.com"), Ok(()));
    }

    #[test]
    fn the_code_is_six_or_eight_digits_standing_alone() {
        assert_eq!(
            standalone_code("code:\n    012345\nvalid 15"),
            Some("012345")
        );
        assert_eq!(standalone_code("1234567 and 12345"), None);
        assert_eq!(standalone_code("<b>987654</b>"), Some("987654"));
        assert_eq!(standalone_code("is 01234567."), Some("01234567"));
        assert_eq!(standalone_code("nobody-3f123456a@x.test 123456789"), None);
    }

    fn mail(to: &str, text: &str, bytes: usize) -> ReceivedMail {
        let raw = format!(
            "To: {to}\r\nSubject: s\r\n\r\n{text}\r\n{}",
            "x".repeat(bytes)
        );
        ReceivedMail::parse(
            "from@example.com".into(),
            vec![to.to_owned()],
            raw.into_bytes(),
            None,
            false,
        )
    }

    #[test]
    fn the_mailbox_keeps_messages_by_recipient_and_drops_the_oldest() {
        let mailbox = Mailbox::default();
        mailbox.keep(mail("a@x.test", "first 111111", 0));
        mailbox.keep(mail("b@x.test", "other 222222", 0));
        mailbox.keep(mail("A@X.test", "second 333333", 0));
        mailbox.keep(mail("a@x.test", "no code", 0));
        assert_eq!(mailbox.messages_for("a@x.test").len(), 3);
        assert_eq!(mailbox.last_code_for("a@x.test").as_deref(), Some("333333"));
        assert_eq!(mailbox.last_code_for("c@x.test"), None);
        let first = &mailbox.messages_for("b@x.test")[0];
        assert_eq!(first.subject.as_deref(), Some("s"));
        assert_eq!(first.to, ["b@x.test"]);
        // Kept twice over: as received, and as its parsed text.
        mailbox.keep(mail("big@x.test", "", MAX_KEPT_BYTES / 2 - 100));
        let kept = mailbox.messages();
        assert_eq!(kept.last().unwrap().recipients, ["big@x.test"]);
        assert!((2..5).contains(&kept.len()), "{}", kept.len());
        let bytes = mailbox.lock().bytes;
        assert!(bytes <= MAX_KEPT_BYTES);
        assert_eq!(kept.iter().map(ReceivedMail::size).sum::<usize>(), bytes);
    }

    #[test]
    fn the_tls_configuration_needs_a_certificate_and_its_key() {
        assert!(tls_config("", "").is_err());
        assert!(
            tls_config(
                "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
                ""
            )
            .is_err()
        );
    }
}
