use crate::credentials::StoredTotp;
use crate::domain::{DeviceFingerprint, OtpCode, PhoneNumber, UserId, WizardId, WizardKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The step the client must show next, under its B2Core wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumIter)]
pub enum Workflow {
    #[serde(rename = "login")]
    Login,
    #[serde(rename = "2fa")]
    ChooseFactor,
    #[serde(rename = "2fa_google_auth")]
    TotpCode,
    #[serde(rename = "2fa_sms_auth")]
    SmsCode,
    #[serde(rename = "2fa_backup_code")]
    BackupCode,
    #[serde(rename = "2fa_google_auth_enroll")]
    EnrollTotp,
    #[serde(rename = "reset_password_email")]
    ResetPassword,
    #[serde(rename = "reset_password_code")]
    ResetCode,
    #[serde(rename = "Terminate")]
    Terminate,
}

impl Workflow {
    /// The wire name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Workflow::Login => "login",
            Workflow::ChooseFactor => "2fa",
            Workflow::TotpCode => "2fa_google_auth",
            Workflow::SmsCode => "2fa_sms_auth",
            Workflow::BackupCode => "2fa_backup_code",
            Workflow::EnrollTotp => "2fa_google_auth_enroll",
            Workflow::ResetPassword => "reset_password_email",
            Workflow::ResetCode => "reset_password_code",
            Workflow::Terminate => "Terminate",
        }
    }
}

/// A second factor, under its B2Core wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    #[serde(rename = "google")]
    Totp,
    Sms,
    /// One of the account's single-use backup codes.
    BackupCode,
}

/// One kind of client request that moves a wizard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter)]
pub enum Action {
    Credentials,
    ChooseFactor,
    TotpCode,
    SmsCode,
    ResendSms,
    BackupCode,
    /// The first code from the authenticator app being enrolled.
    EnrollTotp,
    /// From the login screen: a reset code for the email typed.
    ForgotPassword,
    /// A reset code for the account the wizard is about (sent again at `ResetCode`).
    RestorePassword,
    /// The emailed code and a new password.
    ResetPassword,
}

/// Where one sign-in attempt stands. Everything after `Login` is bound to its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Login,
    ChooseFactor {
        #[serde(flatten)]
        user: BoundUser,
    },
    TotpCode {
        #[serde(flatten)]
        user: BoundUser,
    },
    SmsCode {
        #[serde(flatten)]
        user: BoundUser,
        challenge: CodeChallenge,
    },
    BackupCode {
        #[serde(flatten)]
        user: BoundUser,
    },
    /// The account must have a second factor and has none: it enrols an
    /// authenticator app with `secret` (drawn for this wizard, sealed like
    /// an account's) before any token is issued.
    EnrollTotp {
        #[serde(flatten)]
        user: BoundUser,
        secret: StoredTotp,
    },
    ResetPassword {
        #[serde(flatten)]
        user: BoundUser,
    },
    /// A reset code was emailed. `user` is `None` when the email typed at
    /// the login screen has no account (a notice went out instead): the
    /// step looks the same to the client either way. `from_login`: asked for
    /// by whoever typed the address (not by someone who gave the password
    /// at `ResetPassword`), so its emails draw on the address's allowance.
    ResetCode {
        user: Option<BoundUser>,
        challenge: CodeChallenge,
        from_login: bool,
    },
    Terminated {
        #[serde(flatten)]
        user: BoundUser,
    },
}

/// The user a wizard is bound to once the password is accepted, with the
/// version its account had then. Any later change to the account (password,
/// factors, flags) bumps the version, and a wizard whose version is stale
/// may not go on: every step sees the account as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundUser {
    #[serde(rename = "user")]
    pub id: UserId,
    /// Records written before versions existed read as 0, like their accounts.
    #[serde(rename = "user_version", default)]
    pub version: u64,
}

/// One sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wizard {
    pub id: WizardId,
    pub created_at: DateTime<Utc>,
    /// Absolute deadline: no step is accepted from this instant on.
    pub expires_at: DateTime<Utc>,
    pub fingerprint: Option<DeviceFingerprint>,
    /// Digest of the key handed out at start (see `domain::WizardKey`).
    pub key_digest: SecretDigest,
    pub step: Step,
}

impl Wizard {
    pub fn start(id: WizardId, key: &WizardKey, now: DateTime<Utc>, ttl: Duration) -> Self {
        Self {
            id,
            created_at: now,
            expires_at: now + ttl,
            fingerprint: None,
            key_digest: SecretDigest::new(key.digest()),
            step: Step::Login,
        }
    }

    /// Whether a request may touch this wizard at all.
    pub fn opens_with(&self, opener: &Opener) -> bool {
        match &opener.key {
            Some(presented) => self.key_digest.matches(presented),
            None => !opener.strict,
        }
    }

    pub fn workflow(&self) -> Workflow {
        match self.step {
            Step::Login => Workflow::Login,
            Step::ChooseFactor { .. } => Workflow::ChooseFactor,
            Step::TotpCode { .. } => Workflow::TotpCode,
            Step::SmsCode { .. } => Workflow::SmsCode,
            Step::BackupCode { .. } => Workflow::BackupCode,
            Step::EnrollTotp { .. } => Workflow::EnrollTotp,
            Step::ResetPassword { .. } => Workflow::ResetPassword,
            Step::ResetCode { .. } => Workflow::ResetCode,
            Step::Terminated { .. } => Workflow::Terminate,
        }
    }

    /// The user this attempt is about, once the password has been accepted.
    pub fn user(&self) -> Option<UserId> {
        self.bound().map(|bound| bound.id)
    }

    /// The user this attempt is bound to, and at which version of its account.
    pub fn bound(&self) -> Option<BoundUser> {
        match &self.step {
            Step::Login => None,
            Step::ChooseFactor { user }
            | Step::TotpCode { user }
            | Step::SmsCode { user, .. }
            | Step::BackupCode { user }
            | Step::EnrollTotp { user, .. }
            | Step::ResetPassword { user }
            | Step::Terminated { user } => Some(*user),
            Step::ResetCode { user, .. } => *user,
        }
    }

    /// Whether the record names an account: a bound wizard's, or the one
    /// a reset code was asked for (its attempts count against it).
    pub fn names_account(&self) -> bool {
        match self.step {
            Step::Login => false,
            Step::ChooseFactor { .. }
            | Step::TotpCode { .. }
            | Step::SmsCode { .. }
            | Step::BackupCode { .. }
            | Step::EnrollTotp { .. }
            | Step::ResetPassword { .. }
            | Step::ResetCode { .. }
            | Step::Terminated { .. } => true,
        }
    }

    /// Whether the account this wizard is bound to is still the one it was
    /// bound to: not deleted (`current` is `None`), not changed since.
    pub fn still_bound_to(&self, current: Option<&Account>) -> Result<(), Rejection> {
        match (self.bound(), current) {
            (None, _) => Ok(()),
            (Some(bound), Some(account)) if account.binding() == bound => Ok(()),
            (Some(_), _) => Err(Rejection::AccountChanged),
        }
    }

    /// Whether `action` may be attempted now. Called before any costly check
    /// (argon2, TOTP) and again inside [`super::transition`].
    pub fn admits(&self, action: Action, now: DateTime<Utc>) -> Result<(), Rejection> {
        let allowed: &[Action] = match self.step {
            Step::Terminated { .. } => return Err(Rejection::Completed),
            Step::Login => &[Action::Credentials, Action::ForgotPassword],
            Step::ChooseFactor { .. } => &[Action::ChooseFactor],
            Step::TotpCode { .. } => &[Action::TotpCode],
            Step::SmsCode { .. } => &[Action::SmsCode, Action::ResendSms],
            Step::BackupCode { .. } => &[Action::BackupCode],
            Step::EnrollTotp { .. } => &[Action::EnrollTotp],
            Step::ResetPassword { .. } => &[Action::RestorePassword],
            Step::ResetCode { .. } => &[Action::ResetPassword, Action::RestorePassword],
        };
        if now >= self.expires_at {
            return Err(Rejection::Expired);
        }
        if !allowed.contains(&action) {
            return Err(Rejection::StepNotAllowed);
        }
        Ok(())
    }

    /// Later steps may name the device again (B2Core clients need not,
    /// unless `strict`); if they do, it must be the one that gave the password.
    pub fn same_device(
        &self,
        presented: Option<&DeviceFingerprint>,
        strict: bool,
    ) -> Result<(), Rejection> {
        match (&self.fingerprint, presented) {
            (Some(known), Some(presented)) if known != presented => Err(Rejection::DeviceMismatch),
            (Some(_), None) if strict => Err(Rejection::DeviceMismatch),
            _ => Ok(()),
        }
    }
}

/// What a request brings to open a wizard: the digest of the `X-Wizard-Key`
/// it presented, and whether keys (and named devices) are required.
#[derive(Debug, Clone, Default)]
pub struct Opener {
    pub key: Option<SecretDigest>,
    pub strict: bool,
}

impl Opener {
    pub fn new(key: Option<&WizardKey>, strict: bool) -> Self {
        Self {
            key: key.map(|k| SecretDigest::new(k.digest())),
            strict,
        }
    }
}

/// Why the wizard refused a request. The wizard itself is left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, strum::EnumIter)]
pub enum Rejection {
    #[error("this sign-in has expired; start a new one")]
    Expired,
    #[error("this sign-in is already complete")]
    Completed,
    #[error("this request does not belong to the current step")]
    StepNotAllowed,
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("the code is incorrect")]
    InvalidCode,
    #[error("the code has expired")]
    CodeExpired,
    #[error("this second factor is not available for the account")]
    FactorUnavailable,
    #[error("this request comes from another device than the sign-in")]
    DeviceMismatch,
    #[error("the account changed since this sign-in began; start a new one")]
    AccountChanged,
    #[error("a new code can be sent in {retry_after_secs} s")]
    ResendTooSoon { retry_after_secs: u64 },
    #[error("no more codes can be sent for this sign-in; start a new one")]
    ResendLimit,
    #[error("the new password must differ from the current one")]
    PasswordReused,
}

/// What the edges learnt about an account whose password was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: UserId,
    /// Bumped by every change to the account (see [`BoundUser`]).
    pub version: u64,
    pub totp: bool,
    pub phone: Option<PhoneNumber>,
    /// Whether the account has backup codes (used up or not).
    pub backup_codes: bool,
    pub must_reset_password: bool,
    /// Set by an admin for this account: it must have a second factor.
    pub second_factor_required: bool,
}

impl Account {
    /// What a wizard is bound to when this account's password is accepted.
    pub fn binding(&self) -> BoundUser {
        BoundUser {
            id: self.id,
            version: self.version,
        }
    }

    /// The second factors the account can use, in the order clients show
    /// them. Backup codes stand in for another factor, never alone.
    pub fn factors(&self) -> Vec<Factor> {
        let mut factors = Vec::with_capacity(3);
        if self.totp {
            factors.push(Factor::Totp);
        }
        if self.phone.is_some() {
            factors.push(Factor::Sms);
        }
        if self.backup_codes && !factors.is_empty() {
            factors.push(Factor::BackupCode);
        }
        factors
    }
}

/// A keyed digest of an SMS code: the code itself is never stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    pub fn matches(&self, other: &SecretDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl TryFrom<String> for SecretDigest {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let bytes = STANDARD_NO_PAD
            .decode(value)
            .map_err(|_| "code digest is not base64")?;
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| "code digest has the wrong length")
    }
}

impl From<SecretDigest> for String {
    fn from(digest: SecretDigest) -> Self {
        STANDARD_NO_PAD.encode(digest.0)
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// How long an emailed password-reset code works (never beyond its wizard).
pub const RESET_CODE_TTL: Duration = Duration::minutes(10);

/// The code (SMS or email) a wizard waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeChallenge {
    pub digest: SecretDigest,
    pub sent_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Codes sent again after the first.
    pub resends: u32,
}

impl CodeChallenge {
    /// Whether `digest` (of the code the client typed) answers this challenge now.
    pub fn check(&self, digest: &SecretDigest, now: DateTime<Utc>) -> Result<(), Rejection> {
        if now >= self.expires_at {
            return Err(Rejection::CodeExpired);
        }
        if !self.digest.matches(digest) {
            return Err(Rejection::InvalidCode);
        }
        Ok(())
    }

    /// How many codes will have been sent again once one more is: refused
    /// while the last is more recent than `cooldown`, or once `max` were.
    pub fn resend(
        &self,
        now: DateTime<Utc>,
        cooldown: Duration,
        max: u32,
    ) -> Result<u32, Rejection> {
        let wait = self.sent_at + cooldown - now;
        if wait > Duration::zero() {
            let millis = u64::try_from(wait.num_milliseconds()).unwrap_or(0);
            return Err(Rejection::ResendTooSoon {
                retry_after_secs: millis.div_ceil(1000),
            });
        }
        if self.resends >= max {
            return Err(Rejection::ResendLimit);
        }
        Ok(self.resends + 1)
    }
}

/// A freshly drawn code and its digest, handed to the core in case the
/// transition needs to send one (randomness stays outside the core).
#[derive(Debug, Clone)]
pub struct FreshCode {
    pub code: OtpCode,
    pub digest: SecretDigest,
}
