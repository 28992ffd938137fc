use super::ParseError;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};

/// Largest encoded fingerprint accepted; real ones are a few hundred bytes.
const MAX_ENCODED_BYTES: usize = 4096;
const MAX_USER_AGENT_CHARS: usize = 512;

/// Padding is optional in the wild (browsers' `btoa` pads, many SDKs don't).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The client's device description: base64 of a JSON object that names at
/// least its `user_agent`. We keep the encoded form verbatim so that later
/// steps can be compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFingerprint {
    encoded: String,
    user_agent: String,
}

impl DeviceFingerprint {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let encoded = raw.trim();
        if encoded.is_empty() {
            return Err(ParseError("device_fingerprint must not be empty"));
        }
        if encoded.len() > MAX_ENCODED_BYTES {
            return Err(ParseError("device_fingerprint is too large"));
        }
        let json = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| ParseError("device_fingerprint is not valid base64"))?;
        let not_an_object =
            || ParseError("device_fingerprint must be a base64 JSON object with a user_agent");
        // An object, not anything serde could fill a struct from (an array).
        let decoded = match serde_json::from_slice(&json).map_err(|_| not_an_object())? {
            serde_json::Value::Object(fields) => fields,
            _ => return Err(not_an_object()),
        };
        let user_agent = match decoded.get("user_agent").cloned().unwrap_or_default() {
            serde_json::Value::String(ua) if !ua.trim().is_empty() => ua,
            _ => {
                return Err(ParseError(
                    "device_fingerprint.user_agent must be a non-empty string",
                ));
            }
        };
        if user_agent.chars().count() > MAX_USER_AGENT_CHARS {
            return Err(ParseError("device_fingerprint.user_agent is too long"));
        }
        // Kept unpadded, so one fingerprint compares equal however it was padded.
        let encoded = encoded.trim_end_matches('=').to_owned();
        Ok(Self {
            encoded,
            user_agent,
        })
    }

    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// As the client sent it (unpadded): all a stored fingerprint keeps.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    #[test]
    fn reads_the_b2core_example() {
        let raw = "eyJ1c2VyX2FnZW50IjoiTW96aWxsYVwvNS4wIChXaW5kb3dzIE5UIDEwLjA7IFdpbjY0OyB4NjQpIEFwcGxlV2ViS2l0XC81MzcuMzYgKEtIVE1MLCBsaWtlIEdlY2tvKSBDaHJvbWVcLzExOC4wLjAuMCBTYWZhcmlcLzUzNy4zNiJ9";
        let fp = DeviceFingerprint::parse(raw).unwrap();
        assert!(fp.user_agent().starts_with("Mozilla/5.0"));
    }

    #[test]
    fn padding_is_optional_and_does_not_matter() {
        let json = br#"{"user_agent":"curl/8","screen":"1x1"}"#;
        let padded = DeviceFingerprint::parse(&STANDARD.encode(json)).unwrap();
        assert_eq!(
            padded,
            DeviceFingerprint::parse(&STANDARD_NO_PAD.encode(json)).unwrap()
        );
    }

    #[test]
    fn refuses_what_is_not_a_fingerprint() {
        let cases = [
            String::new(),
            "not base64!".into(),
            STANDARD.encode("[1,2]"),
            STANDARD.encode(r#"["curl/8"]"#),
            STANDARD.encode(r#"{"agent":"x"}"#),
            STANDARD.encode(r#"{"user_agent":42}"#),
            STANDARD.encode(r#"{"user_agent":"  "}"#),
            STANDARD.encode(format!(r#"{{"user_agent":"{}"}}"#, "a".repeat(4000))),
        ];
        for bad in cases {
            assert!(
                DeviceFingerprint::parse(&bad).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
