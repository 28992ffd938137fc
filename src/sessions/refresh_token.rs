//! Refresh tokens: opaque, 256 random bits each, stored only as a digest.
//!
//! A token also names its session and its place in the session's chain of
//! rotations (the generation), under a MAC only this service can make. The
//! MAC lets a refresh tell a token this service issued and has since
//! rotated (a reuse: the session is revoked, RFC 9700 §4.14.2) from one
//! nobody issued (refused, nothing revoked), without keeping every past
//! token: a session's id is in every access token, so without the MAC
//! anyone who saw one could end the session with a made-up refresh token.

use crate::domain::{SessionId, UserId};
use aws_lc_rs::{constant_time, digest, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

const SECRET_LEN: usize = 32;
const MAC_LEN: usize = 16;
/// user, session, generation, secret, MAC.
const TOKEN_LEN: usize = 16 + 16 + 4 + SECRET_LEN + MAC_LEN;
const SIGNED_LEN: usize = TOKEN_LEN - MAC_LEN;
/// Unpadded base64url: 84 bytes are exactly 112 characters.
const TEXT_LEN: usize = TOKEN_LEN / 3 * 4;
const _: () = assert!(TOKEN_LEN.is_multiple_of(3));

/// The key refresh tokens are MACed with, derived from the keyring's pepper
/// under its own label so that no other digest can stand in for a MAC.
pub struct RefreshKey(hmac::Key);

impl RefreshKey {
    pub fn new(pepper: &[u8]) -> Self {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, pepper);
        let key = hmac::sign(&derive, b"signin-wizard refresh token v1");
        Self(hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()))
    }

    fn mac(&self, signed: &[u8]) -> [u8; MAC_LEN] {
        let tag = hmac::sign(&self.0, signed);
        let mut mac = [0; MAC_LEN];
        mac.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        mac
    }
}

/// A refresh token as presented, its MAC checked: it was issued by this
/// service (or one sharing its keyring) for this session and generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub user: UserId,
    pub session: SessionId,
    pub generation: u32,
    /// What the session keeps of it.
    pub digest: Digest,
}

/// SHA-256 of a token's secret: what a session stores instead of the token.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digest(#[serde(with = "hex_bytes")] [u8; 32]);

impl Digest {
    /// In constant time: a digest of a 256-bit secret leaks nothing usable,
    /// but comparing secrets' digests is no place to start guessing.
    pub fn matches(&self, other: &Digest) -> bool {
        constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(..)")
    }
}

mod hex_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| D::Error::custom("a digest is 32 bytes, base64url"))
    }
}

/// A new token for `session` at `generation`, and the digest to keep.
pub fn issue(
    key: &RefreshKey,
    user: UserId,
    session: SessionId,
    generation: u32,
) -> anyhow::Result<(SecretString, Digest)> {
    let mut secret = [0u8; SECRET_LEN];
    rand::fill(&mut secret).map_err(|_| anyhow::anyhow!("the system's randomness failed"))?;
    let mut token = Vec::with_capacity(TOKEN_LEN);
    token.extend_from_slice(user.as_bytes());
    token.extend_from_slice(session.as_bytes());
    token.extend_from_slice(&generation.to_be_bytes());
    token.extend_from_slice(&secret);
    let mac = key.mac(&token);
    token.extend_from_slice(&mac);
    Ok((URL_SAFE_NO_PAD.encode(&token).into(), digest_of(&secret)))
}

/// The token's parts if it is one this service issued; `None` for anything
/// else (malformed, another length, a MAC that does not verify).
pub fn read(key: &RefreshKey, token: &SecretString) -> Option<Presented> {
    let text = token.expose_secret().trim();
    // Checked before decoding anything larger.
    if text.len() != TEXT_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let bytes: [u8; TOKEN_LEN] = bytes.try_into().ok()?;
    let (signed, mac) = bytes.split_at(SIGNED_LEN);
    constant_time::verify_slices_are_equal(&key.mac(signed), mac).ok()?;
    let part = |from: usize| -> [u8; 16] { signed[from..from + 16].try_into().unwrap_or([0; 16]) };
    let generation = u32::from_be_bytes(signed[32..36].try_into().ok()?);
    Some(Presented {
        user: UserId::from_bytes(part(0)),
        session: SessionId::from_bytes(part(16)),
        generation,
        digest: digest_of(&signed[36..]),
    })
}

fn digest_of(secret: &[u8]) -> Digest {
    let sum = digest::digest(&digest::SHA256, secret);
    let mut bytes = [0; 32];
    bytes.copy_from_slice(sum.as_ref());
    Digest(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> RefreshKey {
        RefreshKey::new(&[byte; 32])
    }

    #[test]
    fn a_token_reads_back_as_issued() {
        let (user, session) = (UserId::random(), SessionId::random());
        let (token, digest) = issue(&key(1), user, session, 7).unwrap();
        assert_eq!(token.expose_secret().len(), TEXT_LEN);
        let presented = read(&key(1), &token).unwrap();
        assert_eq!(presented.user, user);
        assert_eq!(presented.session, session);
        assert_eq!(presented.generation, 7);
        assert!(presented.digest.matches(&digest));
        let (other, _) = issue(&key(1), user, session, 7).unwrap();
        assert!(!read(&key(1), &other).unwrap().digest.matches(&digest));
    }

    #[test]
    fn tokens_nobody_issued_are_refused() {
        let (token, _) = issue(&key(1), UserId::random(), SessionId::random(), 0).unwrap();
        assert_eq!(read(&key(2), &token), None, "another keyring's token");
        let text = token.expose_secret();
        // Every single changed character (the generation, the secret, the MAC...).
        for at in [0, 20, 45, 47, 60, 100, 111] {
            let mut bytes = text.as_bytes().to_vec();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let changed = SecretString::from(String::from_utf8(bytes).unwrap());
            assert_eq!(read(&key(1), &changed), None, "changed at {at}");
        }
        for junk in ["", "x", &text[..111], &format!("{text}A"), &"=".repeat(112)] {
            assert_eq!(read(&key(1), &SecretString::from(junk.to_owned())), None);
        }
    }
}
