//! Email: password-reset codes, and the note to an address that has no
//! account. Written to the log in development, or handed to an SMTP server
//! (lettre over rustls). Each letter is plain text and HTML, from the
//! templates in `templates/email/`, compiled in.

use crate::config::{ServiceUrl, Settings};
use crate::domain::{Email, OtpCode};
use anyhow::{Context as _, anyhow, bail, ensure};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::{ExposeSecret as _, SecretString};
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The name letters sign with.
const PRODUCT: &str = "signin-wizard";
/// The whole hand-over of one message (connect, TLS, AUTH, DATA): a slow
/// server must not hold a request for longer.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to write to someone.
#[derive(Debug, Clone, Copy)]
pub enum Letter<'a> {
    /// A password-reset code; `valid_minutes` is how long it works.
    ResetCode {
        code: &'a OtpCode,
        valid_minutes: u32,
    },
    /// Someone asked to reset the password of this address, which has no account here.
    NoAccount,
}

#[derive(Debug, thiserror::Error)]
#[error("the email could not be handed to the mail server: {0:#}")]
pub struct EmailError(anyhow::Error);

/// Sends letters. Cheap to clone (one connection per message: a reset code
/// is rare, and a pool would keep connections to a server that failed).
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    /// Development: the text part is written to the log (target `email`).
    Log,
    Smtp(Arc<Smtp>),
}

struct Smtp {
    client: AsyncSmtpTransport<Tokio1Executor>,
    /// Shown in place of the URL: scheme, host and port.
    server: ServiceUrl,
    /// The URL's password, blanked from any error a server's answer puts it in.
    password: Option<SecretString>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match &self.transport {
            Transport::Log => "log".to_owned(),
            Transport::Smtp(smtp) => smtp.server.to_string(),
        };
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("transport", &transport)
            .finish()
    }
}

/// How the URL asks to reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://...?tls=required`: STARTTLS, or no message.
    StartTls,
    /// `smtp://`: in clear.
    Plain,
}

impl Security {
    fn of(url: &reqwest::Url) -> anyhow::Result<Self> {
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        Ok(match (url.scheme(), tls.as_deref()) {
            ("smtps", None) => Security::Implicit,
            ("smtp", Some("required")) => Security::StartTls,
            ("smtp", None) => Security::Plain,
            // `opportunistic` would send in clear whenever STARTTLS is missing.
            ("smtp" | "smtps", Some(_)) => {
                bail!("WIZARD_SMTP_URL: `tls=required` (with smtp://) is the only tls option")
            }
            (scheme, _) => bail!("WIZARD_SMTP_URL: smtp:// or smtps://, not {scheme}://"),
        })
    }
}

impl Mailer {
    /// Whether letters, codes and all, go to the log.
    pub fn writes_to_log(&self) -> bool {
        matches!(self.transport, Transport::Log)
    }

    /// Letters go to the log (target `email`), codes and all: development only.
    pub fn log(from: Mailbox) -> Self {
        Self {
            from,
            transport: Transport::Log,
        }
    }

    /// Letters go to the SMTP server at `url`; `ca_file` is a PEM root
    /// certificate to trust beside Mozilla's (webpki-roots).
    pub fn smtp(url: &ServiceUrl, ca_file: Option<&Path>, from: Mailbox) -> anyhow::Result<Self> {
        let raw = url.expose();
        let security = Security::of(raw)?;
        let host = raw
            .host_str()
            .context("WIZARD_SMTP_URL has no host")?
            .trim_matches(['[', ']']);
        let password = raw.password().map(|p| decoded(p, "password")).transpose()?;
        ensure!(
            password.is_some() || raw.username().is_empty(),
            "WIZARD_SMTP_URL has a user but no password"
        );
        ensure!(
            security != Security::Plain || password.is_none() || is_loopback(host),
            "WIZARD_SMTP_URL: a password goes over smtp:// only to this machine \
             (use smtps:// or ?tls=required for {host})"
        );
        // lettre reads the port (25, 587 or 465 by default), the user and the
        // password; the TLS parameters are ours, to add `ca_file`.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(raw.as_str())
            .map_err(|e| anyhow!("WIZARD_SMTP_URL ({url}): {e}"))?
            .timeout(Some(SMTP_TIMEOUT));
        let tls = match (security, ca_file) {
            (Security::Plain, None) => None,
            (Security::Plain, Some(_)) => {
                bail!("WIZARD_SMTP_CA_FILE is set, but WIZARD_SMTP_URL does not use TLS")
            }
            (Security::Implicit | Security::StartTls, ca_file) => {
                let mut parameters = TlsParameters::builder(host.to_owned());
                if let Some(path) = ca_file {
                    parameters = parameters.add_root_certificate(root_certificate(path)?);
                }
                let parameters = parameters
                    .build()
                    .context("WIZARD_SMTP_CA_FILE: the TLS configuration")?;
                Some(parameters)
            }
        };
        builder = match (security, tls) {
            (Security::Implicit, Some(p)) => builder.tls(Tls::Wrapper(p)),
            (Security::StartTls, Some(p)) => builder.tls(Tls::Required(p)),
            _ => builder.tls(Tls::None),
        };
        if security == Security::Plain {
            tracing::warn!(server = %url, "email goes to the SMTP server unencrypted");
        }
        Ok(Self {
            from,
            transport: Transport::Smtp(Arc::new(Smtp {
                client: builder.build(),
                server: url.clone(),
                password: password.map(SecretString::from),
            })),
        })
    }

    /// From settings: SMTP when WIZARD_SMTP_URL is set; else the log when
    /// WIZARD_EMAIL_LOG is true (its default: true exactly when
    /// `embedded_store`); else None (no email delivery: password recovery is off).
    pub fn from_settings(
        settings: &Settings,
        embedded_store: bool,
    ) -> anyhow::Result<Option<Mailer>> {
        let from = settings.email_from.clone();
        if let Some(url) = &settings.smtp_url {
            return Self::smtp(url, settings.smtp_ca_file.as_deref(), from).map(Some);
        }
        ensure!(
            settings.smtp_ca_file.is_none(),
            "WIZARD_SMTP_CA_FILE is set without WIZARD_SMTP_URL"
        );
        Ok(settings
            .email_log
            .unwrap_or(embedded_store)
            .then(|| Self::log(from)))
    }

    pub async fn send(&self, to: &Email, letter: Letter<'_>) -> Result<(), EmailError> {
        let rendered = render(letter);
        match &self.transport {
            Transport::Log => {
                tracing::info!(target: "email", to = to.as_str(), subject = rendered.subject, "{}", rendered.text);
                Ok(())
            }
            Transport::Smtp(smtp) => {
                let message = self.message(to, rendered).map_err(EmailError)?;
                let sent = tokio::time::timeout(SMTP_TIMEOUT, smtp.client.send(message)).await;
                let server = &smtp.server;
                let why = match sent {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => format!("{server}: {e}"),
                    Err(_) => format!("{server}: no answer within {SMTP_TIMEOUT:?}"),
                };
                Err(EmailError(anyhow!(redacted(why, smtp.password.as_ref()))))
            }
        }
    }

    fn message(&self, to: &Email, rendered: Rendered) -> anyhow::Result<Message> {
        let to: lettre::Address = to
            .as_str()
            .parse()
            .context("the address is not one SMTP takes")?;
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(rendered.subject)
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .context("building the message")
    }
}

fn decoded(raw: &str, what: &str) -> anyhow::Result<String> {
    percent_decode(raw).with_context(|| format!("WIZARD_SMTP_URL: the {what} is not UTF-8"))
}

/// `%XX` escapes undone, as lettre does with the URL's user and password.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn root_certificate(path: &Path) -> anyhow::Result<Certificate> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read WIZARD_SMTP_CA_FILE {}", path.display()))?;
    // lettre takes a file without certificates as an empty list: that would
    // trust nothing new and fail only at the first email.
    let blocks = pem::parse_many(&pem)
        .with_context(|| format!("WIZARD_SMTP_CA_FILE {} is not PEM", path.display()))?;
    ensure!(
        blocks.iter().any(|b| b.tag() == "CERTIFICATE"),
        "WIZARD_SMTP_CA_FILE {} holds no CERTIFICATE",
        path.display()
    );
    Certificate::from_pem(&pem).with_context(|| format!("WIZARD_SMTP_CA_FILE {}", path.display()))
}

/// `text` with `password` blanked, as it is and URL-encoded.
fn redacted(text: String, password: Option<&SecretString>) -> String {
    let Some(password) = password
        .map(|p| p.expose_secret())
        .filter(|p| !p.is_empty())
    else {
        return text;
    };
    let encoded: String = url_encoded(password);
    text.replace(password, "***").replace(&encoded, "***")
}

fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A letter in words.
#[derive(Debug, PartialEq, Eq)]
struct Rendered {
    subject: String,
    text: String,
    html: String,
}

const RESET_CODE_TEXT: &str = include_str!("../../templates/email/reset_code.txt");
const RESET_CODE_HTML: &str = include_str!("../../templates/email/reset_code.html");
const NO_ACCOUNT_TEXT: &str = include_str!("../../templates/email/no_account.txt");
const NO_ACCOUNT_HTML: &str = include_str!("../../templates/email/no_account.html");

/// Nothing the client typed goes into a letter (the address is the
/// recipient's own, and would let a stranger write into a "no account" one).
fn render(letter: Letter<'_>) -> Rendered {
    let (subject, text, html, code, valid_for) = match letter {
        Letter::ResetCode {
            code,
            valid_minutes,
        } => (
            format!("Your {PRODUCT} password-reset code"),
            RESET_CODE_TEXT,
            RESET_CODE_HTML,
            code.expose(),
            match valid_minutes {
                1 => "1 minute".to_owned(),
                n => format!("{n} minutes"),
            },
        ),
        Letter::NoAccount => (
            format!("{PRODUCT}: a password reset for an address without an account"),
            NO_ACCOUNT_TEXT,
            NO_ACCOUNT_HTML,
            "",
            String::new(),
        ),
    };
    let values = [
        ("product", PRODUCT),
        ("subject", &subject),
        ("code", code),
        ("valid_for", &valid_for),
    ];
    Rendered {
        text: fill(text, &values, as_is),
        html: fill(html, &values, html_escaped),
        subject,
    }
}

/// `template` with each `{{name}}` replaced by `escape` of its value. Names
/// not in `values` stay as they are (a test holds every template to them).
fn fill(template: &str, values: &[(&str, &str)], escape: fn(&str) -> Cow<'_, str>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let known = after.find("}}").and_then(|close| {
            let name = after[..close].trim();
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| (value, close))
        });
        match known {
            Some((value, close)) => {
                out.push_str(&escape(value));
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn as_is(value: &str) -> Cow<'_, str> {
    Cow::Borrowed(value)
}

fn html_escaped(value: &str) -> Cow<'_, str> {
    if !value.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_known_names_and_leaves_the_rest() {
        let values = [("a", "1"), ("b", "<2>")];
        assert_eq!(
            fill("{{a}}-{{ b }}-{{c}}-{{a", &values, as_is),
            "1-<2>-{{c}}-{{a"
        );
        assert_eq!(
            fill("<p>{{b}}</p>", &values, html_escaped),
            "<p>&lt;2&gt;</p>"
        );
        assert_eq!(html_escaped(r#"a&b"c'd"#), "a&amp;b&quot;c&#39;d");
    }

    #[test]
    fn every_template_uses_only_names_the_renderer_fills() {
        let code = OtpCode::parse("012345").unwrap();
        for letter in [
            Letter::ResetCode {
                code: &code,
                valid_minutes: 15,
            },
            Letter::NoAccount,
        ] {
            let r = render(letter);
            for part in [&r.subject, &r.text, &r.html] {
                assert!(!part.contains("{{"), "{part}");
                assert!(part.contains(PRODUCT), "{part}");
            }
        }
    }

    #[test]
    fn a_reset_code_letter_says_the_code_how_long_and_never_to_share_it() {
        let code = OtpCode::parse("012345").unwrap();
        let r = render(Letter::ResetCode {
            code: &code,
            valid_minutes: 15,
        });
        assert!(!r.subject.contains("012345"));
        for part in [&r.text, &r.html] {
            assert!(part.contains("012345"));
            assert!(part.contains("valid for 15 minutes"));
            assert!(part.contains("Never share it"));
            assert!(part.contains("If you did not ask"));
        }
        let one = render(Letter::ResetCode {
            code: &code,
            valid_minutes: 1,
        });
        assert!(one.text.contains("valid for 1 minute."));
    }

    #[test]
    fn the_no_account_letter_says_so_without_repeating_anything_typed() {
        let r = render(Letter::NoAccount);
        for part in [&r.text, &r.html] {
            assert!(part.contains("for this address, but no"), "{part}");
            assert!(part.contains("nothing to do"), "{part}");
            assert!(!part.contains('@'), "{part}");
        }
    }

    fn url(raw: &str) -> ServiceUrl {
        ServiceUrl::parse(raw).unwrap()
    }

    fn from() -> Mailbox {
        "signin-wizard <no-reply@localhost>".parse().unwrap()
    }

    #[test]
    fn the_url_chooses_the_security() {
        for (raw, want) in [
            ("smtps://mail.example", Security::Implicit),
            ("smtp://mail.example:587?tls=required", Security::StartTls),
            ("smtp://127.0.0.1:25", Security::Plain),
        ] {
            assert_eq!(Security::of(url(raw).expose()).unwrap(), want, "{raw}");
            assert!(Mailer::smtp(&url(raw), None, from()).is_ok(), "{raw}");
        }
        for bad in [
            "smtp://mail.example?tls=opportunistic",
            "https://mail.example",
            "smtp://user@mail.example",
            // A password in clear over the network.
            "smtp://u:p@mail.example",
        ] {
            assert!(Mailer::smtp(&url(bad), None, from()).is_err(), "{bad}");
        }
        assert!(Mailer::smtp(&url("smtp://u:p@localhost:25"), None, from()).is_ok());
        assert!(
            Mailer::smtp(
                &url("smtp://127.0.0.1"),
                Some(Path::new("/nonexistent")),
                from()
            )
            .is_err()
        );
    }

    #[test]
    fn debug_and_errors_never_show_the_password() {
        let mailer = Mailer::smtp(
            &url("smtps://relay-user:s%40cret@mail.example:465"),
            None,
            from(),
        )
        .unwrap();
        let shown = format!("{mailer:?}");
        assert!(
            !shown.contains("cret") && !shown.contains("relay-user"),
            "{shown}"
        );
        assert!(shown.contains("mail.example:465"), "{shown}");
        let secret = SecretString::from("s@cret");
        assert_eq!(
            redacted("535 bad s@cret / s%40cret".into(), Some(&secret)),
            "535 bad *** / ***"
        );
        assert_eq!(percent_decode("s%40cret%").as_deref(), Some("s@cret%"));
    }

    #[test]
    fn email_settings_parse_at_start_up() {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        let parse = |args: &[&str]| {
            <Only as clap::Parser>::try_parse_from(["signin-wizard"].iter().chain(args))
                .map(|o| o.settings)
        };
        let settings = parse(&[
            "--email-from",
            "Support Team <help@example.com>",
            "--smtp-url",
            "smtps://user:pw@mail.example:465",
            "--smtp-ca-file",
            "/etc/relay-ca.pem",
            "--email-log",
            "false",
        ])
        .unwrap();
        assert_eq!(
            settings.email_from.to_string(),
            "Support Team <help@example.com>"
        );
        assert_eq!(
            settings.smtp_url.map(|u| u.to_string()).as_deref(),
            Some("smtps://***:***@mail.example:465")
        );
        assert_eq!(settings.email_log, Some(false));
        assert!(settings.smtp_ca_file.is_some());
        let default: Mailbox = "signin-wizard <no-reply@localhost>".parse().unwrap();
        assert_eq!(default.email.to_string(), "no-reply@localhost");
        for bad in [
            ["--email-from", "not an address"],
            ["--smtp-url", " "],
            ["--smtp-ca-file", ""],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
        let refused = parse(&["--smtp-url", "smtps://u:hunter22@"]).err().unwrap();
        assert!(!refused.to_string().contains("hunter22"), "{refused}");
    }

    #[test]
    fn settings_choose_smtp_the_log_or_nothing() {
        let mut settings = Settings::from_env().unwrap();
        settings.smtp_url = None;
        settings.smtp_ca_file = None;
        settings.email_log = None;
        assert!(Mailer::from_settings(&settings, true).unwrap().is_some());
        assert!(Mailer::from_settings(&settings, false).unwrap().is_none());
        settings.email_log = Some(true);
        assert!(Mailer::from_settings(&settings, false).unwrap().is_some());
        settings.email_log = Some(false);
        assert!(Mailer::from_settings(&settings, true).unwrap().is_none());
        settings.smtp_url = Some(url("smtp://127.0.0.1:2525"));
        let mailer = Mailer::from_settings(&settings, false).unwrap().unwrap();
        assert!(format!("{mailer:?}").contains("smtp://127.0.0.1:2525"));
        settings.smtp_url = None;
        settings.smtp_ca_file = Some("/nonexistent".into());
        assert!(Mailer::from_settings(&settings, true).is_err());
    }
}
