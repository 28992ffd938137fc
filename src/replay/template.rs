//! `{{...}}` values in a scenario's paths, headers, bodies and expected
//! values. Parsed and checked when the scenario is loaded (an unknown name
//! never reaches a server); worked out at the moment of the step by the
//! runner, or turned into Hurl's terms by the exporter, both from [`Expr`].

use super::mailbox::Mailbox;
use super::sink::Inbox;
use crate::credentials::TotpSecret;
use anyhow::{Context as _, bail};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a template names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Unique to the run.
    Run,
    /// A device fingerprint, the same throughout the run.
    Fingerprint,
    /// Another one.
    OtherFingerprint,
    /// `filler:N`: N bytes of `x`, for bodies over the size limit.
    Filler(usize),
    /// A fact of a fixture user.
    User { name: String, field: UserField },
    /// What an earlier step captured.
    Captured(String),
    /// `totp_of:NAME`: the authenticator code, at the moment of the step,
    /// of the base32 secret an earlier step captured as NAME (one the
    /// service handed out, such as an enrolment's `data.secret`);
    /// `totp_wrong_of:NAME` (`wrong`), a code that is not valid for it.
    TotpOf { capture: String, wrong: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserField {
    Id,
    Email,
    Password,
    Phone,
    /// The authenticator code at the moment of the step.
    Totp,
    /// The code `Totp` gave last, to send it again.
    LastTotp,
    TotpWrong,
    /// The last code the user's phone received.
    Sms,
    SmsWrong,
    /// The last code mailed to the user's address.
    EmailCode,
}

/// Largest `filler:N`.
const MAX_FILLER: usize = 1 << 20;

impl Expr {
    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text.split_once('.') {
            Some((name, field)) => Expr::User {
                name: name.to_owned(),
                field: match field {
                    "id" => UserField::Id,
                    "email" => UserField::Email,
                    "password" => UserField::Password,
                    "phone" => UserField::Phone,
                    "totp" => UserField::Totp,
                    "last_totp" => UserField::LastTotp,
                    "totp_wrong" => UserField::TotpWrong,
                    "sms" => UserField::Sms,
                    "sms_wrong" => UserField::SmsWrong,
                    "email_code" => UserField::EmailCode,
                    _ => bail!("`{{{{{text}}}}}`: a fixture user has no {field:?}"),
                },
            },
            None => match text {
                "run" => Expr::Run,
                "fingerprint" => Expr::Fingerprint,
                "other_fingerprint" => Expr::OtherFingerprint,
                _ => {
                    let totp_of = [("totp_of:", false), ("totp_wrong_of:", true)]
                        .into_iter()
                        .find_map(|(prefix, wrong)| Some((text.strip_prefix(prefix)?, wrong)));
                    if let Some(n) = text.strip_prefix("filler:") {
                        let bytes = n.parse().context("filler:N takes a number of bytes")?;
                        if bytes > MAX_FILLER {
                            bail!("filler: at most {MAX_FILLER} bytes");
                        }
                        Expr::Filler(bytes)
                    } else if let Some((capture, wrong)) = totp_of {
                        if !is_name(capture) {
                            bail!("`{{{{{text}}}}}`: totp_of:NAME names a capture");
                        }
                        Expr::TotpOf {
                            capture: capture.to_owned(),
                            wrong,
                        }
                    } else if is_name(text) {
                        Expr::Captured(text.to_owned())
                    } else {
                        bail!("`{{{{{text}}}}}` is no name")
                    }
                }
            },
        })
    }
}

/// A capture's name: letters, digits and `_`.
fn is_name(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A piece of a templated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Expr(Expr),
}

/// A string with `{{...}}` templates, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").context("a `{{` without its `}}`")?;
            pieces.push(Piece::Expr(Expr::parse(after[..close].trim())?));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.0
    }

    /// The expression, when the string is one template and nothing else.
    fn alone(&self) -> Option<&Expr> {
        match self.0.as_slice() {
            [Piece::Expr(e)] => Some(e),
            _ => None,
        }
    }
}

/// Every string inside a JSON value.
pub fn strings_in<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings_in(v, out)),
        Value::Object(fields) => fields.values().for_each(|v| strings_in(v, out)),
        _ => {}
    }
}

/// A JSON value with every string's templates rendered by `render`; a
/// string that is one template alone may become any JSON value.
pub fn map_json(
    value: &Value,
    render: &mut impl FnMut(&Template) -> anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    Ok(match value {
        Value::String(s) => render(&Template::parse(s)?)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| map_json(v, render))
                .collect::<anyhow::Result<_>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), map_json(v, render)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// A fixture user as created for this run.
#[derive(Debug, Clone)]
pub struct CreatedUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub phone: Option<String>,
    pub totp: Option<TotpSecret>,
}

/// What the templates of one scenario run refer to.
pub struct Scope<'a> {
    pub run: &'a str,
    pub users: &'a BTreeMap<String, CreatedUser>,
    pub captured: &'a BTreeMap<String, Value>,
    pub inbox: &'a Inbox,
    pub mailbox: &'a Mailbox,
    pub now: DateTime<Utc>,
}

impl Scope<'_> {
    /// `value` with its templates filled in; the TOTP codes it used, by user.
    pub fn fill_json(
        &self,
        value: &Value,
        used: &mut Vec<(String, String)>,
    ) -> anyhow::Result<Value> {
        map_json(value, &mut |template| match template.alone() {
            // A captured number stays a number.
            Some(Expr::Captured(name)) => self.captured(name),
            _ => self.fill(template, used).map(Value::String),
        })
    }

    pub fn fill(
        &self,
        template: &Template,
        used: &mut Vec<(String, String)>,
    ) -> anyhow::Result<String> {
        let mut out = String::new();
        for piece in template.pieces() {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Expr(expr) => match self.value(expr, used)? {
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(out)
    }

    fn captured(&self, name: &str) -> anyhow::Result<Value> {
        self.captured
            .get(name)
            .cloned()
            .with_context(|| format!("nothing was captured as {name:?}"))
    }

    fn value(&self, expr: &Expr, used: &mut Vec<(String, String)>) -> anyhow::Result<Value> {
        let text = match expr {
            Expr::Run => self.run.to_owned(),
            Expr::Fingerprint => fingerprint(&format!("replay/{}", self.run)),
            Expr::OtherFingerprint => fingerprint(&format!("replay-other/{}", self.run)),
            Expr::Filler(bytes) => "x".repeat(*bytes),
            Expr::Captured(name) => return self.captured(name),
            Expr::TotpOf { capture, wrong } => {
                let captured = self.captured(capture)?;
                let secret = captured
                    .as_str()
                    .and_then(|base32| TotpSecret::parse(base32).ok())
                    .with_context(|| format!("{capture:?} holds no base32 TOTP secret"))?;
                match wrong {
                    false => totp_at(&secret, self.now)?,
                    true => wrong_totp(&secret, self.now)?,
                }
            }
            Expr::User { name, field } => {
                let user = self
                    .users
                    .get(name)
                    .with_context(|| format!("no fixture user {name:?}"))?;
                self.user_value(name, user, *field, used)?
            }
        };
        Ok(Value::String(text))
    }

    fn user_value(
        &self,
        name: &str,
        user: &CreatedUser,
        field: UserField,
        used: &mut Vec<(String, String)>,
    ) -> anyhow::Result<String> {
        let phone = || user.phone.as_deref().context("the fixture has no phone");
        let totp = || user.totp.as_ref().context("the fixture has no totp_secret");
        let sms = || {
            self.inbox
                .last_code_for(phone()?)
                .context("no SMS code has reached the sink for this phone")
        };
        Ok(match field {
            UserField::Id => user.id.clone(),
            UserField::Email => user.email.clone(),
            UserField::Password => user.password.clone(),
            UserField::Phone => phone()?.to_owned(),
            UserField::Totp => {
                let code = totp_at(totp()?, self.now)?;
                used.push((name.to_owned(), code.clone()));
                code
            }
            UserField::LastTotp => self
                .captured
                .get(&last_totp_key(name))
                .and_then(Value::as_str)
                .context("no TOTP code was sent for this user yet")?
                .to_owned(),
            UserField::TotpWrong => wrong_totp(totp()?, self.now)?,
            UserField::Sms => sms()?,
            UserField::SmsWrong => wrong_code(&[sms()?]),
            UserField::EmailCode => self
                .mailbox
                .last_code_for(&user.email)
                .context("no email code has reached the mailbox for this address")?,
        })
    }
}

/// Where a run keeps the TOTP code it sent last for a user.
pub fn last_totp_key(user: &str) -> String {
    format!("{user}.last_totp")
}

fn totp_at(secret: &TotpSecret, at: DateTime<Utc>) -> anyhow::Result<String> {
    secret.code_at(at).context("the clock is out of range")
}

/// A six-digit code that `secret` does not accept at `at` (nor one step
/// either side).
fn wrong_totp(secret: &TotpSecret, at: DateTime<Utc>) -> anyhow::Result<String> {
    let near = [-30, 0, 30]
        .map(|s| totp_at(secret, at + Duration::seconds(s)))
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(wrong_code(&near))
}

/// A six-digit code that is none of `valid`.
pub fn wrong_code(valid: &[String]) -> String {
    (0..)
        .map(|n: u32| format!("{:06}", (123_457 + n * 111_111) % 1_000_000))
        .find(|candidate| !valid.contains(candidate))
        .unwrap_or_default()
}

/// A device fingerprint as clients send it: base64 of `{"user_agent": ...}`.
pub fn fingerprint(user_agent: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(serde_json::json!({ "user_agent": user_agent }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_from_captures_fixtures_and_the_sms_inbox() {
        let secret = TotpSecret::generate();
        let users = BTreeMap::from([(
            "alice".to_owned(),
            CreatedUser {
                id: "u1".into(),
                email: "alice-r1@replay.test".into(),
                password: "pw".into(),
                phone: Some("+15550001111".into()),
                totp: Some(secret.clone()),
            },
        )]);
        let captured = BTreeMap::from([("n".to_owned(), Value::from(7))]);
        let inbox = Inbox::default();
        inbox.receive("+15550001111", "654321").unwrap();
        let mailbox = Mailbox::default();
        let scope = Scope {
            run: "r1",
            users: &users,
            captured: &captured,
            inbox: &inbox,
            mailbox: &mailbox,
            now: Utc::now(),
        };
        let mut used = Vec::new();
        let filled = scope
            .fill_json(
                &serde_json::json!({
                    "n": "{{n}}", "path": "/users/{{ alice.id }}/x", "sms": "{{alice.sms}}",
                    "totp": "{{alice.totp}}", "wrong": "{{alice.totp_wrong}}", "list": ["{{run}}"]
                }),
                &mut used,
            )
            .unwrap();
        assert_eq!(filled["n"], 7);
        assert_eq!(filled["path"], "/users/u1/x");
        assert_eq!(filled["sms"], "654321");
        assert_eq!(filled["totp"], secret.code_at(scope.now).unwrap());
        assert_eq!(
            used,
            [("alice".to_owned(), secret.code_at(scope.now).unwrap())]
        );
        assert_ne!(filled["wrong"], filled["totp"]);
        assert_eq!(filled["list"][0], "r1");
        for unknown in [
            "{{nobody.email}}",
            "{{alice.last_totp}}",
            "{{unknown}}",
            // Nothing was mailed to alice.
            "{{alice.email_code}}",
        ] {
            assert!(
                scope
                    .fill(&Template::parse(unknown).unwrap(), &mut used)
                    .is_err(),
                "{unknown}"
            );
        }
        for malformed in [
            "{{run",
            "{{alice.nothing}}",
            "{{a b}}",
            "{{filler:99999999}}",
            "{{}}",
        ] {
            assert!(Template::parse(malformed).is_err(), "{malformed}");
        }
    }

    #[test]
    fn totp_of_is_the_code_of_a_captured_secret_now() {
        let secret = TotpSecret::generate();
        let captured = BTreeMap::from([
            ("secret".to_owned(), Value::from(secret.expose_base32())),
            ("n".to_owned(), Value::from(7)),
            ("word".to_owned(), Value::from("not base32!")),
        ]);
        let (users, inbox, mailbox) = (BTreeMap::new(), Inbox::default(), Mailbox::default());
        let scope = Scope {
            run: "r1",
            users: &users,
            captured: &captured,
            inbox: &inbox,
            mailbox: &mailbox,
            now: Utc::now(),
        };
        let template = Template::parse("{{ totp_of:secret }}").unwrap();
        assert_eq!(
            template.pieces(),
            [Piece::Expr(Expr::TotpOf {
                capture: "secret".into(),
                wrong: false
            })]
        );
        let mut used = Vec::new();
        let filled = scope
            .fill_json(
                &serde_json::json!({ "code": "{{totp_of:secret}}", "wrong": "{{totp_wrong_of:secret}}" }),
                &mut used,
            )
            .unwrap();
        assert_eq!(filled["code"], secret.code_at(scope.now).unwrap());
        let near: Vec<String> = [-30, 0, 30]
            .map(|s| secret.code_at(scope.now + Duration::seconds(s)).unwrap())
            .into();
        let wrong = filled["wrong"].as_str().unwrap();
        assert!(
            wrong.len() == 6 && !near.iter().any(|c| c == wrong),
            "{wrong}"
        );
        assert!(used.is_empty(), "no fixture's code was sent");
        for unusable in [
            "{{totp_of:missing}}",
            "{{totp_of:n}}",
            "{{totp_of:word}}",
            "{{totp_wrong_of:word}}",
        ] {
            let template = Template::parse(unusable).unwrap();
            assert!(scope.fill(&template, &mut used).is_err(), "{unusable}");
        }
        for malformed in [
            "{{totp_of:}}",
            "{{totp_of:a b}}",
            "{{totp_of:a.b}}",
            "{{totp_wrong_of:}}",
        ] {
            assert!(Template::parse(malformed).is_err(), "{malformed}");
        }
    }

    #[test]
    fn a_wrong_code_is_none_of_the_valid_ones() {
        let valid = ["123457".to_owned(), "234568".to_owned()];
        let wrong = wrong_code(&valid);
        assert_eq!(wrong.len(), 6);
        assert!(!valid.contains(&wrong));
    }
}
