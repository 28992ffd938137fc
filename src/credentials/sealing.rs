//! The operator's key-encryption key (KEK): the keyring and TOTP secrets
//! are sealed with it (AES-256-GCM, AWS-LC) before they are stored, so that
//! reading the store is not enough to sign tokens or compute codes.

use anyhow::Context as _;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Binds a sealed value to its use: a sealed keyring opens only as one.
const KEYRING: &[u8] = b"signin-wizard keyring v1";

pub struct Kek(LessSafeKey);

/// What the store keeps of a sealed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// 96 random bits, base64.
    nonce: String,
    /// The value and its 128-bit tag, base64.
    ciphertext: String,
}

impl Kek {
    /// 32 bytes, base64 (`openssl rand -base64 32`), as in `WIZARD_KEK` or its file.
    pub fn parse(text: &SecretString) -> anyhow::Result<Kek> {
        let bytes = STANDARD
            .decode(text.expose_secret().trim())
            .ok()
            .filter(|bytes| bytes.len() == 32)
            .context(
                "the key-encryption key must be 32 bytes in base64 (openssl rand -base64 32)",
            )?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| anyhow::anyhow!("the key-encryption key is unusable"))?;
        Ok(Kek(LessSafeKey::new(key)))
    }

    /// Seals the keyring.
    pub fn seal(&self, plain: &[u8]) -> anyhow::Result<Sealed> {
        self.seal_for(KEYRING, plain)
    }

    /// The keyring, if this key sealed it and nobody changed it.
    pub fn open(&self, sealed: &Sealed) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        self.open_for(KEYRING, sealed)
    }

    /// Seals `plain` for `purpose` (authenticated, not secret): it opens
    /// only for the same purpose, so a sealed value cannot be moved to
    /// another use, or to another user when the purpose names one.
    pub fn seal_for(&self, purpose: &[u8], plain: &[u8]) -> anyhow::Result<Sealed> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("the system's randomness failed"))?;
        // Sealed in place: until then the buffer holds the secret.
        let mut data = Zeroizing::new(plain.to_vec());
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut *data,
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        Ok(Sealed {
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(&*data),
        })
    }

    /// The value sealed for `purpose`, if this key sealed it and nobody changed it.
    pub fn open_for(&self, purpose: &[u8], sealed: &Sealed) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let what = String::from_utf8_lossy(purpose);
        let refused = || {
            anyhow::anyhow!(
                "the key-encryption key does not open the stored {what} (another key, or changed data)"
            )
        };
        let nonce: [u8; NONCE_LEN] = STANDARD
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(refused)?;
        let mut data = Zeroizing::new(STANDARD.decode(&sealed.ciphertext).map_err(|_| refused())?);
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut data,
            )
            .map_err(|_| refused())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::parse(&STANDARD.encode([byte; 32]).into()).unwrap()
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_unchanged() {
        let sealed = kek(1).seal(b"the keyring").unwrap();
        assert_eq!(kek(1).open(&sealed).unwrap().as_slice(), b"the keyring");
        assert!(!sealed.ciphertext.contains("keyring"));
        assert!(kek(2).open(&sealed).is_err());
        let mut changed = sealed.clone();
        changed.ciphertext = STANDARD.encode(b"something else entirely, 16+ bytes");
        assert!(kek(1).open(&changed).is_err());
        // A new nonce for every seal.
        assert_ne!(kek(1).seal(b"the keyring").unwrap(), sealed);
    }

    #[test]
    fn only_32_bytes_of_base64_make_a_kek() {
        for bad in [
            "",
            "short",
            &STANDARD.encode([0u8; 16]),
            &STANDARD.encode([0u8; 33]),
            "!!!",
        ] {
            let error = Kek::parse(&bad.to_owned().into()).unwrap_err().to_string();
            assert!(error.contains("32 bytes"), "{error}");
            assert!(
                bad.is_empty() || !error.contains(bad),
                "the value is not repeated"
            );
        }
        assert!(Kek::parse(&format!(" {}\n", STANDARD.encode([7u8; 32])).into()).is_ok());
    }
}
