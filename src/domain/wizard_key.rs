use super::ParseError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A 128-bit secret handed out with a new wizard (`meta.wizardKey`) and sent
/// back as `X-Wizard-Key`. A v4 UUID alone carries 122 random bits; with
/// the key a handle carries 250, above ASVS 5.0 §11.5.1's 128.
#[derive(Clone, PartialEq, Eq)]
pub struct WizardKey(String);

impl WizardKey {
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let raw = raw.trim();
        match URL_SAFE_NO_PAD.decode(raw) {
            Ok(bytes) if bytes.len() == 16 => Ok(Self(raw.to_owned())),
            _ => Err(ParseError("X-Wizard-Key is not a wizard key")),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps: the key itself never is.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for WizardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WizardKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let key = WizardKey::generate();
        assert_eq!(WizardKey::parse(key.expose()).unwrap(), key);
        assert_ne!(WizardKey::generate(), key);
        assert!(WizardKey::parse("short").is_err());
        assert!(WizardKey::parse(&"A".repeat(40)).is_err());
    }
}
