//! Email delivery against a real SMTP server (replay's mailbox): in clear,
//! with STARTTLS and with implicit TLS (a certificate made here, trusted
//! through WIZARD_SMTP_CA_FILE), with SMTP AUTH from the URL, and against a
//! server that fails or that the CA does not vouch for.

use secrecy::ExposeSecret as _;
use signin_wizard::config::Settings;
use signin_wizard::delivery::{Letter, Mailer};
use signin_wizard::domain::{Email, OtpCode};
use signin_wizard::replay::mailbox::{
    FailAt, MailSink, MailSinkOptions, MailTls, ReceivedMail, Recipients, tls_config,
};
use signin_wizard::replay::template::{CreatedUser, Scope, Template};
use signin_wizard::replay::{Inbox, Mailbox};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

const FROM: &str = "signin-wizard <no-reply@signin.test>";

/// A self-signed certificate for the mailbox's loopback address.
struct Certificate {
    cert_pem: String,
    key_pem: String,
}

impl Certificate {
    fn new() -> Self {
        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
        }
    }

    /// The certificate as a CA file, as an operator would give it.
    fn ca_file(&self) -> TempFile {
        TempFile::new(&self.cert_pem)
    }
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("signin-wizard-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn sink(tls: MailTls, recipients: Recipients) -> MailSink {
    MailSink::start(MailSinkOptions::loopback(tls, recipients))
        .await
        .unwrap()
}

/// A mailer built as the service builds it, from settings.
fn mailer(url: &str, ca_file: Option<&TempFile>) -> Mailer {
    let mut settings = Settings::from_env().unwrap();
    settings.smtp_url = Some(url.parse().unwrap());
    settings.smtp_ca_file = ca_file.map(|f| f.0.clone());
    settings.email_from = FROM.parse().unwrap();
    Mailer::from_settings(&settings, false).unwrap().unwrap()
}

/// `smtp://127.0.0.1:port...` with `user:password@` put in.
fn with_login(url: &str, login: &str) -> String {
    url.replacen("://", &format!("://{login}@"), 1)
}

fn email(raw: &str) -> Email {
    Email::parse(raw).unwrap()
}

async fn send_code(mailer: &Mailer, to: &str, code: &str) -> Result<(), String> {
    let code = OtpCode::parse(code).unwrap();
    let letter = Letter::ResetCode {
        code: &code,
        valid_minutes: 15,
    };
    mailer
        .send(&email(to), letter)
        .await
        .map_err(|e| e.to_string())
}

fn only_message(mailbox: &Mailbox, to: &str) -> ReceivedMail {
    let messages = mailbox.messages_for(to);
    assert_eq!(messages.len(), 1, "{messages:?}");
    messages.into_iter().next().unwrap()
}

fn assert_reset_code_letter(mail: &ReceivedMail, to: &str, code: &str) {
    assert_eq!(mail.from.as_deref(), Some("no-reply@signin.test"));
    assert_eq!(mail.from_name.as_deref(), Some("signin-wizard"));
    assert_eq!(mail.envelope_from, "no-reply@signin.test");
    assert_eq!(mail.to, [to]);
    assert_eq!(mail.recipients, [to]);
    assert_eq!(
        mail.subject.as_deref(),
        Some("Your signin-wizard password-reset code")
    );
    let text = mail.text.as_deref().unwrap();
    let html = mail.html.as_deref().unwrap();
    for part in [text, html] {
        assert!(part.contains(code), "{part}");
        assert!(part.contains("valid for 15 minutes"), "{part}");
        assert!(part.contains("Never share it"), "{part}");
    }
    assert!(html.contains("<p>"), "{html}");
    assert!(!text.contains("<p>"), "{text}");
    assert!(mail.raw.contains("multipart/alternative"), "{}", mail.raw);
}

#[tokio::test]
async fn a_reset_code_goes_out_in_clear_to_a_local_relay_as_text_and_html() {
    let sink = sink(MailTls::Plain, Recipients::Any).await;
    let mailer = mailer(&sink.smtp_url(), None);
    send_code(&mailer, "ann@example.com", "012345")
        .await
        .unwrap();
    let mail = only_message(&sink.mailbox, "ann@example.com");
    assert_reset_code_letter(&mail, "ann@example.com", "012345");
    assert!(!mail.encrypted);
    assert!(mail.login.is_none());
    assert_eq!(
        sink.mailbox.last_code_for("ann@example.com").as_deref(),
        Some("012345")
    );
    send_code(&mailer, "ann@example.com", "999000")
        .await
        .unwrap();
    assert_eq!(
        sink.mailbox.last_code_for("ANN@example.com").as_deref(),
        Some("999000")
    );
    assert_eq!(sink.mailbox.last_code_for("bob@example.com"), None);
}

#[tokio::test]
async fn starttls_carries_the_urls_credentials_to_the_server() {
    let certificate = Certificate::new();
    let config = tls_config(&certificate.cert_pem, &certificate.key_pem).unwrap();
    let sink = sink(MailTls::StartTls(config), Recipients::Any).await;
    assert!(sink.smtp_url().ends_with("?tls=required"));
    let ca = certificate.ca_file();
    let url = with_login(&sink.smtp_url(), "relay-user:p%40ss%20w%2Frd");
    let mailer = mailer(&url, Some(&ca));
    send_code(&mailer, "ann@example.com", "123456")
        .await
        .unwrap();
    let mail = only_message(&sink.mailbox, "ann@example.com");
    assert_reset_code_letter(&mail, "ann@example.com", "123456");
    assert!(mail.encrypted);
    let login = mail.login.unwrap();
    assert_eq!(login.user, "relay-user");
    assert_eq!(login.password.expose_secret(), "p@ss w/rd");
    let shown = format!("{mailer:?}");
    assert!(
        !shown.contains("p%40ss") && !shown.contains("relay-user"),
        "{shown}"
    );
}

#[tokio::test]
async fn implicit_tls_with_a_private_ca_delivers() {
    let certificate = Certificate::new();
    let config = tls_config(&certificate.cert_pem, &certificate.key_pem).unwrap();
    let sink = sink(MailTls::Implicit(config), Recipients::Any).await;
    assert!(sink.smtp_url().starts_with("smtps://"));
    let ca = certificate.ca_file();
    let mailer = mailer(&with_login(&sink.smtp_url(), "u:secret"), Some(&ca));
    send_code(&mailer, "ann@example.com", "654321")
        .await
        .unwrap();
    let mail = only_message(&sink.mailbox, "ann@example.com");
    assert_reset_code_letter(&mail, "ann@example.com", "654321");
    assert!(mail.encrypted);
    assert_eq!(mail.login.unwrap().user, "u");
}

#[tokio::test]
async fn tls_fails_closed_when_the_ca_does_not_vouch_for_the_server() {
    let certificate = Certificate::new();
    let stranger = Certificate::new();
    for tls in [
        MailTls::Implicit(tls_config(&certificate.cert_pem, &certificate.key_pem).unwrap()),
        MailTls::StartTls(tls_config(&certificate.cert_pem, &certificate.key_pem).unwrap()),
    ] {
        let sink = sink(tls, Recipients::Any).await;
        let wrong_ca = stranger.ca_file();
        let url = with_login(&sink.smtp_url(), "u:hunter22");
        for mailer in [mailer(&url, Some(&wrong_ca)), mailer(&url, None)] {
            let refused = send_code(&mailer, "ann@example.com", "123456")
                .await
                .unwrap_err();
            assert!(refused.contains("could not be handed"), "{refused}");
            assert!(!refused.contains("hunter22"), "{refused}");
        }
        assert!(sink.mailbox.messages().is_empty());
    }
}

#[tokio::test]
async fn a_failing_server_is_an_email_error_and_never_shows_the_password() {
    let sink = sink(MailTls::Plain, Recipients::Any).await;
    let mailer = mailer(&with_login(&sink.smtp_url(), "u:hunter22"), None);
    for at in [FailAt::Connect, FailAt::Recipient, FailAt::Data] {
        sink.mailbox.fail_at(Some(at));
        let refused = send_code(&mailer, "ann@example.com", "123456")
            .await
            .unwrap_err();
        assert!(refused.contains("could not be handed"), "{at:?}: {refused}");
        assert!(!refused.contains("hunter22"), "{refused}");
        assert!(sink.mailbox.messages().is_empty(), "{at:?}");
    }
    sink.mailbox.fail_at(None);
    send_code(&mailer, "ann@example.com", "123456")
        .await
        .unwrap();
    assert_eq!(sink.mailbox.messages().len(), 1);
}

#[tokio::test]
async fn nobody_listening_is_an_email_error() {
    let sink = sink(MailTls::Plain, Recipients::Any).await;
    let unused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mailer = mailer(&format!("smtp://{unused}"), None);
    assert!(
        send_code(&mailer, "ann@example.com", "123456")
            .await
            .is_err()
    );
    drop(sink);
}

#[tokio::test]
async fn the_no_account_letter_repeats_nothing_typed() {
    let sink = sink(MailTls::Plain, Recipients::Any).await;
    let mailer = mailer(&sink.smtp_url(), None);
    let to = "o'brien&co+call-now@example.com";
    mailer.send(&email(to), Letter::NoAccount).await.unwrap();
    let mail = only_message(&sink.mailbox, to);
    for part in [mail.text.as_deref().unwrap(), mail.html.as_deref().unwrap()] {
        assert!(part.contains("for this address, but no"), "{part}");
        assert!(part.contains("nothing to do"), "{part}");
        assert!(
            !part.contains("brien") && !part.contains("call-now"),
            "{part}"
        );
    }
}

#[tokio::test]
async fn replays_mailbox_keeps_only_its_addresses_and_fills_email_code() {
    let sink = sink(MailTls::Plain, Recipients::Replay).await;
    let mailer = mailer(&sink.smtp_url(), None);
    let alice = "alice-r1@replay.test";
    send_code(&mailer, alice, "246810").await.unwrap();
    let refused = send_code(&mailer, "ann@example.com", "111111")
        .await
        .unwrap_err();
    assert!(refused.contains("550"), "{refused}");
    let unreachable = send_code(&mailer, "unreachable-r1@replay.test", "111111")
        .await
        .unwrap_err();
    assert!(unreachable.contains("451"), "{unreachable}");
    assert_eq!(sink.mailbox.messages().len(), 1);

    let users = BTreeMap::from([(
        "alice".to_owned(),
        CreatedUser {
            id: "u1".into(),
            email: alice.into(),
            password: "pw".into(),
            phone: None,
            totp: None,
        },
    )]);
    let inbox = Inbox::default();
    let scope = Scope {
        run: "r1",
        users: &users,
        captured: &BTreeMap::new(),
        inbox: &inbox,
        mailbox: &sink.mailbox,
        now: chrono::Utc::now(),
    };
    let template = Template::parse("{\"code\": \"{{alice.email_code}}\"}").unwrap();
    assert_eq!(
        scope.fill(&template, &mut Vec::new()).unwrap(),
        "{\"code\": \"246810\"}"
    );
}

/// A hand-held SMTP client, for what lettre never sends.
struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    async fn connect(sink: &MailSink) -> (Self, String) {
        let mut client = Self {
            io: BufReader::new(TcpStream::connect(sink.address).await.unwrap()),
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// One reply, all its lines; empty when the server hung up.
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            if self.io.read_line(&mut line).await.unwrap_or(0) == 0 {
                return reply;
            }
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    async fn say(&mut self, line: &str) -> String {
        self.io
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn the_mailbox_speaks_smtp_dot_unstuffs_and_bounds_lines() {
    let sink = sink(MailTls::Plain, Recipients::Any).await;
    let (mut smtp, greeting) = Client::connect(&sink).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(smtp.say("MAIL FROM:<a@b.test>").await.starts_with("503"));
    let ehlo = smtp.say("EHLO client.test").await;
    assert!(
        ehlo.contains("250-SIZE 1048576") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(smtp.say("STARTTLS").await.starts_with("502"));
    assert!(smtp.say("RCPT TO:<x@y.test>").await.starts_with("503"));
    assert!(smtp.say("AUTH LOGIN").await.starts_with("334 VXNlcm5hbWU6"));
    assert!(
        smtp.say(&base64("bob"))
            .await
            .starts_with("334 UGFzc3dvcmQ6")
    );
    assert!(smtp.say(&base64("pw")).await.starts_with("235"));
    assert!(smtp.say("AUTH PLAIN").await.starts_with("503"));
    assert!(
        smtp.say("MAIL FROM:<a@b.test> SIZE=9999999")
            .await
            .starts_with("552")
    );
    assert!(
        smtp.say("MAIL FROM:<a@b.test> SIZE=100")
            .await
            .starts_with("250")
    );
    assert!(smtp.say("RCPT TO:x@y.test").await.starts_with("501"));
    assert!(smtp.say("RCPT TO:<x@y.test>").await.starts_with("250"));
    assert!(smtp.say("DATA").await.starts_with("354"));
    let body = "Subject: hi\r\nTo: x@y.test\r\n\r\n..a line that began with a dot\r\nnext\r\n.";
    assert!(smtp.say(body).await.starts_with("250"));
    let mail = only_message(&sink.mailbox, "x@y.test");
    assert_eq!(
        mail.text.as_deref(),
        Some(".a line that began with a dot\r\nnext\r\n")
    );
    assert_eq!(mail.subject.as_deref(), Some("hi"));
    assert_eq!(mail.envelope_from, "a@b.test");
    assert_eq!(mail.login.map(|l| l.user).as_deref(), Some("bob"));
    assert!(smtp.say("DATA").await.starts_with("503"));
    assert!(smtp.say("MAIL FROM:<>").await.starts_with("250"));
    assert!(smtp.say("RSET").await.starts_with("250"));
    assert!(smtp.say("DATA").await.starts_with("503"));
    assert!(smtp.say("NOOP").await.starts_with("250"));
    assert!(smtp.say("BOGUS").await.starts_with("500"));
    assert!(smtp.say("QUIT").await.starts_with("221"));

    let (mut smtp, _) = Client::connect(&sink).await;
    assert!(smtp.say("HELO client.test").await.starts_with("250"));
    let too_long = smtp.say(&"x".repeat(10_000)).await;
    assert!(too_long.starts_with("500"), "{too_long}");
    assert_eq!(smtp.reply().await, "", "the server hangs up");
}

#[tokio::test]
async fn starttls_hides_auth_until_the_handshake() {
    let certificate = Certificate::new();
    let config = tls_config(&certificate.cert_pem, &certificate.key_pem).unwrap();
    let sink = sink(MailTls::StartTls(config), Recipients::Any).await;
    let (mut smtp, _) = Client::connect(&sink).await;
    let ehlo = smtp.say("EHLO client.test").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(
        smtp.say(&format!("AUTH PLAIN {}", base64("\0u\0p")))
            .await
            .starts_with("530")
    );
    // Commands sent with STARTTLS, before the handshake, are refused.
    let injected = smtp.say("STARTTLS\r\nMAIL FROM:<a@b.test>").await;
    assert!(injected.starts_with("501"), "{injected}");
}

#[tokio::test]
async fn one_client_address_holds_at_most_eight_conversations() {
    use tokio::io::AsyncReadExt as _;
    let sink = sink(MailTls::Plain, Recipients::Replay).await;
    let mut held = Vec::new();
    for n in 0..9 {
        let mut tcp = tokio::net::TcpStream::connect(sink.address).await.unwrap();
        let mut greeting = [0u8; 3];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut greeting))
            .await
            .unwrap();
        match n {
            0..8 => assert_eq!((read.unwrap(), &greeting), (3, b"220"), "conversation {n}"),
            _ => assert!(
                matches!(read, Ok(0) | Err(_)),
                "the ninth is closed: {read:?}"
            ),
        }
        held.push(tcp);
    }
    // Ending one makes room for another.
    drop(held.remove(0));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut tcp = tokio::net::TcpStream::connect(sink.address).await.unwrap();
    let mut greeting = [0u8; 3];
    tcp.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220");
}
