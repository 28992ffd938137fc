use super::ParseError;

/// A one-time code as typed by the user: six digits for TOTP and SMS,
/// eight for a password reset (which alone, without a second factor, can
/// take an account over: a hundred times harder to guess).
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

impl OtpCode {
    pub const DIGITS: usize = 6;
    pub const RESET_DIGITS: usize = 8;

    /// A TOTP or SMS code.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Self::parse_digits(raw, Self::DIGITS, "code must be exactly 6 digits")
    }

    /// A password-reset code.
    pub fn parse_reset(raw: &str) -> Result<Self, ParseError> {
        Self::parse_digits(raw, Self::RESET_DIGITS, "code must be exactly 8 digits")
    }

    fn parse_digits(raw: &str, digits: usize, refusal: &'static str) -> Result<Self, ParseError> {
        let code = raw.trim();
        if code.len() != digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError(refusal));
        }
        Ok(Self(code.to_owned()))
    }

    /// Draws a fresh TOTP-length code from the operating system's CSPRNG.
    pub fn random() -> Self {
        Self::random_digits(Self::DIGITS)
    }

    /// Draws a fresh reset code from the operating system's CSPRNG.
    pub fn random_reset() -> Self {
        Self::random_digits(Self::RESET_DIGITS)
    }

    /// One draw (one read of the OS's randomness), uniform over every code.
    fn random_digits(digits: usize) -> Self {
        use rand::Rng;
        let exponent = u32::try_from(digits).unwrap_or(u32::MAX);
        let n = rand::rngs::OsRng.gen_range(0..10u64.saturating_pow(exponent));
        Self(format!("{n:0digits$}"))
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
            assert!(OtpCode::parse(OtpCode::random().expose()).is_ok());
            assert!(OtpCode::parse_reset(OtpCode::random_reset().expose()).is_ok());
        }
        assert!(OtpCode::parse_reset("123456").is_err());
        assert!(OtpCode::parse("12345678").is_err());
    }

    #[test]
    fn debug_hides_the_code() {
        assert_eq!(
            format!("{:?}", OtpCode::parse("123456").unwrap()),
            "OtpCode(..)"
        );
    }
}
