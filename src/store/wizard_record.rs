//! A wizard as stored: one format byte, then the wizard in postcard (a
//! documented, stable, varint-packed format), holding each fact once: no
//! id (it is the key), no account (the record keeps it beside the body),
//! instants as milliseconds, digests as raw bytes, a device fingerprint
//! only as the client sent it. A later format gets the next byte, and
//! `decode` keeps reading the ones before it.

use crate::domain::{DeviceFingerprint, UserId, WizardId};
use crate::wizard::{BoundUser, CodeChallenge, SecretDigest, Step, Wizard};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const FORMAT: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    created_at: i64,
    expires_at: i64,
    fingerprint: Option<String>,
    key_digest: [u8; 32],
    step: StoredStep,
}

#[derive(Serialize, Deserialize)]
enum StoredStep {
    Login,
    ChooseFactor(StoredUser),
    TotpCode(StoredUser),
    SmsCode(StoredUser, StoredCode),
    ResetPassword(StoredUser),
    Terminated(StoredUser),
    // New variants go last: postcard numbers them in order.
    ResetCode(Option<StoredUser>, StoredCode, bool),
    BackupCode(StoredUser),
    /// The secret as an account keeps it, in JSON (sealed where there is a KEK).
    EnrollTotp(StoredUser, String),
}

#[derive(Serialize, Deserialize)]
struct StoredUser(UserId, u64);

#[derive(Serialize, Deserialize)]
struct StoredCode {
    digest: [u8; 32],
    sent_at: i64,
    expires_at: i64,
    resends: u32,
}

pub fn encode(wizard: &Wizard) -> anyhow::Result<Vec<u8>> {
    let user = |bound: &BoundUser| StoredUser(bound.id, bound.version);
    let stored = Stored {
        created_at: wizard.created_at.timestamp_millis(),
        expires_at: wizard.expires_at.timestamp_millis(),
        fingerprint: wizard.fingerprint.as_ref().map(|f| f.encoded().to_owned()),
        key_digest: wizard.key_digest.to_bytes(),
        step: match &wizard.step {
            Step::Login => StoredStep::Login,
            Step::ChooseFactor { user: u } => StoredStep::ChooseFactor(user(u)),
            Step::TotpCode { user: u } => StoredStep::TotpCode(user(u)),
            Step::SmsCode { user: u, challenge } => StoredStep::SmsCode(user(u), code(challenge)),
            Step::ResetCode {
                user: u,
                challenge,
                from_login,
            } => StoredStep::ResetCode(u.as_ref().map(user), code(challenge), *from_login),
            Step::BackupCode { user: u } => StoredStep::BackupCode(user(u)),
            Step::EnrollTotp { user: u, secret } => {
                StoredStep::EnrollTotp(user(u), serde_json::to_string(secret)?)
            }
            Step::ResetPassword { user: u } => StoredStep::ResetPassword(user(u)),
            Step::Terminated { user: u } => StoredStep::Terminated(user(u)),
        },
    };
    let mut bytes = vec![FORMAT];
    bytes.extend(postcard::to_allocvec(&stored)?);
    Ok(bytes)
}

pub fn decode(id: WizardId, bytes: &[u8]) -> anyhow::Result<Wizard> {
    let stored: Stored = match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest)?,
        Some((format, _)) => anyhow::bail!("unknown wizard record format {format}"),
        None => anyhow::bail!("empty wizard record"),
    };
    let user = |StoredUser(id, version)| BoundUser { id, version };
    Ok(Wizard {
        id,
        created_at: instant(stored.created_at)?,
        expires_at: instant(stored.expires_at)?,
        fingerprint: stored
            .fingerprint
            .as_deref()
            .map(DeviceFingerprint::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("stored fingerprint: {}", e.0))?,
        key_digest: SecretDigest::new(stored.key_digest),
        step: match stored.step {
            StoredStep::Login => Step::Login,
            StoredStep::ChooseFactor(u) => Step::ChooseFactor { user: user(u) },
            StoredStep::TotpCode(u) => Step::TotpCode { user: user(u) },
            StoredStep::SmsCode(u, sms) => Step::SmsCode {
                user: user(u),
                challenge: challenge(sms)?,
            },
            StoredStep::ResetCode(u, sent, from_login) => Step::ResetCode {
                user: u.map(user),
                challenge: challenge(sent)?,
                from_login,
            },
            StoredStep::BackupCode(u) => Step::BackupCode { user: user(u) },
            StoredStep::EnrollTotp(u, secret) => Step::EnrollTotp {
                user: user(u),
                secret: serde_json::from_str(&secret)?,
            },
            StoredStep::ResetPassword(u) => Step::ResetPassword { user: user(u) },
            StoredStep::Terminated(u) => Step::Terminated { user: user(u) },
        },
    })
}

fn code(challenge: &CodeChallenge) -> StoredCode {
    StoredCode {
        digest: challenge.digest.to_bytes(),
        sent_at: challenge.sent_at.timestamp_millis(),
        expires_at: challenge.expires_at.timestamp_millis(),
        resends: challenge.resends,
    }
}

fn challenge(stored: StoredCode) -> anyhow::Result<CodeChallenge> {
    Ok(CodeChallenge {
        digest: SecretDigest::new(stored.digest),
        sent_at: instant(stored.sent_at)?,
        expires_at: instant(stored.expires_at)?,
        resends: stored.resends,
    })
}

fn instant(ms: i64) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| anyhow::anyhow!("instant {ms} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WizardKey;
    use base64::Engine;
    use chrono::{Duration, TimeZone};

    fn bound() -> BoundUser {
        BoundUser {
            id: UserId::random(),
            version: 300,
        }
    }

    #[test]
    fn every_step_reads_back_as_it_was_written() {
        let start = Utc.timestamp_millis_opt(1_800_000_000_123).unwrap();
        let mut wizard = Wizard::start(
            WizardId::random(),
            &WizardKey::generate(),
            start,
            Duration::seconds(600),
        );
        let fingerprint =
            base64::engine::general_purpose::STANDARD.encode(r#"{"user_agent":"test/1.0"}"#);
        wizard.fingerprint = Some(DeviceFingerprint::parse(&fingerprint).unwrap());
        let challenge = CodeChallenge {
            digest: SecretDigest::new([7; 32]),
            sent_at: start + Duration::seconds(5),
            expires_at: start + Duration::seconds(305),
            resends: 1,
        };
        for step in [
            Step::Login,
            Step::ChooseFactor { user: bound() },
            Step::TotpCode { user: bound() },
            Step::SmsCode {
                user: bound(),
                challenge: challenge.clone(),
            },
            Step::ResetPassword { user: bound() },
            Step::ResetCode {
                user: Some(bound()),
                challenge: challenge.clone(),
                from_login: false,
            },
            Step::ResetCode {
                user: None,
                challenge,
                from_login: true,
            },
            Step::Terminated { user: bound() },
        ] {
            let written = Wizard {
                step,
                ..wizard.clone()
            };
            let bytes = encode(&written).unwrap();
            assert_eq!(bytes[0], FORMAT);
            assert_eq!(decode(written.id, &bytes).unwrap(), written);
        }
    }

    #[test]
    fn a_fresh_wizard_takes_few_bytes_and_unknown_formats_are_refused() {
        let wizard = Wizard::start(
            WizardId::random(),
            &WizardKey::generate(),
            Utc::now(),
            Duration::seconds(600),
        );
        let bytes = encode(&wizard).unwrap();
        assert!(bytes.len() <= 56, "{} bytes", bytes.len());
        let mut future = bytes.clone();
        future[0] = FORMAT + 1;
        assert!(decode(wizard.id, &future).is_err());
        assert!(decode(wizard.id, &[]).is_err());
        assert!(decode(wizard.id, &bytes[..bytes.len() - 1]).is_err());
    }
}
