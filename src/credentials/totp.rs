use super::sealing::{Kek, Sealed};
use crate::domain::{OtpCode, UserId};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use totp_rs::{Builder, Secret, Totp};

/// RFC 6238's time step, which every authenticator app uses.
const STEP_SECS: u64 = 30;

/// An authenticator-app secret (RFC 6238: SHA-1, 6 digits, 30 s steps),
/// kept in its base32 form. At least 128 bits, as RFC 4226 asks.
#[derive(Clone)]
pub struct TotpSecret(SecretString);

impl TotpSecret {
    /// A new 160-bit secret from the OS CSPRNG.
    pub fn generate() -> Self {
        Self(Secret::generate().to_base32().into())
    }

    pub fn parse(base32: &str) -> Result<Self, crate::domain::ParseError> {
        let normalised: String = base32
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let secret = Self(normalised.into());
        secret.totp(None).map_err(|_| {
            crate::domain::ParseError("totp_secret must be base32 of at least 128 bits")
        })?;
        Ok(secret)
    }

    pub fn expose_base32(&self) -> &str {
        self.0.expose_secret()
    }

    /// Checks a code against the current 30 s step and one step either side
    /// (clock skew). Returns the matching step, the latest if several match,
    /// so the caller can refuse it next time (RFC 6238 §5.2).
    pub fn verify(&self, code: &OtpCode, now: DateTime<Utc>) -> Option<u64> {
        let totp = self.totp(None).ok()?;
        let current = u64::try_from(now.timestamp()).ok()? / STEP_SECS;
        let mut matched = None;
        // Every candidate is compared, so timing does not tell which step matched.
        for step in current.saturating_sub(1)..=current + 1 {
            let expected = totp.generate(step * STEP_SECS).to_string();
            if bool::from(expected.as_bytes().ct_eq(code.expose().as_bytes())) {
                matched = Some(step);
            }
        }
        matched
    }

    /// The code an authenticator app shows at `now`.
    pub fn code_at(&self, now: DateTime<Utc>) -> Option<String> {
        let time = u64::try_from(now.timestamp()).ok()?;
        Some(self.totp(None).ok()?.generate(time).to_string())
    }

    /// The `otpauth://` URI that authenticator apps import (usually as a QR code).
    pub fn provisioning_uri(&self, issuer: &str, account: &str) -> Option<String> {
        self.totp(Some((issuer, account))).ok()?.to_url().ok()
    }

    fn totp(&self, label: Option<(&str, &str)>) -> Result<Totp, totp_rs::TotpError> {
        let secret = Secret::try_from_base32(self.0.expose_secret())
            .map_err(|_| totp_rs::TotpError::SecretNotSet)?;
        let mut builder = Builder::new().with_secret(secret);
        if let Some((issuer, account)) = label {
            builder = builder
                .with_issuer(Some(issuer.replace(':', "")))
                .with_account_name(account.replace(':', ""));
        }
        builder.build()
    }
}

impl TryFrom<String> for TotpSecret {
    type Error = crate::domain::ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TotpSecret> for String {
    fn from(secret: TotpSecret) -> Self {
        secret.0.expose_secret().to_owned()
    }
}

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

/// In constant time: a secret is compared only with another secret.
impl PartialEq for TotpSecret {
    fn eq(&self, other: &Self) -> bool {
        self.expose_base32()
            .as_bytes()
            .ct_eq(other.expose_base32().as_bytes())
            .into()
    }
}

impl Eq for TotpSecret {}

impl serde::Serialize for TotpSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

impl<'de> serde::Deserialize<'de> for TotpSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A TOTP secret as a user record keeps it: sealed with the operator's
/// key-encryption key, or in clear where there is none (the embedded
/// store, whose records never leave the process; a Redis without a KEK,
/// which the service warns of at start). Records written before sealing
/// hold the clear form, which still reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum StoredTotp {
    Sealed(Sealed),
    Clear(TotpSecret),
}

/// Seals TOTP secrets for the store and opens them to check a code, each
/// bound to its user: a sealed secret copied into another user's record
/// does not open.
#[derive(Debug, Clone, Default)]
pub struct TotpVault {
    kek: Option<Arc<Kek>>,
}

impl TotpVault {
    pub fn new(kek: Option<Kek>) -> Self {
        Self {
            kek: kek.map(Arc::new),
        }
    }

    pub fn seal(&self, user: UserId, secret: TotpSecret) -> anyhow::Result<StoredTotp> {
        match &self.kek {
            Some(kek) => Ok(StoredTotp::Sealed(
                kek.seal_for(&purpose(user), secret.expose_base32().as_bytes())?,
            )),
            None => Ok(StoredTotp::Clear(secret)),
        }
    }

    pub fn open(&self, user: UserId, stored: &StoredTotp) -> anyhow::Result<TotpSecret> {
        match (stored, &self.kek) {
            (StoredTotp::Clear(secret), _) => Ok(secret.clone()),
            (StoredTotp::Sealed(sealed), Some(kek)) => {
                let plain = kek.open_for(&purpose(user), sealed)?;
                let base32 = std::str::from_utf8(&plain).context("a sealed TOTP secret")?;
                TotpSecret::parse(base32).map_err(|e| anyhow::anyhow!(e.0))
            }
            (StoredTotp::Sealed(_), None) => anyhow::bail!(
                "a TOTP secret is sealed, but this instance has no key-encryption key (WIZARD_KEK)"
            ),
        }
    }
}

fn purpose(user: UserId) -> Vec<u8> {
    format!("TOTP secret of user {user} (signin-wizard v1)").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    // RFC 6238 appendix B, SHA-1 seed "12345678901234567890", truncated to 6 digits.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn matches_rfc6238_vectors_with_one_step_of_skew() {
        let secret = TotpSecret::parse(RFC_SECRET).unwrap();
        let at = Utc.timestamp_opt(59, 0).unwrap();
        let code = OtpCode::parse("287082").unwrap();
        assert_eq!(secret.verify(&code, at), Some(1));
        assert_eq!(
            secret.verify(&code, at + chrono::Duration::seconds(30)),
            Some(1)
        );
        assert_eq!(
            secret.verify(&code, at + chrono::Duration::seconds(61)),
            None
        );
        let later = Utc.timestamp_opt(1_111_111_109, 0).unwrap();
        assert_eq!(
            secret.verify(&OtpCode::parse("081804").unwrap(), later),
            Some(37_037_036)
        );
    }

    #[test]
    fn refuses_short_or_malformed_secrets() {
        assert!(TotpSecret::parse("JBSWY3DPEHPK3PXP").is_err()); // 80 bits
        assert!(TotpSecret::parse("not base32!").is_err());
        assert!(TotpSecret::parse(&TotpSecret::generate().expose_base32().to_lowercase()).is_ok());
    }

    #[test]
    fn provisioning_uri_names_issuer_and_account() {
        let uri = TotpSecret::parse(RFC_SECRET)
            .unwrap()
            .provisioning_uri("signin-wizard", "ann@example.com")
            .unwrap();
        assert!(
            uri.starts_with("otpauth://totp/signin-wizard:ann%40example.com?secret="),
            "{uri}"
        );
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_user_and_with_the_key() {
        let kek = || {
            Kek::parse(
                &"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
                    .to_owned()
                    .into(),
            )
            .unwrap()
        };
        let vault = TotpVault::new(Some(kek()));
        let (alice, bob) = (UserId::random(), UserId::random());
        let secret = TotpSecret::parse(RFC_SECRET).unwrap();
        let sealed = vault.seal(alice, secret).unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains(RFC_SECRET), "{json}");
        let read: StoredTotp = serde_json::from_str(&json).unwrap();
        assert!(matches!(read, StoredTotp::Sealed(_)));
        assert_eq!(
            vault.open(alice, &read).unwrap().expose_base32(),
            RFC_SECRET
        );
        assert!(vault.open(bob, &read).is_err(), "moved to another user");
        assert!(TotpVault::new(None).open(alice, &read).is_err(), "no key");
        // A record from before sealing (or without a key) holds the clear form.
        let clear: StoredTotp = serde_json::from_str(&format!("\"{RFC_SECRET}\"")).unwrap();
        assert_eq!(vault.open(bob, &clear).unwrap().expose_base32(), RFC_SECRET);
        let unsealed = TotpVault::new(None).seal(alice, TotpSecret::parse(RFC_SECRET).unwrap());
        assert!(matches!(unsealed.unwrap(), StoredTotp::Clear(_)));
    }
}
