use crate::domain::{OtpCode, WizardId};
use crate::wizard::{FreshCode, SecretDigest};
use hmac::{Hmac, Mac};
use sha2::Sha256;

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
}
