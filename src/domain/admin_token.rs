use super::ParseError;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The admin API's bearer token. Anyone holding it can create users, set
/// passwords and switch the lockout off, so it must be long enough that
/// guessing is hopeless; an empty, short or one-letter one is refused,
/// never "set". It must also be sendable in a header: visible ASCII (spaces
/// inside are fine, so a passphrase works).
#[derive(Clone)]
pub struct AdminToken(SecretString);

impl AdminToken {
    /// 32 characters: 192 bits as base64, or a long passphrase.
    pub const MIN_CHARS: usize = 32;
    /// Catches `aaaa…` and the like, not a strength meter: random tokens
    /// (base64, hex) have many more.
    const MIN_DISTINCT: usize = 8;

    /// Surrounding white space (a secret file's last newline) is dropped.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let token = raw.trim();
        if !token.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(ParseError(
                "must be visible ASCII (spaces inside are fine), as an Authorization header carries it",
            ));
        }
        let distinct = token
            .bytes()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if token.len() < Self::MIN_CHARS || distinct < Self::MIN_DISTINCT {
            return Err(ParseError(
                "must be at least 32 characters, not one repeated (for example `openssl rand -base64 32`); unset it to turn the admin API off",
            ));
        }
        Ok(Self(token.to_owned().into()))
    }

    /// 256 random bits from the OS, base64url.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(bytes)
                .into(),
        )
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether `presented` is this token. Compared as SHA-256 digests in
    /// constant time (which hides the length too); an empty one never is.
    pub fn admits(&self, presented: &str) -> bool {
        let expected: [u8; 32] = Sha256::digest(self.expose().as_bytes()).into();
        let presented_digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        !presented.is_empty() && bool::from(presented_digest.ct_eq(&expected))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_empty_tokens_are_refused_and_empty_never_matches() {
        let good = "0123456789abcdef0123456789abcdef";
        assert!(AdminToken::parse("").is_err());
        assert!(AdminToken::parse(&" ".repeat(40)).is_err());
        assert!(AdminToken::parse(&good[1..]).is_err(), "31 characters");
        assert!(AdminToken::parse(&"x".repeat(40)).is_err(), "one letter");
        assert!(AdminToken::parse(&format!("{good}é")).is_err(), "not ASCII");
        assert!(AdminToken::parse("0123456789abcdef\t0123456789abcdef").is_err());
        let phrase = "correct horse battery staple and more";
        assert!(AdminToken::parse(phrase).unwrap().admits(phrase));
        // A secret file's trailing newline is not part of the token.
        let token = AdminToken::parse(&format!("{good}\n")).unwrap();
        assert!(token.admits(good));
        assert!(!token.admits(""));
        assert!(!token.admits(&format!("{good}0")));
        let generated = AdminToken::generate();
        assert_eq!(generated.expose().len(), 43);
        assert!(AdminToken::parse(generated.expose()).is_ok());
        assert_eq!(format!("{generated:?}"), "AdminToken(..)");
    }
}
