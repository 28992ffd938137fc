use super::ParseError;
use secrecy::{ExposeSecret, SecretString};

/// Longest password we hash: argon2 cost grows with input, so a cap stops cheap DoS.
const MAX_BYTES: usize = 1024;

/// A password offered at sign-in. Any non-empty string is a possible password.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    pub fn parse(raw: SecretString) -> Result<Self, ParseError> {
        let len = raw.expose_secret().len();
        if len == 0 {
            return Err(ParseError("password must not be empty"));
        }
        if len > MAX_BYTES {
            return Err(ParseError("password is too long"));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A password being set by an operator: held to a minimum length (NIST SP 800-63B: 8).
#[derive(Clone)]
pub struct NewPassword(Password);

impl NewPassword {
    pub fn parse(raw: SecretString) -> Result<Self, ParseError> {
        if raw.expose_secret().chars().count() < 8 {
            return Err(ParseError("password must be at least 8 characters"));
        }
        Password::parse(raw).map(Self)
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced() {
        assert!(Password::parse("".into()).is_err());
        assert!(Password::parse("x".repeat(MAX_BYTES + 1).into()).is_err());
        assert!(Password::parse("x".into()).is_ok());
        assert!(NewPassword::parse("short".into()).is_err());
        assert!(NewPassword::parse("long enough".into()).is_ok());
    }
}
