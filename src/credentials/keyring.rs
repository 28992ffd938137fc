use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
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
    /// Draws a new 2048-bit RSA key and pepper (AWS-LC, from the OS's
    /// randomness; a fraction of a second).
    pub fn generate() -> anyhow::Result<Self> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::rsa::{KeyPair, KeySize};
        use rand::RngCore;
        let key = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("generating an RSA key failed"))?;
        let der = key
            .as_der()
            .map_err(|_| anyhow::anyhow!("encoding the RSA key failed"))?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref()));
        let mut pepper = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut pepper);
        Ok(Self {
            signing_key_pem: pem.into(),
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
