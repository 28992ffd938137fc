//! Parsers for settings that may hold secrets: an empty value is an error
//! (never "configured as empty"), and no error repeats the value it refused.

use crate::domain::ParseError;
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use secrecy::SecretString;
use std::ffi::OsStr;
use std::path::PathBuf;

/// The URL of a service we call (Redis, the SMS gateway, the reCAPTCHA
/// verifier). It may carry credentials (HTTP URLs' user and password go out
/// as Basic auth, and gateways put keys in the user name, the path or the
/// query), so it prints as scheme, host and port only, the rest blanked.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl(reqwest::Url);

impl ServiceUrl {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let raw = non_empty(raw)?;
        reqwest::Url::parse(raw)
            .map(Self)
            .map_err(|_| ParseError("is not an absolute URL"))
    }

    /// The URL with its credentials, for the client that connects with it.
    pub fn expose(&self) -> &reqwest::Url {
        &self.0
    }
}

impl std::str::FromStr for ServiceUrl {
    type Err = ParseError;
    fn from_str(raw: &str) -> Result<Self, ParseError> {
        Self::parse(raw)
    }
}

impl std::fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.clone();
        if !matches!(shown.path(), "" | "/") {
            shown.set_path("/***");
        }
        if shown.query().is_some() {
            shown.set_query(Some("***"));
        }
        if shown.fragment().is_some() {
            shown.set_fragment(Some("***"));
        }
        let hidden = (shown.password().is_none() || shown.set_password(Some("***")).is_ok())
            && (shown.username().is_empty() || shown.set_username("***").is_ok());
        if !hidden {
            return write!(f, "{}:(hidden)", shown.scheme());
        }
        write!(f, "{shown}")
    }
}

impl std::fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceUrl({self})")
    }
}

fn non_empty(raw: &str) -> Result<&str, ParseError> {
    match raw.trim() {
        "" => Err(ParseError("is set but empty: give a value or unset it")),
        trimmed => Ok(trimmed),
    }
}

/// A secret setting (kept as given, but never empty).
pub fn secret(raw: &str) -> Result<SecretString, ParseError> {
    non_empty(raw)?;
    Ok(raw.to_owned().into())
}

/// A non-empty word of text (an issuer, a site key, a hostname).
pub fn text(raw: &str) -> Result<String, ParseError> {
    non_empty(raw).map(str::to_owned)
}

pub fn path(raw: &str) -> Result<PathBuf, ParseError> {
    non_empty(raw).map(PathBuf::from)
}

/// A clap value parser from `parse` whose errors name the setting (its
/// variable and flag) but never repeat the value: it may be a secret.
#[derive(Clone)]
pub struct Quiet<T>(fn(&str) -> Result<T, ParseError>);

pub fn quiet<T>(parse: fn(&str) -> Result<T, ParseError>) -> Quiet<T> {
    Quiet(parse)
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Quiet<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let refused = match value.to_str() {
            Some(text) => (self.0)(text),
            None => Err(ParseError("is not UTF-8")),
        };
        refused.map_err(|ParseError(why)| {
            let name = arg.map_or_else(String::new, |arg| {
                let flag = arg.get_long().unwrap_or_default();
                match arg.get_env() {
                    Some(env) => format!("{} (--{flag})", env.to_string_lossy()),
                    None => format!("--{flag}"),
                }
            });
            clap::Error::raw(ErrorKind::ValueValidation, format!("{name} {why}\n")).with_cmd(cmd)
        })
    }
}

/// A Redis key prefix: anything but the braces that delimit hash tags.
pub fn key_prefix(raw: &str) -> Result<String, ParseError> {
    if raw.contains(['{', '}']) {
        return Err(ParseError(
            "must not contain braces (keys carry Redis Cluster hash tags)",
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_url_prints_only_where_it_goes() {
        let url = ServiceUrl::parse("redis://:p@ss@word@127.0.0.1:6379/0").unwrap();
        assert_eq!(url.expose().password(), Some("p%40ss%40word"));
        assert_eq!(url.to_string(), "redis://:***@127.0.0.1:6379/***");
        assert_eq!(
            format!("{url:?}"),
            "ServiceUrl(redis://:***@127.0.0.1:6379/***)"
        );
        let hook = ServiceUrl::parse("https://acct:tok@sms.example/send?key=abc#k").unwrap();
        assert_eq!(hook.to_string(), "https://***:***@sms.example/***?***#***");
        let slack = ServiceUrl::parse("https://hooks.example/services/T0/B0/s3cr3t").unwrap();
        assert_eq!(slack.to_string(), "https://hooks.example/***");
        let keyed = ServiceUrl::parse("https://api-key-123@sms.example/").unwrap();
        assert_eq!(keyed.to_string(), "https://***@sms.example/");
        assert_eq!(
            ServiceUrl::parse("redis://127.0.0.1").unwrap().to_string(),
            "redis://127.0.0.1"
        );
        assert!(ServiceUrl::parse("  ").is_err());
        assert!(secret("").is_err() && text(" ").is_err() && path("").is_err());
    }
}
