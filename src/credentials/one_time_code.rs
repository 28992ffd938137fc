use crate::domain::{BackupCode, OtpCode, UserId, WizardId};
use crate::wizard::{FreshCode, SecretDigest};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How many backup codes an account is given at a time.
pub const BACKUP_CODES: usize = 10;

/// An account's backup codes as stored: only their keyed digests.
/// `generation` (random) names one issue of them: a used code is claimed
/// in the store under it (`store::Key::UsedBackupCodes`), so that using
/// one writes nothing to the account (whose version would move), and a
/// new issue starts with none used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBackupCodes {
    pub generation: u64,
    pub digests: Vec<SecretDigest>,
}

/// Makes SMS codes and their digests: HMAC-SHA256 under a pepper kept in the
/// keyring, bound to the wizard so a digest is useless anywhere else.
#[derive(Clone)]
pub struct OneTimeCodes {
    keyed: Hmac<Sha256>,
}

impl OneTimeCodes {
    pub fn new(pepper: &[u8]) -> anyhow::Result<Self> {
        let keyed = Hmac::<Sha256>::new_from_slice(pepper)
            .map_err(|_| anyhow::anyhow!("SMS code pepper is unusable"))?;
        Ok(Self { keyed })
    }

    /// A TOTP-length code (SMS).
    pub fn fresh(&self, wizard: WizardId) -> FreshCode {
        self.fresh_code(wizard, OtpCode::random())
    }

    /// A password-reset code.
    pub fn fresh_reset(&self, wizard: WizardId) -> FreshCode {
        self.fresh_code(wizard, OtpCode::random_reset())
    }

    fn fresh_code(&self, wizard: WizardId, code: OtpCode) -> FreshCode {
        let digest = self.digest(wizard, &code);
        FreshCode { code, digest }
    }

    /// A code that proves `user`'s new phone number; `issue` tells one
    /// sending from the next, so a digest answers only its own.
    pub fn fresh_phone(&self, user: UserId, issue: u64) -> FreshCode {
        let code = OtpCode::random();
        let digest = self.phone_digest(user, issue, &code);
        FreshCode { code, digest }
    }

    pub fn phone_digest(&self, user: UserId, issue: u64, code: &OtpCode) -> SecretDigest {
        let mut mac = self.keyed.clone();
        mac.update(format!("phone:{user}:{issue:x}:").as_bytes());
        mac.update(code.expose().as_bytes());
        SecretDigest::new(mac.finalize().into_bytes().into())
    }

    /// A new set of backup codes for `user`: the codes, to show once, and
    /// what is stored of them.
    pub fn issue_backup_codes(&self, user: UserId) -> (Vec<BackupCode>, StoredBackupCodes) {
        use rand::Rng;
        let generation = rand::rngs::OsRng.r#gen();
        let codes: Vec<BackupCode> = (0..BACKUP_CODES).map(|_| BackupCode::random()).collect();
        let digests = codes
            .iter()
            .map(|code| self.backup_digest(user, generation, code))
            .collect();
        (
            codes,
            StoredBackupCodes {
                generation,
                digests,
            },
        )
    }

    /// Which of the account's backup codes `code` is, if any. Every stored
    /// digest is compared, so timing does not tell which one matched.
    pub fn find_backup_code(
        &self,
        user: UserId,
        stored: &StoredBackupCodes,
        code: &BackupCode,
    ) -> Option<usize> {
        let digest = self.backup_digest(user, stored.generation, code);
        stored
            .digests
            .iter()
            .enumerate()
            .fold(None, |found, (index, candidate)| {
                match candidate.matches(&digest) {
                    true => Some(index),
                    false => found,
                }
            })
    }

    /// Bound to the user and the issue, and apart from wizard codes by its label.
    fn backup_digest(&self, user: UserId, generation: u64, code: &BackupCode) -> SecretDigest {
        let mut mac = self.keyed.clone();
        mac.update(format!("backup:{user}:{generation:x}:").as_bytes());
        mac.update(code.expose().as_bytes());
        SecretDigest::new(mac.finalize().into_bytes().into())
    }

    pub fn digest(&self, wizard: WizardId, code: &OtpCode) -> SecretDigest {
        let mut mac = self.keyed.clone();
        mac.update(wizard.to_string().as_bytes());
        mac.update(b":");
        mac.update(code.expose().as_bytes());
        SecretDigest::new(mac.finalize().into_bytes().into())
    }
}

impl std::fmt::Debug for OneTimeCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneTimeCodes(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_code_wizard_and_pepper() {
        let codes = OneTimeCodes::new(&[1; 32]).unwrap();
        let w = WizardId::random();
        let fresh = codes.fresh(w);
        assert!(codes.digest(w, &fresh.code).matches(&fresh.digest));
        assert!(
            !codes
                .digest(WizardId::random(), &fresh.code)
                .matches(&fresh.digest)
        );
        assert!(
            !OneTimeCodes::new(&[2; 32])
                .unwrap()
                .digest(w, &fresh.code)
                .matches(&fresh.digest)
        );
    }

    #[test]
    fn backup_codes_match_only_their_user_and_issue() {
        let codes = OneTimeCodes::new(&[1; 32]).unwrap();
        let alice = UserId::random();
        let (shown, stored) = codes.issue_backup_codes(alice);
        assert_eq!(shown.len(), BACKUP_CODES);
        assert_eq!(stored.digests.len(), BACKUP_CODES);
        for (index, code) in shown.iter().enumerate() {
            assert_eq!(codes.find_backup_code(alice, &stored, code), Some(index));
            let other = codes.find_backup_code(UserId::random(), &stored, code);
            assert_eq!(other, None, "another user's");
        }
        let (again, reissued) = codes.issue_backup_codes(alice);
        assert_ne!(stored.generation, reissued.generation);
        assert_eq!(codes.find_backup_code(alice, &reissued, &shown[0]), None);
        assert_eq!(codes.find_backup_code(alice, &stored, &again[0]), None);
    }
}
