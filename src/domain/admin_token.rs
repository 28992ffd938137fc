use super::ParseError;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The admin API's bearer token. Anyone holding it can create users, set
/// passwords and switch the lockout off, so it must be long enough that
/// guessing is hopeless; an empty or short one is refused, never "set".
#[derive(Clone)]
pub struct AdminToken(SecretString);

impl AdminToken {
    /// 32 characters: 192 bits as base64, or a long passphrase.
    pub const MIN_CHARS: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.trim().chars().count() < Self::MIN_CHARS {
            return Err(ParseError(
                "must be at least 32 characters (for example `openssl rand -base64 32`); unset it to turn the admin API off",
            ));
        }
        Ok(Self(raw.to_owned().into()))
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
        assert!(AdminToken::parse("").is_err());
        assert!(AdminToken::parse(&" ".repeat(40)).is_err());
        assert!(AdminToken::parse(&"x".repeat(31)).is_err());
        let token = AdminToken::parse(&"x".repeat(32)).unwrap();
        assert!(token.admits(&"x".repeat(32)));
        assert!(!token.admits(""));
        assert!(!token.admits(&"x".repeat(33)));
        let generated = AdminToken::generate();
        assert_eq!(generated.expose().len(), 43);
        assert!(AdminToken::parse(generated.expose()).is_ok());
        assert_eq!(format!("{generated:?}"), "AdminToken(..)");
    }
}
