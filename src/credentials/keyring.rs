use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The secrets every instance sharing a store must agree on: the token
/// signing key and the pepper for SMS code digests. The first instance to
/// start creates it in the store; the others read it (see `store`).
#[derive(Clone, Serialize, Deserialize)]
pub struct Keyring {
    /// RSA private key, PKCS#8 PEM.
    #[serde(serialize_with = "expose")]
    signing_key_pem: SecretString,
    /// 32 random bytes, base64.
    #[serde(serialize_with = "expose")]
    code_pepper: SecretString,
}

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

impl Keyring {
    /// Draws a new 2048-bit RSA key and pepper (takes a fraction of a second).
    pub fn generate() -> anyhow::Result<Self> {
        use rand::RngCore;
        let mut rng = rand::rngs::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).context("generating RSA key")?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding RSA key")?;
        let mut pepper = [0u8; 32];
        rng.fill_bytes(&mut pepper);
        Ok(Self {
            signing_key_pem: pem.as_str().to_owned().into(),
            code_pepper: STANDARD.encode(pepper).into(),
        })
    }

    /// Replaces the signing key with an operator-provided PEM (PKCS#1 or PKCS#8).
    pub fn with_signing_key(self, pem: SecretString) -> Self {
        Self {
            signing_key_pem: pem,
            ..self
        }
    }

    pub fn signing_key_pem(&self) -> &SecretString {
        &self.signing_key_pem
    }

    pub fn code_pepper(&self) -> anyhow::Result<Vec<u8>> {
        STANDARD
            .decode(self.code_pepper.expose_secret())
            .context("keyring pepper is not base64")
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(..)")
    }
}
