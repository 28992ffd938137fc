use super::ParseError;
use serde::{Deserialize, Serialize};

/// A phone number in E.164 form (`+` and 8 to 15 digits); spaces, dashes,
/// dots and brackets that people type are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let compact: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let digits = compact.strip_prefix('+').unwrap_or("");
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError(
                "phone must be in international form, e.g. +15551234567",
            ));
        }
        Ok(Self(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(phone: PhoneNumber) -> Self {
        phone.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164_with_punctuation() {
        assert_eq!(
            PhoneNumber::parse("+1 (555) 123-4567").unwrap().as_str(),
            "+15551234567"
        );
    }

    #[test]
    fn refuses_local_or_malformed_numbers() {
        for bad in [
            "5551234567",
            "+123",
            "+1555abc4567",
            "+1234567890123456",
            "",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
