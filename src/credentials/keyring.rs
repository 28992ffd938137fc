//! The secrets every instance sharing a store must agree on: the token
//! signing keys and the pepper for code digests and refresh-token MACs.
//! The first instance to start creates it in the store; the others read it,
//! and every instance reloads it when it changes (see `signing_keys`).

use super::signing::{Signer, SigningAlgorithm};
use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Keyring {
    /// Oldest first. Each signs from its `signs_from` until the next one does.
    keys: Vec<SigningKey>,
    /// 32 random bytes, base64.
    #[serde(serialize_with = "expose")]
    code_pepper: SecretString,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pub algorithm: SigningAlgorithm,
    /// PKCS#8 PEM (or PKCS#1 for an operator's RSA key).
    #[serde(serialize_with = "expose")]
    pem: SecretString,
    pub created_at: DateTime<Utc>,
    /// When it starts signing. A rotated-in key is published first, so that
    /// every instance and every verifier's cached JWKS know it before any
    /// token names it.
    pub signs_from: DateTime<Utc>,
}

/// A waiting key this close to signing is kept by a rotation.
const DUE_SOON: Duration = Duration::minutes(1);

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

/// A key with what the keyring says of it at some moment.
pub struct KeyState<'a> {
    /// Its place in [`Keyring::keys`].
    pub index: usize,
    pub key: &'a SigningKey,
    /// Whether it is the one that signs now.
    pub signing: bool,
}

impl SigningKey {
    fn new(
        algorithm: SigningAlgorithm,
        now: DateTime<Utc>,
        signs_from: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        Ok(SigningKey {
            algorithm,
            pem: Signer::generate(algorithm)?,
            created_at: now,
            signs_from,
        })
    }

    pub fn signer(&self) -> anyhow::Result<Signer> {
        Signer::from_pem(self.algorithm, &self.pem)
    }
}

impl Keyring {
    /// A new keyring: one key of `algorithm`, signing from now, and a new
    /// pepper (AWS-LC and the OS's randomness; an RSA key takes a fraction
    /// of a second).
    pub fn generate(algorithm: SigningAlgorithm, now: DateTime<Utc>) -> anyhow::Result<Self> {
        use rand::RngCore;
        let mut pepper = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut pepper);
        Ok(Self {
            keys: vec![SigningKey::new(algorithm, now, now)?],
            code_pepper: STANDARD.encode(pepper).into(),
        })
    }

    /// The keyring of a version before rotation (one RSA key, no dates).
    pub fn from_single_rsa_key(pem: SecretString, pepper: SecretString) -> Self {
        Self {
            keys: vec![SigningKey {
                algorithm: SigningAlgorithm::RS256,
                pem,
                created_at: DateTime::UNIX_EPOCH,
                signs_from: DateTime::UNIX_EPOCH,
            }],
            code_pepper: pepper,
        }
    }

    /// Only an operator's RSA key (PKCS#1 or PKCS#8) signs and verifies;
    /// the pepper stays the shared one.
    pub fn with_signing_key(self, pem: SecretString) -> Self {
        Self::from_single_rsa_key(pem, self.code_pepper)
    }

    /// A new key of `algorithm` that signs from `now + publish_ahead`, and
    /// without the keys no token can need any more (see [`Keyring::needed`]).
    /// A key still waiting to sign (and not about to) signed nothing, so
    /// nothing needs it: the new key takes its place, and rotating often
    /// cannot pile keys up.
    pub fn rotated(
        &self,
        algorithm: SigningAlgorithm,
        now: DateTime<Utc>,
        publish_ahead: Duration,
        keep_for: Duration,
    ) -> anyhow::Result<Self> {
        // Kept: what signs or signed, and a key due within a minute (an
        // instance with a clock ahead, or not reloaded yet, may sign with it).
        let signing = self.signing_index(now);
        let mut keys: Vec<SigningKey> = self
            .needed(now, keep_for)
            .filter(|state| state.index <= signing || state.key.signs_from <= now + DUE_SOON)
            .map(|state| state.key.clone())
            .collect();
        keys.push(SigningKey::new(algorithm, now, now + publish_ahead)?);
        Ok(Self {
            keys,
            code_pepper: self.code_pepper.clone(),
        })
    }

    /// The keys a verifier may need at `now`: those not signing yet, the one
    /// signing, and those that stopped signing less than `keep_for` ago (the
    /// longest a token they signed can live).
    pub fn needed(
        &self,
        now: DateTime<Utc>,
        keep_for: Duration,
    ) -> impl Iterator<Item = KeyState<'_>> {
        let signing = self.signing_index(now);
        self.keys.iter().enumerate().filter_map(move |(i, key)| {
            let replaced_at = self.keys.get(i + 1).map(|next| next.signs_from);
            let needed = match replaced_at {
                Some(at) if at <= now => now < at + keep_for,
                _ => true,
            };
            needed.then_some(KeyState {
                index: i,
                key,
                signing: i == signing,
            })
        })
    }

    /// The key that signs at `now`: the newest whose time has come (the
    /// oldest if none has, which only a clock set back can cause).
    fn signing_index(&self, now: DateTime<Utc>) -> usize {
        self.keys
            .iter()
            .rposition(|key| key.signs_from <= now)
            .unwrap_or(0)
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    const AHEAD: Duration = Duration::minutes(5);
    const KEEP: Duration = Duration::minutes(15);

    fn states(keyring: &Keyring, at: i64) -> Vec<(SigningAlgorithm, bool)> {
        keyring
            .needed(t(at), KEEP)
            .map(|s| (s.key.algorithm, s.signing))
            .collect()
    }

    #[test]
    fn a_rotated_in_key_is_published_first_and_the_old_one_leaves_after_the_longest_token() {
        use SigningAlgorithm::*;
        let first = Keyring::generate(RS256, t(0)).unwrap();
        assert_eq!(states(&first, 0), [(RS256, true)]);
        let second = first.rotated(ES256, t(10), AHEAD, KEEP).unwrap();
        // Published at once, signing five minutes later.
        assert_eq!(states(&second, 10), [(RS256, true), (ES256, false)]);
        assert_eq!(states(&second, 15), [(RS256, false), (ES256, true)]);
        // The old key verifies until the longest token it signed has expired.
        assert_eq!(states(&second, 29), [(RS256, false), (ES256, true)]);
        assert_eq!(states(&second, 30), [(ES256, true)]);
        // Rotating again drops what is no longer needed, and keeps the pepper.
        let third = second.rotated(EdDSA, t(40), AHEAD, KEEP).unwrap();
        assert_eq!(third.keys().len(), 2);
        assert_eq!(states(&third, 40), [(ES256, true), (EdDSA, false)]);
        assert_eq!(third.code_pepper().unwrap(), first.code_pepper().unwrap());
        // A rotation while a key still waits to sign replaces that key.
        let mut quick = first.clone();
        for second in 1..=50 {
            let at = t(1) + Duration::seconds(second);
            quick = quick.rotated(ES256, at, AHEAD, KEEP).unwrap();
        }
        let quick = quick.rotated(EdDSA, t(2), AHEAD, KEEP).unwrap();
        assert_eq!(states(&quick, 2), [(RS256, true), (EdDSA, false)]);
        assert_eq!(states(&quick, 7), [(RS256, false), (EdDSA, true)]);
        assert_eq!(states(&quick, 22), [(EdDSA, true)]);
    }

    #[test]
    fn the_keyring_survives_its_serialised_form_and_never_debugs_its_secrets() {
        let keyring = Keyring::generate(SigningAlgorithm::EdDSA, t(0)).unwrap();
        let text = serde_json::to_string(&keyring).unwrap();
        let back: Keyring = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.keys()[0].signer().unwrap().kid(),
            keyring.keys()[0].signer().unwrap().kid()
        );
        assert_eq!(format!("{keyring:?}"), "Keyring(..)");
    }
}
