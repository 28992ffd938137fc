use super::ParseError;

/// A single-use backup code, the way back in without the phone: ten
/// digits (typed like any other code, shown as `12345-67890`). Each holds
/// about 33 bits; an account has ten, stored only as keyed digests, and
/// every wrong one counts against the account's lockout.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupCode(String);

impl BackupCode {
    pub const DIGITS: usize = 10;

    /// Ten digits; spaces and hyphens between them (as shown, or as a
    /// person groups them) are dropped.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let digits: String = raw
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .collect();
        if digits.len() != Self::DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError("a backup code is 10 digits"));
        }
        Ok(Self(digits))
    }

    /// One draw from the operating system's CSPRNG, uniform over every code.
    pub fn random() -> Self {
        use rand::Rng;
        let n = rand::rngs::OsRng.gen_range(0..10_000_000_000u64);
        Self(format!("{n:010}"))
    }

    /// The digits alone, as digested.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// As shown to the person: two groups of five.
    pub fn display(&self) -> String {
        let (first, second) = self.0.split_at(Self::DIGITS / 2);
        format!("{first}-{second}")
    }
}

impl std::fmt::Debug for BackupCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupCode(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_digits_grouped_or_not() {
        for ok in ["0123456789", "01234-56789", " 01234 56789 "] {
            assert_eq!(BackupCode::parse(ok).unwrap().expose(), "0123456789");
        }
        for bad in [
            "",
            "123456",
            "12345678901",
            "01234-5678a",
            "０１２３４５６７８９",
        ] {
            assert!(BackupCode::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let drawn = BackupCode::random();
        assert_eq!(BackupCode::parse(&drawn.display()).unwrap(), drawn);
        assert_eq!(format!("{drawn:?}"), "BackupCode(..)");
    }
}
