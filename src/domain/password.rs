use super::ParseError;
use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

/// Longest password we hash: argon2 cost grows with input, so a cap stops
/// cheap DoS. Far above NIST's "at least 64 characters allowed".
const MAX_BYTES: usize = 1024;

/// Fewest characters of a new password (NIST SP 800-63B §3.1.1.2).
const MIN_CHARS: usize = 8;

/// A password offered at sign-in. Any non-empty string is a possible
/// password. It is compared in Unicode NFKC form (NIST SP 800-63B
/// §3.1.1.2), so the same password typed on two keyboards that encode it
/// differently matches; as typed too when that differs, for passwords set
/// before they were normalized.
#[derive(Clone)]
pub struct Password {
    normalized: SecretString,
    as_typed: Option<SecretString>,
}

impl Password {
    pub fn parse(raw: SecretString) -> Result<Self, ParseError> {
        let typed = raw.expose_secret();
        if typed.is_empty() {
            return Err(ParseError("password must not be empty"));
        }
        if typed.len() > MAX_BYTES {
            return Err(ParseError("password is too long"));
        }
        let normalized: String = typed.nfkc().collect();
        // NFKC can lengthen text (up to 18 times); the cap holds for what is hashed.
        if normalized.len() > MAX_BYTES {
            return Err(ParseError("password is too long"));
        }
        let as_typed = (normalized != typed).then(|| raw.clone());
        Ok(Self {
            normalized: normalized.into(),
            as_typed,
        })
    }

    /// What is hashed and compared.
    pub fn expose(&self) -> &str {
        self.normalized.expose_secret()
    }

    /// The password as typed, when normalizing changed it.
    pub fn as_typed(&self) -> Option<&str> {
        self.as_typed.as_ref().map(|p| p.expose_secret())
    }
}

/// A password being set: at least 8 characters, no composition rules, no
/// truncation, and not one that is common or easy to guess (NIST SP
/// 800-63B §3.1.1.2).
#[derive(Clone)]
pub struct NewPassword(Password);

impl NewPassword {
    pub fn parse(raw: SecretString) -> Result<Self, ParseError> {
        let password = Password::parse(raw)?;
        let text = password.expose();
        if text.chars().count() < MIN_CHARS {
            return Err(ParseError("password must be at least 8 characters"));
        }
        // zxcvbn's score 0 or 1: fewer than a million guesses. That covers its
        // list of 30,000 common passwords (with l33t and reversed variants),
        // dictionary words, names, dates, keyboard walks and repeats. It reads
        // at most 100 characters, so the cost is bounded (well under a millisecond).
        if zxcvbn::zxcvbn(text, &[]).score() < zxcvbn::Score::Two {
            return Err(ParseError(
                "password is too common or too easy to guess; a longer passphrase works",
            ));
        }
        Ok(Self(password))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The same password as one offered at sign-in, to compare it with a stored hash.
    pub fn as_password(&self) -> &Password {
        &self.0
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

    fn new(text: &str) -> Result<NewPassword, ParseError> {
        NewPassword::parse(text.to_owned().into())
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(Password::parse("".into()).is_err());
        assert!(Password::parse("x".repeat(MAX_BYTES + 1).into()).is_err());
        assert!(Password::parse("x".into()).is_ok());
        // 57 characters that NFKC makes 18 each: over the cap once normalized.
        assert!(Password::parse("\u{FDFA}".repeat(57).into()).is_err());
        assert!(new("short").is_err());
        assert!(new("a long enough passphrase").is_ok());
        // Long passwords are whole: 64 characters and far more, nothing cut.
        let long = "correct horse battery staple ".repeat(30);
        assert_eq!(new(&long).unwrap().expose(), long);
    }

    #[test]
    fn common_and_guessable_passwords_are_refused() {
        for weak in [
            "password",
            "password1",
            "12345678",
            "qwertyuiop",
            "iloveyou",
            "P@ssw0rd",
            "aaaaaaaaaaaa",
            "abcdefgh",
            "drowssap",
            "sunshine",
            "football1",
        ] {
            let refused = new(weak).err().map(|e| e.0);
            assert!(refused.is_some_and(|m| m.contains("too common")), "{weak}");
        }
        // No composition rules: a passphrase of plain words is fine.
        for strong in [
            "correct horse battery staple",
            "tiny blue umbrellas dance",
            "pw-9f1c2e7a",
        ] {
            assert!(new(strong).is_ok(), "{strong}");
        }
    }

    #[test]
    fn passwords_compare_in_nfkc_form() {
        // "é" composed, and as "e" with a combining accent: one password.
        let composed = Password::parse("caf\u{e9} au lait".into()).unwrap();
        let decomposed = Password::parse("cafe\u{301} au lait".into()).unwrap();
        assert_eq!(composed.expose(), decomposed.expose());
        assert_eq!(composed.as_typed(), None);
        assert_eq!(decomposed.as_typed(), Some("cafe\u{301} au lait"));
        // Full-width letters are their ASCII selves.
        let wide = Password::parse("\u{ff50}\u{ff41}\u{ff53}\u{ff53}".into()).unwrap();
        assert_eq!(wide.expose(), "pass");
    }
}
