//! One SMTP conversation as a mail server holds it: RFC 5321 (EHLO/HELO,
//! MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT), STARTTLS (RFC
//! 3207) and AUTH PLAIN/LOGIN (RFC 4954, 4616), any credentials accepted
//! and remembered with the messages they sent.

use super::{FailAt, Login, MailTls, ReceivedMail, Refused, Server};
use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

/// The name the mailbox greets with.
const HOST: &str = "mailbox.replay.test";
/// Longest line, command or text, with its CRLF. RFC 5321 asks for 512 and
/// 1,000 octets at least; clients that fold nothing get room to spare, an
/// endless line does not.
const MAX_LINE: usize = 4096;
/// Largest message, in bytes (announced as SIZE).
const MAX_MESSAGE: usize = 1 << 20;
const MAX_RECIPIENTS: usize = 100;
/// How long a client may stay silent, and a TLS handshake may take.
const IDLE: Duration = Duration::from_secs(60);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Session<'s> {
    io: BufReader<Box<dyn Stream>>,
    server: &'s Server,
    encrypted: bool,
    /// EHLO or HELO was said (since the last STARTTLS).
    greeted: bool,
    login: Option<Login>,
    envelope: Option<Envelope>,
}

#[derive(Clone)]
struct Envelope {
    from: String,
    to: Vec<String>,
}

/// What the conversation does after a command.
enum Next {
    Continue,
    StartTls,
    Quit,
}

pub(super) async fn run(tcp: TcpStream, server: &Server) -> anyhow::Result<()> {
    let (stream, encrypted): (Box<dyn Stream>, bool) = match &server.tls {
        MailTls::Implicit(config) => (Box::new(handshake(config, tcp).await?), true),
        MailTls::Plain | MailTls::StartTls(_) => (Box::new(tcp), false),
    };
    let mut session = Session {
        io: BufReader::new(stream),
        server,
        encrypted,
        greeted: false,
        login: None,
        envelope: None,
    };
    if server.mailbox.failing() == Some(FailAt::Connect) {
        return session
            .reply("421 4.3.0 the mailbox fails on purpose")
            .await;
    }
    session
        .reply(&format!("220 {HOST} ESMTP replay mailbox"))
        .await?;
    loop {
        let Some(line) = session.read_line().await? else {
            return Ok(());
        };
        match session.command(&line).await? {
            Next::Continue => {}
            Next::StartTls => session = session.start_tls().await?,
            Next::Quit => return Ok(()),
        }
    }
}

async fn handshake<S: Stream>(
    config: &std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    stream: S,
) -> anyhow::Result<tokio_rustls::server::TlsStream<S>> {
    timeout(IDLE, TlsAcceptor::from(config.clone()).accept(stream))
        .await
        .context("the TLS handshake took too long")?
        .context("the TLS handshake")
}

impl<'s> Session<'s> {
    async fn command(&mut self, line: &[u8]) -> anyhow::Result<Next> {
        let text = String::from_utf8_lossy(line);
        let (verb, arg) = text.split_once(' ').unwrap_or((&text, ""));
        let arg = arg.trim();
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => self.ehlo(arg).await?,
            "HELO" if arg.is_empty() => self.reply("501 5.5.4 HELO needs a name").await?,
            "HELO" => {
                self.greeted = true;
                self.envelope = None;
                self.reply(&format!("250 {HOST}")).await?;
            }
            "STARTTLS" => return self.start_tls_command().await,
            "AUTH" => self.auth(arg).await?,
            "MAIL" => self.mail(arg).await?,
            "RCPT" => self.rcpt(arg).await?,
            "DATA" => self.data().await?,
            "RSET" => {
                self.envelope = None;
                self.reply("250 2.0.0 OK").await?;
            }
            "NOOP" => self.reply("250 2.0.0 OK").await?,
            "VRFY" => {
                self.reply("252 2.5.0 cannot VRFY, but will take mail")
                    .await?
            }
            "QUIT" => {
                self.reply("221 2.0.0 bye").await?;
                return Ok(Next::Quit);
            }
            _ => self.reply("500 5.5.2 command not recognised").await?,
        }
        Ok(Next::Continue)
    }

    fn starttls_offered(&self) -> bool {
        matches!(self.server.tls, MailTls::StartTls(_)) && !self.encrypted
    }

    /// Where STARTTLS is offered, credentials wait for it.
    fn auth_offered(&self) -> bool {
        !self.starttls_offered()
    }

    async fn ehlo(&mut self, name: &str) -> anyhow::Result<()> {
        if name.is_empty() {
            return self.reply("501 5.5.4 EHLO needs a name").await;
        }
        self.greeted = true;
        self.envelope = None;
        let mut lines = vec![
            format!("{HOST} greets {name}"),
            "8BITMIME".to_owned(),
            format!("SIZE {MAX_MESSAGE}"),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.starttls_offered() {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        let reply = lines
            .iter()
            .enumerate()
            .map(|(i, line)| format!("250{}{line}", if i == last { ' ' } else { '-' }))
            .collect::<Vec<_>>()
            .join("\r\n");
        self.reply(&reply).await
    }

    async fn start_tls_command(&mut self) -> anyhow::Result<Next> {
        if !self.starttls_offered() {
            self.reply("502 5.5.1 STARTTLS is not offered").await?;
            return Ok(Next::Continue);
        }
        // Commands sent before the handshake would count as sent over TLS
        // (the STARTTLS injection of CVE-2011-0411): refuse them.
        if !self.io.buffer().is_empty() {
            self.reply("501 5.5.2 nothing may follow STARTTLS before the handshake")
                .await?;
            bail!("the client pipelined commands after STARTTLS");
        }
        self.reply("220 2.0.0 ready to start TLS").await?;
        Ok(Next::StartTls)
    }

    /// The conversation over TLS, forgetting all that was said before.
    async fn start_tls(self) -> anyhow::Result<Session<'s>> {
        let MailTls::StartTls(config) = &self.server.tls else {
            bail!("STARTTLS without a TLS configuration");
        };
        let tls = handshake(config, self.io.into_inner()).await?;
        Ok(Session {
            io: BufReader::new(Box::new(tls)),
            server: self.server,
            encrypted: true,
            greeted: false,
            login: None,
            envelope: None,
        })
    }

    async fn auth(&mut self, arg: &str) -> anyhow::Result<()> {
        if !self.greeted {
            return self.reply("503 5.5.1 EHLO first").await;
        }
        if !self.auth_offered() {
            return self
                .reply("530 5.7.0 must issue a STARTTLS command first")
                .await;
        }
        if self.login.is_some() || self.envelope.is_some() {
            return self.reply("503 5.5.1 AUTH is not allowed now").await;
        }
        let (mechanism, initial) = match arg.split_once(' ') {
            Some((mechanism, initial)) => (mechanism, Some(initial.trim().to_owned())),
            None => (arg, None),
        };
        let login = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let Some(response) = self.response(initial, "").await? else {
                    return self.reply("501 5.7.0 authentication cancelled").await;
                };
                decode(&response).and_then(|plain| plain_login(&plain))
            }
            "LOGIN" => {
                let Some(user) = self.response(initial, "VXNlcm5hbWU6").await? else {
                    return self.reply("501 5.7.0 authentication cancelled").await;
                };
                let Some(password) = self.response(None, "UGFzc3dvcmQ6").await? else {
                    return self.reply("501 5.7.0 authentication cancelled").await;
                };
                decode(&user)
                    .zip(decode(&password))
                    .map(|(user, password)| Login {
                        user,
                        password: password.into(),
                    })
            }
            _ => {
                return self
                    .reply("504 5.5.4 unrecognised authentication type")
                    .await;
            }
        };
        match login {
            Some(login) => {
                self.login = Some(login);
                self.reply("235 2.7.0 authentication successful").await
            }
            None => self.reply("501 5.5.2 cannot decode the credentials").await,
        }
    }

    /// The client's answer to a `334` challenge (`initial` when it gave one
    /// with the command); `None` when it cancelled with `*`.
    async fn response(
        &mut self,
        initial: Option<String>,
        challenge: &str,
    ) -> anyhow::Result<Option<String>> {
        let answer = match initial {
            Some(initial) => initial,
            None => {
                self.reply(&format!("334 {challenge}")).await?;
                let line = self
                    .read_line()
                    .await?
                    .context("the client hung up during AUTH")?;
                String::from_utf8_lossy(&line).trim().to_owned()
            }
        };
        Ok((answer != "*").then_some(answer))
    }

    async fn mail(&mut self, arg: &str) -> anyhow::Result<()> {
        if !self.greeted {
            return self.reply("503 5.5.1 EHLO first").await;
        }
        if self.envelope.is_some() {
            return self.reply("503 5.5.1 a transaction is under way").await;
        }
        let Some((from, params)) = strip_keyword(arg, "FROM:").and_then(path_and_params) else {
            return self.reply("501 5.5.4 syntax: MAIL FROM:<address>").await;
        };
        let too_big = params.iter().any(|param| {
            param
                .split_once('=')
                .filter(|(key, _)| key.eq_ignore_ascii_case("SIZE"))
                .and_then(|(_, size)| size.parse::<usize>().ok())
                .is_some_and(|size| size > MAX_MESSAGE)
        });
        if too_big {
            return self.reply("552 5.3.4 message too big").await;
        }
        self.envelope = Some(Envelope {
            from,
            to: Vec::new(),
        });
        self.reply("250 2.1.0 OK").await
    }

    async fn rcpt(&mut self, arg: &str) -> anyhow::Result<()> {
        let Some(count) = self.envelope.as_ref().map(|e| e.to.len()) else {
            return self.reply("503 5.5.1 MAIL first").await;
        };
        let Some((to, _)) = strip_keyword(arg, "TO:")
            .and_then(path_and_params)
            .filter(|(to, _)| !to.is_empty())
        else {
            return self.reply("501 5.5.4 syntax: RCPT TO:<address>").await;
        };
        if count >= MAX_RECIPIENTS {
            return self.reply("452 4.5.3 too many recipients").await;
        }
        if self.server.mailbox.failing() == Some(FailAt::Recipient) {
            return self.reply("451 4.3.0 the mailbox fails on purpose").await;
        }
        match self.server.recipients.check(&to) {
            Ok(()) => {
                if let Some(envelope) = &mut self.envelope {
                    envelope.to.push(to);
                }
                self.reply("250 2.1.5 OK").await
            }
            Err(Refused::NotOurs) => self.reply("550 5.1.1 not an address replay made up").await,
            Err(Refused::Unreachable) => {
                self.reply("451 4.4.1 replay's unreachable address: try again later")
                    .await
            }
        }
    }

    async fn data(&mut self) -> anyhow::Result<()> {
        let envelope = match &self.envelope {
            Some(envelope) if !envelope.to.is_empty() => envelope.clone(),
            Some(_) => return self.reply("554 5.5.1 no valid recipients").await,
            None => return self.reply("503 5.5.1 MAIL first").await,
        };
        self.reply("354 end data with <CR><LF>.<CR><LF>").await?;
        let mut message = Vec::new();
        let mut too_big = false;
        loop {
            let line = self
                .read_line()
                .await?
                .context("the client hung up during DATA")?;
            if line == b"." {
                break;
            }
            // A leading dot was doubled by the client (RFC 5321 §4.5.2).
            let line = line.strip_prefix(b".").unwrap_or(&line);
            // Past the limit the rest is read and dropped, to answer in turn.
            too_big |= message.len() + line.len() + 2 > MAX_MESSAGE;
            if !too_big {
                message.extend_from_slice(line);
                message.extend_from_slice(b"\r\n");
            }
        }
        self.envelope = None;
        if too_big {
            return self.reply("552 5.3.4 message too big").await;
        }
        if self.server.mailbox.failing() == Some(FailAt::Data) {
            return self.reply("451 4.3.0 the mailbox fails on purpose").await;
        }
        self.server.mailbox.keep(ReceivedMail::parse(
            envelope.from,
            envelope.to,
            message,
            self.login.clone(),
            self.encrypted,
        ));
        self.reply("250 2.0.0 OK: kept").await
    }

    /// One line without its line ending (CRLF, or a bare LF); `None` when
    /// the client hung up.
    async fn read_line(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        let read = timeout(
            IDLE,
            (&mut self.io).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        let Ok(read) = read else {
            self.reply("421 4.4.2 idle too long").await?;
            bail!("the client was idle too long");
        };
        if read.context("reading from the client")? == 0 {
            return Ok(None);
        }
        if line.pop() != Some(b'\n') {
            if line.len() + 1 >= MAX_LINE {
                self.reply("500 5.5.6 line too long").await?;
                bail!("a line over {MAX_LINE} bytes");
            }
            // The client hung up in the middle of a line.
            return Ok(None);
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Some(line))
    }

    async fn reply(&mut self, text: &str) -> anyhow::Result<()> {
        let stream = self.io.get_mut();
        stream
            .write_all(format!("{text}\r\n").as_bytes())
            .await
            .context("writing to the client")?;
        stream.flush().await.context("writing to the client")
    }
}

/// `arg` after a case-insensitive `keyword` (`FROM:`, `TO:`).
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim_start())
}

/// `<address> PARAM=value ...` as the address and the parameters.
fn path_and_params(rest: &str) -> Option<(String, Vec<&str>)> {
    let inner = rest.strip_prefix('<')?;
    let close = inner.find('>')?;
    let params = inner[close + 1..].split_whitespace().collect();
    Some((inner[..close].to_owned(), params))
}

/// Base64 as UTF-8 text (`=` is an empty answer, RFC 4954).
fn decode(answer: &str) -> Option<String> {
    if answer == "=" {
        return Some(String::new());
    }
    String::from_utf8(BASE64.decode(answer).ok()?).ok()
}

/// `authzid NUL authcid NUL password` (RFC 4616).
fn plain_login(plain: &str) -> Option<Login> {
    let mut parts = plain.split('\0');
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Login {
        user: user.to_owned(),
        password: password.to_owned().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn paths_and_parameters_parse() {
        assert_eq!(
            strip_keyword("from: <a@b.test> SIZE=10 BODY=8BITMIME", "FROM:")
                .and_then(path_and_params),
            Some(("a@b.test".to_owned(), vec!["SIZE=10", "BODY=8BITMIME"]))
        );
        assert_eq!(
            strip_keyword("FROM:<>", "FROM:").and_then(path_and_params),
            Some((String::new(), vec![]))
        );
        assert_eq!(
            strip_keyword("TO:a@b.test", "TO:").and_then(path_and_params),
            None
        );
        assert_eq!(strip_keyword("T", "TO:"), None);
    }

    #[test]
    fn plain_credentials_decode() {
        let login = decode(&BASE64.encode("\0user\0p@ss")).and_then(|p| plain_login(&p));
        let login = login.unwrap();
        assert_eq!(login.user, "user");
        assert_eq!(login.password.expose_secret(), "p@ss");
        assert!(plain_login("only-one").is_none());
        assert!(plain_login("a\0b\0c\0d").is_none());
        assert_eq!(decode("="), Some(String::new()));
        assert_eq!(decode("not base64!"), None);
    }
}
