use super::ParseError;

/// A six-digit one-time code as typed by the user (TOTP or SMS).
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

impl OtpCode {
    pub const DIGITS: usize = 6;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let code = raw.trim();
        if code.len() != Self::DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError("code must be exactly 6 digits"));
        }
        Ok(Self(code.to_owned()))
    }

    /// Draws a fresh code from the operating system's CSPRNG.
    pub fn random() -> Self {
        use rand::Rng;
        let n: u32 = rand::rngs::OsRng.gen_range(0..1_000_000);
        Self(format!("{n:06}"))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtpCode(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_six_digits_only() {
        assert_eq!(OtpCode::parse(" 012345 ").unwrap().expose(), "012345");
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert!(OtpCode::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn random_codes_are_well_formed() {
        for _ in 0..100 {
            let code = OtpCode::random();
            assert!(OtpCode::parse(code.expose()).is_ok());
        }
    }

    #[test]
    fn debug_hides_the_code() {
        assert_eq!(
            format!("{:?}", OtpCode::parse("123456").unwrap()),
            "OtpCode(..)"
        );
    }
}
