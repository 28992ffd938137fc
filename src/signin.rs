//! The shell around the pure wizard: load, check the step, verify at the
//! edge, transition, save atomically, then send and sign.

use crate::allowance::Allowance;
use crate::captcha::{CaptchaError, Recaptcha};
use crate::clock::Clock;
use crate::credentials::{
    BACKUP_CODES, HashError, OneTimeCodes, PasswordHasher, TokenPair, TotpSecret, TotpVault,
};
use crate::delivery::{DeliveryError, EmailError, Letter, Mailer, SmsGateway};
use crate::domain::{
    BackupCode, DeviceFingerprint, Email, NewPassword, OtpCode, Password, UserId, WizardId,
    WizardKey,
};
use crate::lockout::{self, Admission, Attempt, Gate, Limits};
use crate::policy::LivePolicy;
use crate::sessions::{Opening, Origin, Sessions};
use crate::store::records::{self, Records, UserWriteError, Versioned};
use crate::store::{
    self, AccountReads, CodeTries, Key, Op, Rate, Reply, Store, StoreError, TOTP_STEP_KEPT, Taken,
    TotpStep,
};
use crate::users::{AccountChange, User};
use crate::wizard::{
    Action, BoundUser, Context, Effect, Event, Factor, NewPasswordCheck, Opener, Rejection, Step,
    Transition, Wizard, transition,
};
use chrono::{DateTime, Duration, Utc};
use std::net::IpAddr;
use std::sync::Arc;

/// What a client sends at the `login` step, already parsed.
#[derive(Debug)]
pub struct Credentials {
    pub email: Email,
    pub password: Password,
    pub fingerprint: DeviceFingerprint,
    /// The reCAPTCHA token (`recaptchaResponse`), required while reCAPTCHA is on.
    pub captcha: Option<String>,
    pub client_ip: Option<IpAddr>,
}

/// A step that went through.
#[derive(Debug)]
pub struct Outcome {
    pub wizard: Wizard,
    /// Present exactly when the wizard reached `Terminate` in this step.
    pub tokens: Option<TokenPair>,
    /// The second factors the account offers (empty before the password).
    pub factors: Vec<Factor>,
    /// At `2fa_google_auth_enroll`: the secret to enrol, and the account it is for.
    pub enrolment: Option<(TotpSecret, Email)>,
    /// Backup codes issued by this step, shown this once.
    pub backup_codes: Vec<BackupCode>,
    /// After a backup code was used: how many the account has left.
    pub backup_codes_left: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("no sign-in has this uuid")]
    NotFound,
    #[error("another request changed this sign-in at the same time; retry")]
    Conflict,
    #[error("the service is busy; retry shortly")]
    Overloaded,
    #[error("too many failed attempts; try again later")]
    TooManyAttempts { retry_after: u64 },
    #[error("too many requests from this address; slow down")]
    RateLimited { retry_after: std::time::Duration },
    #[error("too many emails to this email address; try again later")]
    MailLimited { retry_after: std::time::Duration },
    #[error("too many wrong codes for this sign-in; start a new one")]
    WizardClosed,
    #[error(transparent)]
    SmsDelivery(#[from] DeliveryError),
    #[error(transparent)]
    EmailDelivery(#[from] EmailError),
    #[error("password recovery is not available: this service sends no email")]
    RecoveryUnavailable,
    #[error(transparent)]
    Captcha(#[from] CaptchaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl SignInError {
    /// A verdict on what the client offered (a wrong password or code), as
    /// opposed to a request that never got that far.
    pub fn is_verdict(&self) -> bool {
        matches!(
            self,
            SignInError::Rejected(Rejection::InvalidCredentials | Rejection::InvalidCode)
        )
    }
}

impl From<HashError> for SignInError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => SignInError::Overloaded,
            HashError::Internal(e) => SignInError::Internal(e),
        }
    }
}

/// A refused request, naming the wizard it was about and, when it could be
/// read, the wizard as it still stands.
#[derive(Debug)]
pub struct Failure {
    pub error: SignInError,
    pub id: Option<WizardId>,
    pub wizard: Option<Wizard>,
}

impl Failure {
    fn about(id: WizardId, error: impl Into<SignInError>) -> Self {
        Failure {
            error: error.into(),
            id: Some(id),
            wizard: None,
        }
    }
}

impl<E: Into<SignInError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            error: error.into(),
            id: None,
            wizard: None,
        }
    }
}

/// The sign-in service; built once in `startup` and shared by all workers.
pub struct SignIn {
    pub store: Arc<dyn Store>,
    pub passwords: Arc<PasswordHasher>,
    pub codes: OneTimeCodes,
    /// Opens users' sealed TOTP secrets to check a code.
    pub totp: TotpVault,
    /// The issuer an enrolled authenticator app shows.
    pub totp_issuer: String,
    pub sms: SmsGateway,
    /// Where reset codes go; without it, password recovery is off.
    pub mailer: Option<Mailer>,
    /// Opens a session, with its tokens, for each completed sign-in.
    pub sessions: Arc<Sessions>,
    pub clock: Clock,
    pub policy: Arc<LivePolicy>,
    /// Configured reCAPTCHA; checked while the policy has it on.
    pub captcha: Option<Recaptcha>,
    /// Codes one wizard may try before it is closed.
    pub codes_per_wizard: u32,
    pub sms_code_ttl: Duration,
    pub reset_code_ttl: Duration,
    pub resend_cooldown: Duration,
    pub max_resends: u32,
    /// Refuse requests without the wizard's key (see `domain::WizardKey`),
    /// and later steps that do not name their device.
    pub require_wizard_key: bool,
}

impl SignIn {
    /// Starts a wizard; the key is handed to the client once, and only its digest is kept.
    #[tracing::instrument(skip_all, fields(wizard_id))]
    pub async fn start(
        &self,
        allowance: Option<&Allowance>,
    ) -> Result<(Wizard, WizardKey), Failure> {
        let ttl = self.policy.get().wizard_ttl();
        let key = WizardKey::generate();
        let wizard = Wizard::start(WizardId::random(), &key, self.clock.now(), ttl);
        tracing::Span::current().record("wizard_id", tracing::field::display(wizard.id));
        let insert = records::insert_wizard(&wizard)?;
        // One round trip; a refused request leaves a wizard nobody was told of, which expires.
        let ops: Vec<Op> = allowance
            .map(|a| a.op().clone())
            .into_iter()
            .chain([insert])
            .collect();
        let mut replies = self.store.run(&[&ops]).await?.into_iter();
        if let Some(allowance) = allowance
            && let Some(retry_after) = settle_allowance(allowance, next_reply(&mut replies)?)?
        {
            return Err(Failure::from(SignInError::RateLimited { retry_after }));
        }
        if !records::done(next_reply(&mut replies)?)? {
            return Err(Failure::from(records::corrupt(anyhow::anyhow!(
                "a new wizard's id was taken"
            ))));
        }
        Ok((wizard, key))
    }

    /// The wizard as it stands, to give an error its context; `None` when
    /// it cannot be read or the key does not open it.
    pub async fn describe(&self, id: WizardId, key: Option<&WizardKey>) -> Option<Wizard> {
        let opener = Opener::new(key, self.require_wizard_key);
        match self.store.wizard(id, &opener).await {
            Ok(loaded) => loaded.map(|l| l.wizard),
            Err(_) => None,
        }
    }

    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "login"))]
    pub async fn credentials(
        &self,
        id: WizardId,
        input: Credentials,
        presented: &Presented,
    ) -> Result<Outcome, Failure> {
        let Credentials {
            email,
            password,
            fingerprint,
            captcha,
            client_ip,
        } = input;
        // Before anything costly, and before the attempt counts against the account.
        self.verify_captcha(captcha.as_deref(), client_ip)
            .await
            .map_err(|e| Failure::about(id, e))?;
        self.step(
            id,
            Some(&email),
            presented,
            Action::Credentials,
            async |_, user, _| {
                // Unknown email or wrong password: the same work and the same answer.
                let matched = self
                    .passwords
                    .verify(&password, user.map(|u| &u.password_hash))
                    .await?;
                let account = user.filter(|_| matched).map(User::account);
                Ok(Event::Credentials {
                    account,
                    fingerprint,
                }
                .into())
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "2fa"))]
    pub async fn choose_factor(
        &self,
        id: WizardId,
        factor: Factor,
        presented: &Presented,
    ) -> Result<Outcome, Failure> {
        self.step(
            id,
            None,
            presented,
            Action::ChooseFactor,
            async |_, user, _| {
                Ok(Event::ChooseFactor {
                    factor,
                    account: bound(user)?.account(),
                }
                .into())
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "2fa_google_auth"))]
    pub async fn totp_code(
        &self,
        id: WizardId,
        code: OtpCode,
        presented: &Presented,
    ) -> Result<Outcome, Failure> {
        let now = self.clock.now();
        self.step(
            id,
            None,
            presented,
            Action::TotpCode,
            async |_, user, last| {
                let user = bound(user)?;
                let secret = user
                    .totp_secret
                    .as_ref()
                    .map(|stored| self.totp.open(user.id, stored))
                    .transpose()?;
                let step = accepted_step(secret, &code, now, last, id);
                Ok(Checked {
                    event: Event::TotpCode {
                        account: user.account(),
                        accepted: step.is_some(),
                    },
                    claim: step.map(Claim::TotpStep),
                    issued: Vec::new(),
                })
            },
        )
        .await
    }

    /// One of the account's backup codes, claimed so that it never works again.
    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "2fa_backup_code"))]
    pub async fn backup_code(
        &self,
        id: WizardId,
        code: BackupCode,
        presented: &Presented,
    ) -> Result<Outcome, Failure> {
        self.step(
            id,
            None,
            presented,
            Action::BackupCode,
            async |_, user, _| {
                let user = bound(user)?;
                let found = user.backup_codes.as_ref().and_then(|stored| {
                    let index = self.codes.find_backup_code(user.id, stored, &code)?;
                    Some(Claim::BackupCode {
                        user: user.id,
                        generation: stored.generation,
                        index,
                    })
                });
                Ok(Checked {
                    event: Event::BackupCode {
                        account: user.account(),
                        accepted: found.is_some(),
                    },
                    claim: found,
                    issued: Vec::new(),
                })
            },
        )
        .await
    }

    /// The first code from the authenticator app being enrolled: the factor
    /// is enabled, with new backup codes (shown once), and tokens issued.
    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "2fa_google_auth_enroll"))]
    pub async fn enroll_totp(
        &self,
        id: WizardId,
        code: OtpCode,
        presented: &Presented,
    ) -> Result<Outcome, Failure> {
        let now = self.clock.now();
        self.step(
            id,
            None,
            presented,
            Action::EnrollTotp,
            async |wizard, user, last| {
                let user = bound(user)?;
                let secret = match &wizard.step {
                    Step::EnrollTotp { secret, .. } => Some(self.totp.open(user.id, secret)?),
                    _ => None,
                };
                // One-time like every TOTP code: it cannot sign in again.
                let step = accepted_step(secret, &code, now, last, id);
                let (issued, backup_codes) = self.codes.issue_backup_codes(user.id);
                Ok(Checked {
                    event: Event::EnrollTotp {
                        account: user.account(),
                        accepted: step.is_some(),
                        backup_codes,
                    },
                    claim: step.map(Claim::TotpStep),
                    issued: step.map(|_| issued).unwrap_or_default(),
                })
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "2fa_sms_auth"))]
    pub async fn sms_code(
        &self,
        id: WizardId,
        code: OtpCode,
        presented: &Presented,
    ) -> Result<Outcome, Failure> {
        self.step(
            id,
            None,
            presented,
            Action::SmsCode,
            async |wizard, user, _| {
                Ok(Event::SmsCode {
                    account: bound(user)?.account(),
                    digest: self.codes.digest(wizard.id, &code),
                }
                .into())
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "2fa_sms_auth"))]
    pub async fn resend_sms(
        &self,
        id: WizardId,
        presented: &Presented,
    ) -> Result<Outcome, Failure> {
        self.step(
            id,
            None,
            presented,
            Action::ResendSms,
            async |_, user, _| {
                Ok(Event::ResendSms {
                    account: bound(user)?.account(),
                }
                .into())
            },
        )
        .await
    }

    /// Emails a reset code. With `email` (at `login`, behind reCAPTCHA like
    /// the password while it is on): to that address if an account has it,
    /// else a notice that none does, with the same answer. Without: to the
    /// account the wizard names (again, at `reset_password_code`).
    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "reset_password_code"))]
    pub async fn restore_password(
        &self,
        id: WizardId,
        email: Option<Email>,
        captcha: Option<&str>,
        presented: &Presented,
    ) -> Result<Outcome, Failure> {
        if self.mailer.is_none() {
            return Err(Failure::about(id, SignInError::RecoveryUnavailable));
        }
        let typed = email.is_some();
        if typed {
            self.verify_captcha(captcha, presented.client_ip)
                .await
                .map_err(|e| Failure::about(id, e))?;
        }
        let action = match typed {
            true => Action::ForgotPassword,
            false => Action::RestorePassword,
        };
        self.step(id, email.as_ref(), presented, action, async |_, user, _| {
            let account = user.map(User::account);
            Ok(match typed {
                true => Event::ForgotPassword { account },
                false => Event::RestorePassword { account },
            }
            .into())
        })
        .await
    }

    /// The emailed code and the new password; the wizard goes back to `login`.
    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "reset_password_code"))]
    pub async fn reset_password(
        &self,
        id: WizardId,
        code: OtpCode,
        password: NewPassword,
        presented: &Presented,
    ) -> Result<Outcome, Failure> {
        let now = self.clock.now();
        self.step(
            id,
            None,
            presented,
            Action::ResetPassword,
            async |wizard, user, _| {
                let digest = self.codes.digest(wizard.id, &code);
                let code_matches = match &wizard.step {
                    Step::ResetCode { challenge, .. } => challenge.check(&digest, now).is_ok(),
                    _ => false,
                };
                // argon2 (twice) only for the right code: a guess costs nothing.
                // The new password is hashed before it is compared with the
                // current one, so a "not the current password" never comes
                // back without the new one set: a code holder cannot test
                // candidates silently by making the hash fail afterwards.
                let password = match user.filter(|_| code_matches) {
                    None => NewPasswordCheck::Unchecked,
                    Some(user) => {
                        let hash = self.passwords.hash(&password).await?;
                        let current = Some(&user.password_hash);
                        match self
                            .passwords
                            .verify(password.as_password(), current)
                            .await?
                        {
                            true => NewPasswordCheck::Reused,
                            false => NewPasswordCheck::Hashed(hash),
                        }
                    }
                };
                Ok(Event::ResetPassword {
                    account: user.map(User::account),
                    digest,
                    password,
                }
                .into())
            },
        )
        .await
    }

    /// The reCAPTCHA token of a request from the login screen, while the
    /// settings have reCAPTCHA on.
    async fn verify_captcha(
        &self,
        token: Option<&str>,
        client_ip: Option<IpAddr>,
    ) -> Result<(), CaptchaError> {
        match self.captcha() {
            Captcha::Off => Ok(()),
            Captcha::Required(recaptcha) => recaptcha.verify(token, client_ip).await,
            Captcha::Unverifiable => Err(CaptchaError::Unavailable(anyhow::anyhow!(
                "reCAPTCHA is on, but this instance has no reCAPTCHA keys to verify with"
            ))),
        }
    }

    /// What the settings ask of the login step, and whether this instance can do it.
    pub fn captcha(&self) -> Captcha<'_> {
        match (self.policy.get().recaptcha_enabled, &self.captcha) {
            (false, _) => Captcha::Off,
            (true, Some(recaptcha)) => Captcha::Required(recaptcha),
            (true, None) => Captcha::Unverifiable,
        }
    }

    /// What `action` asks of the attempt counters (see `lockout`).
    fn gate(&self, action: Action, now: DateTime<Utc>) -> Gate {
        let policy = self.policy.get();
        let (take, code) = match action {
            Action::Credentials => (true, false),
            Action::ChooseFactor | Action::ForgotPassword => (false, false),
            Action::TotpCode
            | Action::SmsCode
            | Action::BackupCode
            | Action::EnrollTotp
            | Action::ResetPassword => (true, true),
            Action::ResendSms | Action::RestorePassword => (false, true),
        };
        let limits = Limits {
            now,
            max_attempts: policy.max_attempts,
            window: policy.attempts_window(),
            block: policy.block(),
            codes_per_wizard: self.codes_per_wizard,
        };
        Gate { take, code, limits }
    }

    /// The wizard, and the account the step is about with its attempt
    /// taken, in one round trip: at `login` the account is the email typed;
    /// later steps find it in the wizard's record (on a Cluster, where the
    /// two live in different slots, that is a second round trip).
    async fn load(
        &self,
        id: WizardId,
        email: Option<&Email>,
        presented: &Presented,
        action: Action,
        gate: &Gate,
    ) -> Result<Loaded, StoreError> {
        let opener = Opener::new(presented.wizard_key.as_ref(), self.require_wizard_key);
        let reads = AccountReads {
            now: gate.limits.now,
            window: gate.limits.window,
            count: gate.take,
            totp: matches!(action, Action::TotpCode | Action::EnrollTotp),
        };
        // A code step's try is counted in the wizard before the code is checked (see `lockout`).
        let counts_code = gate.code && gate.take;
        let allowance = presented.allowance.as_deref();
        let mut ops: Vec<Op> = allowance.map(|a| a.op().clone()).into_iter().collect();
        match email {
            Some(email) => ops.extend([
                Op::Read(Key::Wizard(id)),
                Op::ReadAccount {
                    account: email.clone(),
                    reads,
                },
            ]),
            None => ops.push(Op::ReadBound {
                record: Key::Wizard(id),
                reads,
                code: gate.code.then_some(match counts_code {
                    // A closed wizard takes no attempt of its account (see `CodeTries`).
                    true => CodeTries::Count {
                        cap: gate.limits.codes_per_wizard,
                    },
                    false => CodeTries::Read,
                }),
            }),
        }
        let mut replies = self.store.run(&[&ops]).await?.into_iter();
        let refused = match allowance {
            Some(allowance) => settle_allowance(allowance, next_reply(&mut replies)?)?,
            None => None,
        };
        let (row, code_tries, account) = match email {
            Some(email) => {
                let row = records::row(next_reply(&mut replies)?)?;
                match next_reply(&mut replies)? {
                    Reply::Account(account) => (row, None, Some((email.clone(), account))),
                    other => return Err(records::unexpected(Some(other))),
                }
            }
            None => match replies.next() {
                Some(Reply::Bound {
                    record: wizard,
                    code_tries,
                    account,
                }) => {
                    let email = wizard
                        .as_ref()
                        .and_then(|row| row.account.as_deref())
                        .map(Email::parse)
                        .transpose()
                        .map_err(records::corrupt)?;
                    (wizard, code_tries, email.zip(account))
                }
                other => return Err(records::unexpected(other)),
            },
        };
        Ok(Loaded {
            refused,
            code_counted: counts_code && code_tries.is_some(),
            codes_before: code_tries.map_or(0, |n| n.saturating_sub(u32::from(counts_code))),
            wizard: row
                .map(|row| records::read_wizard(id, row))
                .transpose()?
                .filter(|w| w.wizard.opens_with(&opener)),
            account: account
                .map(|(email, account)| AccountRead::new(email, account))
                .transpose()?,
        })
    }

    /// One wizard step: load (one round trip at `login`, two later on: the
    /// account is found in the wizard), verify, then one round trip that
    /// saves the wizard with what the step settles, plus what effects need.
    async fn step(
        &self,
        id: WizardId,
        email: Option<&Email>,
        presented: &Presented,
        action: Action,
        verify: impl AsyncFnOnce(
            &Wizard,
            Option<&User>,
            Option<TotpStep>,
        ) -> Result<Checked, SignInError>,
    ) -> Result<Outcome, Failure> {
        let now = self.clock.now();
        let gate = self.gate(action, now);
        let Loaded {
            refused,
            codes_before,
            code_counted,
            wizard,
            account,
        } = self
            .load(id, email, presented, action, &gate)
            .await
            .map_err(|e| Failure::about(id, e))?;
        // The attempt the take counted, before anything was checked (see `lockout`);
        // one ticket gives it and the code try back at most once.
        let ticket = records::nonce();
        let taken = account
            .as_ref()
            .and_then(|a| Some((a.email.clone(), Attempt::from_taken(a.taken, ticket)?)));
        // Set once the step's write went through: its attempt is settled then.
        let mut settled = false;

        let result = async {
            if let Some(retry_after) = refused {
                return Err(Failure::about(id, SignInError::RateLimited { retry_after }));
            }
            let Some(Versioned {
                version,
                wizard,
                account: bound_to,
            }) = wizard
            else {
                return Err(Failure::about(id, SignInError::NotFound));
            };
            let in_context = |error: SignInError| Failure {
                id: Some(id),
                error,
                wizard: Some(wizard.clone()),
            };
            let user = account.as_ref().and_then(|a| a.user.clone());

            wizard
                .admits(action, now)
                .and_then(|()| {
                    wizard.same_device(presented.device.as_ref(), self.require_wizard_key)
                })
                .and_then(|()| wizard.still_bound_to(user.as_ref().map(User::account).as_ref()))
                .map_err(|r| in_context(r.into()))?;
            // The wizard is at the step and alive: every step has its account by now.
            let Some(AccountRead {
                email: account_email,
                taken: tally,
                totp_step: last_totp_step,
                ..
            }) = account.as_ref()
            else {
                return Err(in_context(SignInError::Internal(anyhow::anyhow!(
                    "an admitted {action:?} step has no account to count attempts against"
                ))));
            };
            match lockout::admit(*tally, codes_before, &gate) {
                Admission::Admitted => {}
                Admission::Blocked { until } => return Err(in_context(blocked(until, now))),
                Admission::WizardClosed => return Err(in_context(SignInError::WizardClosed)),
            }
            let attempt = taken.as_ref().map(|(_, attempt)| *attempt);

            // A wrong guess is answered only once it is counted: a wrong code
            // in the wizard (whose compare-and-set must win), and, when it used
            // the last attempt of the window, a block of the account.
            let failed = async |rejection: Rejection| -> SignInError {
                if !matches!(
                    rejection,
                    Rejection::InvalidCredentials | Rejection::InvalidCode
                ) {
                    return rejection.into();
                }
                if attempt.is_some_and(|a| a.was_last(&gate.limits)) {
                    self.block(account_email, now, now + gate.limits.block)
                        .await;
                }
                rejection.into()
            };

            let Checked {
                event,
                claim,
                issued,
            } = verify(&wizard, user.as_ref(), *last_totp_step)
                .await
                .map_err(in_context)?;
            // A secret to enrol is drawn (and sealed to its account) only for
            // a password that found an account.
            let fresh_totp = match (action, &user) {
                (Action::Credentials, Some(user)) => Some(
                    self.totp
                        .seal(user.id, TotpSecret::generate())
                        .map_err(|e| in_context(e.into()))?,
                ),
                _ => None,
            };
            let ctx = Context {
                now,
                sms_code_ttl: self.sms_code_ttl,
                reset_code_ttl: self.reset_code_ttl,
                resend_cooldown: self.resend_cooldown,
                max_resends: self.max_resends,
                fresh_code: self.codes.fresh(id),
                fresh_reset_code: self.codes.fresh_reset(id),
                second_factor_required: self.policy.get().second_factor_required,
                fresh_totp,
            };
            let Transition {
                wizard: next,
                effects,
            } = match transition(&wizard, event, &ctx) {
                Ok(transition) => transition,
                Err(rejection) => return Err(in_context(failed(rejection).await)),
            };

            // In order: the code is claimed (a TOTP step, a backup code) and
            // a factor enrolled before the wizard moves (a crash between them
            // loses the code, never reuses it; leaves the factor on, never
            // tokens without it); the account is read back after the wizard
            // moved (a change that landed first voids the step); the attempt
            // is settled last.
            let next_account = next.names_account().then_some(account_email);
            let mut burn: Vec<Op> = claim.iter().map(|c| c.op(account_email, id)).collect();
            let enrol = effects
                .iter()
                .find_map(|effect| match effect {
                    Effect::EnableTotp {
                        user: bound,
                        secret,
                        backup_codes,
                    } => Some(enrolled(user.as_ref(), *bound, secret, backup_codes)),
                    _ => None,
                })
                .transpose()
                .map_err(in_context)?;
            let enrol_at = burn.len();
            if let Some(op) = enrol {
                burn.push(op);
            }
            let write_nonce = records::nonce();
            let mut write = vec![
                swap(id, version, &next, next_account, write_nonce)
                    .map_err(|e| in_context(e.into()))?,
            ];
            // The account is read back after the wizard moved (a change that
            // landed first voids the step), except at `reset_password_code`:
            // the new password's own compare-and-set guards a reset, and a
            // read there would cost an address with an account (on a
            // Cluster, a round trip) what one without does not.
            let read_back = next
                .bound()
                .filter(|_| !matches!(next.step, Step::ResetCode { .. }));
            let mut settle = Vec::new();
            if read_back.is_some() {
                settle.push(Op::Read(Key::User(account_email.clone())));
            }
            // A completed sign-in forgives the account's earlier failures,
            // unless the account changed or another wizard took this TOTP
            // step meanwhile (then this step is undone below). A backup
            // code's claim lives outside the account's slot, where the
            // forgiving could check it: that sign-in forgives only once its
            // claim is known to hold, or a used code would clear a lockout.
            let forgive = match &next.step {
                Step::Terminated { user } => Some(Op::ForgiveIf {
                    account: account_email.clone(),
                    user_version: user.version,
                    step: match claim {
                        Some(Claim::TotpStep(step)) => Some((step, id.as_u64())),
                        _ => None,
                    },
                    wizard: Some((id, version + 1, write_nonce)),
                }),
                _ => None,
            };
            let mut forgive_once_held = None;
            match (forgive, attempt) {
                (Some(forgive), _) if matches!(claim, Some(Claim::BackupCode { .. })) => {
                    forgive_once_held = Some(forgive);
                }
                (Some(forgive), _) => settle.push(forgive),
                // A success short of the end (the password before a code) was no failure.
                (None, Some(attempt)) => settle.push(give_back(account_email, &attempt, &gate)),
                (None, None) => {}
            }
            // A completed sign-in's session is written with the wizard, before
            // the account is read back (so that an admin change that lands
            // after the read-back finds the session and ends it), and ended
            // again below if the step does not stand.
            let opening = match &next.step {
                Step::Terminated { user } => {
                    let origin = Origin {
                        email: account_email,
                        user_version: user.version,
                        ip: presented.client_ip,
                        user_agent: next.fingerprint.as_ref().map(|f| f.user_agent()),
                    };
                    let opening = self
                        .sessions
                        .prepare(user.id, &origin, now)
                        .map_err(|e| in_context(e.into()))?;
                    write.extend(opening.ops().iter().cloned());
                    Some(opening)
                }
                _ => None,
            };
            let mut replies = self
                .store
                .run(&[&burn, &write, &settle])
                .await
                .map_err(|e| in_context(e.into()))?
                .into_iter();
            let mut beyond = None;
            let finished: Result<Outcome, Failure> = async {
                // Whether this step holds its code, whether the account took the
                // new factor, and how many backup codes are used.
                let (mut held, mut written, mut used) = (true, true, None);
                for at in 0..burn.len() {
                    match next_reply(&mut replies).map_err(|e| in_context(e.into()))? {
                        Reply::Claim { held: h, claimed } => {
                            held &= h;
                            used = Some(claimed);
                        }
                        Reply::Done(done) if at == enrol_at => written = done,
                        Reply::Done(done) => held &= done,
                        other => return Err(in_context(records::unexpected(Some(other)).into())),
                    }
                }
                let moved =
                    records::done(next_reply(&mut replies).map_err(|e| in_context(e.into()))?)
                        .map_err(|e| in_context(e.into()))?;
                // The session's insert, then the sessions beyond the limit
                // (ended once the step stands).
                if opening.is_some() {
                    next_reply(&mut replies).map_err(|e| in_context(e.into()))?;
                    beyond = Some(next_reply(&mut replies).map_err(|e| in_context(e.into()))?);
                }
                if !moved {
                    // Report where the winning request left the wizard, not what we loaded.
                    let current = self.describe(id, presented.wizard_key.as_ref()).await;
                    return Err(Failure {
                        error: SignInError::Conflict,
                        id: Some(id),
                        wizard: current,
                    });
                }
                settled = true;
                if !held || !written {
                    // Another request used this code first, between our read
                    // and our write; or the account changed before it took
                    // the new factor.
                    self.roll_back(version + 1, &wizard, bound_to.as_ref())
                        .await;
                    return Err(in_context(match held {
                        false => failed(Rejection::InvalidCode).await,
                        true => SignInError::Conflict,
                    }));
                }
                if let Some(bound) = read_back {
                    let now_stored =
                        records::row(next_reply(&mut replies).map_err(|e| in_context(e.into()))?)
                            .and_then(|row| row.map(records::read_user).transpose())
                            .map_err(|e| in_context(e.into()))?;
                    if now_stored
                        .is_none_or(|u| u.id != bound.id || u.credentials_version != bound.version)
                    {
                        // The account changed while the step was checked: undo it, so
                        // that trying again judges the account as it now is.
                        self.roll_back(version + 1, &wizard, bound_to.as_ref())
                            .await;
                        return Err(in_context(SignInError::Conflict));
                    }
                }

                if let Some(forgive) = forgive_once_held
                    && let Err(e) = self.store.run(&[&[forgive]]).await
                {
                    tracing::warn!(error = %e, "could not forgive an account's failures");
                }
                let tokens = self
                    .perform(
                        effects,
                        (account_email, user.as_ref()),
                        opening.as_ref(),
                        (version + 1, &wizard, bound_to.as_ref()),
                    )
                    .await
                    .map_err(in_context)?;
                let factors = match (&next.step, &user) {
                    (
                        Step::ChooseFactor { .. }
                        | Step::TotpCode { .. }
                        | Step::SmsCode { .. }
                        | Step::BackupCode { .. },
                        Some(user),
                    ) => user.account().factors(),
                    _ => Vec::new(),
                };
                let enrolment = match (&next.step, &user) {
                    (Step::EnrollTotp { secret, .. }, Some(user)) => Some((
                        self.totp
                            .open(user.id, secret)
                            .map_err(|e| in_context(e.into()))?,
                        account_email.clone(),
                    )),
                    _ => None,
                };
                let total = match claim {
                    Some(Claim::BackupCode { .. }) => user
                        .as_ref()
                        .and_then(|u| u.backup_codes.as_ref())
                        .map_or(BACKUP_CODES, |codes| codes.digests.len()),
                    _ => 0,
                };
                Ok(Outcome {
                    wizard: next,
                    tokens,
                    factors,
                    enrolment,
                    backup_codes: issued,
                    backup_codes_left: used.map(|used| total.saturating_sub(used as usize)),
                })
            }
            .await;
            if let Some(opening) = &opening {
                match &finished {
                    Ok(_) => self.sessions.end_beyond_limit(opening.user(), beyond).await,
                    Err(_) => self.sessions.discard(opening).await,
                }
            }
            finished
        }
        .await;

        // An attempt that ended without a verdict on the password or code
        // (wrong key or device, overload, a lost race...) is given back, and
        // so is its code try.
        if let Err(failure) = &result
            && !settled
            && !failure.error.is_verdict()
        {
            let mut ops: Vec<Op> = taken
                .iter()
                .map(|(account, attempt)| give_back(account, attempt, &gate))
                .collect();
            if code_counted {
                ops.push(Op::GiveBackCode { wizard: id, ticket });
            }
            if !ops.is_empty()
                && let Err(e) = self.store.run(&[&ops]).await
            {
                tracing::warn!(error = %e, "could not give an attempt back");
            }
        }
        result
    }

    /// Blocks an account after its last allowed attempt failed.
    async fn block(&self, account: &Email, now: DateTime<Utc>, until: DateTime<Utc>) {
        let op = Op::Block {
            account: account.clone(),
            now,
            until,
        };
        // Once more if the store hiccups: nothing else starts this block. The
        // verdict stands either way, and the window stays exhausted until it ends.
        for tries_left in [1, 0] {
            match self.store.run(&[std::slice::from_ref(&op)]).await {
                Ok(_) => return,
                Err(e) if tries_left == 0 => {
                    tracing::error!(error = %e, "could not block an account after its last attempt");
                }
                Err(_) => {}
            }
        }
    }

    /// Performs a saved step's effects; the tokens, if it issued them.
    /// `account` is the address the wizard names and its user as loaded. When
    /// a code cannot be sent or the password cannot be stored, the step is
    /// undone (`saved` is the version it was saved as, the wizard before it
    /// and its account) so the client can retry it.
    async fn perform(
        &self,
        effects: Vec<Effect>,
        account: (&Email, Option<&User>),
        opening: Option<&Opening>,
        saved: (u64, &Wizard, Option<&Email>),
    ) -> Result<Option<TokenPair>, SignInError> {
        let mut tokens = None;
        for effect in effects {
            let performed: Result<(), SignInError> = match effect {
                Effect::SendSms { to, code } => {
                    self.sms.send_code(&to, &code).await.map_err(Into::into)
                }
                Effect::EmailResetCode {
                    code,
                    expires_at,
                    from_login,
                } => {
                    // Whole minutes, rounded up: "9 minutes" for 9:59 would undersell it.
                    let seconds = (expires_at - self.clock.now()).num_seconds().max(60);
                    let minutes = (seconds + 59) / 60;
                    let letter = Letter::ResetCode {
                        code: &code,
                        valid_minutes: u32::try_from(minutes).unwrap_or(u32::MAX),
                    };
                    self.email(account.0, letter, from_login).await
                }
                Effect::EmailNoAccount => self.email(account.0, Letter::NoAccount, true).await,
                Effect::SetPassword { user, hash } => {
                    self.set_password(account.1, user, hash).await
                }
                // Written before the wizard moved; what is left is to sign
                // out the sessions from before the account had the factor.
                Effect::EnableTotp { user, .. } => {
                    tracing::info!(user_id = %user.id, "authenticator app enrolled at sign-in");
                    let keep = opening.map(Opening::id);
                    if let Err(e) = self.sessions.end_all(user.id, keep).await {
                        tracing::error!(error = %e, "a factor was enrolled, but older sessions could not all be ended");
                    }
                    Ok(())
                }
                Effect::IssueTokens { user } => {
                    let opening = opening.filter(|o| o.user() == user).ok_or_else(|| {
                        anyhow::anyhow!("tokens are due, but no session was opened")
                    })?;
                    // The session is written: a failure to sign its tokens undoes nothing.
                    tokens = Some(self.sessions.finish(opening).await?);
                    Ok(())
                }
            };
            if let Err(e) = performed {
                tracing::warn!(error = %e, "a step's effect failed; putting the wizard back");
                self.roll_back(saved.0, saved.1, saved.2).await;
                return Err(e);
            }
        }
        Ok(tokens)
    }

    /// Sends a letter. One asked for from the login screen (`limited`: by
    /// anyone who knows the address) goes only if the address's allowance
    /// has room: however many wizards ask, one address gets at most
    /// [`MAIL_BURST`] of those at once, then one per [`MAIL_INTERVAL`]. One
    /// asked for by who gave the account's password draws on nothing, so
    /// strangers cannot use the allowance up to lock a forced reset out.
    async fn email(
        &self,
        to: &Email,
        letter: Letter<'_>,
        limited: bool,
    ) -> Result<(), SignInError> {
        let mailer = self
            .mailer
            .as_ref()
            .ok_or(SignInError::RecoveryUnavailable)?;
        if limited {
            self.draw_on_mail_allowance(to).await?;
        }
        Ok(mailer.send(to, letter).await?)
    }

    async fn draw_on_mail_allowance(&self, to: &Email) -> Result<(), SignInError> {
        let draw = Op::Rate {
            key: Key::MailAllowance(to.clone()),
            now: self.clock.now(),
            interval: MAIL_INTERVAL,
            burst: MAIL_BURST,
        };
        match self.store.run(&[&[draw]]).await?.into_iter().next() {
            Some(Reply::Rate(Rate::Allowed { .. })) => Ok(()),
            Some(Reply::Rate(Rate::Refused { retry_in })) => Err(SignInError::MailLimited {
                retry_after: retry_in,
            }),
            other => Err(records::unexpected(other).into()),
        }
    }

    /// Stores a reset's new password if the account is still the one the
    /// wizard is bound to, clears a forced reset, and ends every session:
    /// whoever knew the old password is signed out.
    async fn set_password(
        &self,
        loaded: Option<&User>,
        bound: BoundUser,
        hash: crate::credentials::PasswordHash,
    ) -> Result<(), SignInError> {
        let user = loaded
            .filter(|u| u.id == bound.id && u.credentials_version == bound.version)
            .ok_or(SignInError::Conflict)?;
        let changed = user.clone().changed(AccountChange {
            password_hash: Some(hash),
            force_password_reset: Some(false),
            ..AccountChange::default()
        });
        // The user was read with the wizard and its email does not change.
        match self.store.replace_user(bound.version, &changed).await {
            Ok(()) => {}
            Err(UserWriteError::Changed | UserWriteError::NotFound) => {
                return Err(SignInError::Conflict);
            }
            // The write may have landed with its answer lost: look, and
            // whatever the answer, sign the account out everywhere (the
            // version may have moved; ending sessions is safe either way).
            Err(UserWriteError::Store(e)) => {
                let landed = matches!(
                    self.store.user(user.id).await,
                    Ok(Some(now)) if now.credentials_version == changed.credentials_version
                        && now.password_hash == changed.password_hash
                );
                if !landed {
                    self.end_sessions_after_reset(user.id).await;
                    return Err(e.into());
                }
            }
            Err(e @ UserWriteError::EmailTaken) => return Err(anyhow::Error::new(e).into()),
        }
        tracing::info!(user_id = %user.id, "password reset");
        self.end_sessions_after_reset(user.id).await;
        Ok(())
    }

    /// The version moved, so no session can refresh any more; ending them
    /// stops their access tokens too. The password stands either way.
    async fn end_sessions_after_reset(&self, user: UserId) {
        if let Err(e) = self.sessions.end_all(user, None).await {
            tracing::error!(error = %e, "password reset, but its sessions could not all be ended");
        }
    }

    /// Undoes a saved step whose side effect failed, so the client can retry it.
    async fn roll_back(&self, saved_version: u64, previous: &Wizard, account: Option<&Email>) {
        let undo = match swap(
            previous.id,
            saved_version,
            previous,
            account,
            records::nonce(),
        ) {
            Ok(op) => op,
            Err(e) => return tracing::error!(error = %e, "could not roll the wizard back"),
        };
        match self
            .store
            .run(&[&[undo]])
            .await
            .map(|r| r.into_iter().next())
        {
            Ok(Some(Reply::Done(true))) => {}
            Ok(_) => tracing::warn!("wizard moved on before it could be rolled back"),
            Err(e) => tracing::error!(error = %e, "could not roll the wizard back"),
        }
    }
}

/// Emails one address may be sent at once (restores from several wizards
/// included), and how often one more may go after that.
pub const MAIL_BURST: u32 = 5;
pub const MAIL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// reCAPTCHA at the login step.
pub enum Captcha<'a> {
    Off,
    Required(&'a Recaptcha),
    /// Switched on (the settings are shared), but this instance has no keys:
    /// it refuses the login step rather than skip the check.
    Unverifiable,
}

/// What a client presents with a step besides the body's own fields.
#[derive(Debug, Default)]
pub struct Presented {
    /// `X-Wizard-Key`, when the client kept the key from the start.
    pub wizard_key: Option<WizardKey>,
    /// The device, when a step after `login` names it.
    pub device: Option<DeviceFingerprint>,
    /// The client address's allowance, checked in the step's first round trip.
    pub allowance: Option<Arc<Allowance>>,
    /// Where the request came from, for the session a completed sign-in opens.
    pub client_ip: Option<IpAddr>,
}

/// A verdict from the edges, plus the code to claim if it succeeds and
/// the backup codes it issued (to show once).
struct Checked {
    event: Event,
    claim: Option<Claim>,
    issued: Vec<BackupCode>,
}

impl From<Event> for Checked {
    fn from(event: Event) -> Self {
        Checked {
            event,
            claim: None,
            issued: Vec::new(),
        }
    }
}

/// A single-use code a step must win before its wizard moves.
#[derive(Debug, Clone, Copy)]
enum Claim {
    /// The TOTP step accepted: no later code of the same step (or an
    /// earlier one) works for the account again.
    TotpStep(u64),
    /// The account's backup code `index` of issue `generation`.
    BackupCode {
        user: UserId,
        generation: u64,
        index: usize,
    },
}

impl Claim {
    /// Requests racing in one wizard all claim with the wizard's id: its
    /// compare-and-set alone decides which of them wins.
    fn op(&self, account: &Email, wizard: WizardId) -> Op {
        match *self {
            Claim::TotpStep(step) => Op::Advance {
                account: account.clone(),
                step,
                nonce: wizard.as_u64(),
                ttl: TOTP_STEP_KEPT,
            },
            Claim::BackupCode {
                user,
                generation,
                index,
            } => Op::Claim {
                key: Key::UsedBackupCodes(user, generation),
                member: index.to_string(),
                nonce: wizard.as_u64(),
            },
        }
    }
}

/// The write that enrols an authenticator app on the account the wizard
/// is bound to, as loaded with the step (still at `bound.version`).
fn enrolled(
    loaded: Option<&User>,
    bound: BoundUser,
    secret: &crate::credentials::StoredTotp,
    backup_codes: &crate::credentials::StoredBackupCodes,
) -> Result<Op, SignInError> {
    let user = loaded
        .filter(|u| u.id == bound.id && u.credentials_version == bound.version)
        .ok_or(SignInError::Conflict)?;
    let changed = user.clone().changed(AccountChange {
        totp_secret: Some(Some(secret.clone())),
        backup_codes: Some(Some(backup_codes.clone())),
        ..AccountChange::default()
    });
    Ok(records::replace_user(bound.version, &changed)?)
}

/// The answer for a blocked account: how long until a retry can succeed,
/// in whole seconds rounded up.
fn blocked(until: DateTime<Utc>, now: DateTime<Utc>) -> SignInError {
    SignInError::TooManyAttempts {
        retry_after: lockout::retry_after(until, now),
    }
}

/// The user a wizard is bound to (`Wizard::still_bound_to` has refused a deleted one).
fn bound(user: Option<&User>) -> Result<&User, SignInError> {
    user.ok_or(SignInError::Rejected(Rejection::AccountChanged))
}

/// What a step loaded: the wizard (if the request may open it) and the
/// account it is about, or that the client address is over its allowance.
struct Loaded {
    refused: Option<std::time::Duration>,
    /// Codes tried in the wizard before this request.
    codes_before: u32,
    /// Whether this request's code try was counted (and is given back if it ends without a verdict).
    code_counted: bool,
    wizard: Option<Versioned>,
    account: Option<AccountRead>,
}

/// An account as a step read it, with the attempt taken on its counter.
struct AccountRead {
    email: Email,
    user: Option<User>,
    taken: Taken,
    /// The last TOTP step accepted for it; its nonce is the `WizardId::as_u64`
    /// of the wizard that recorded it.
    totp_step: Option<TotpStep>,
}

/// The TOTP step `code` proves with `secret` at `now`, unless it is a
/// replay: a step at or before the last one the account accepted.
fn accepted_step(
    secret: Option<TotpSecret>,
    code: &OtpCode,
    now: DateTime<Utc>,
    last: Option<TotpStep>,
    id: WizardId,
) -> Option<u64> {
    secret
        .and_then(|s| s.verify(code, now))
        .filter(|step| last.is_none_or(|last| fresh_totp_step(last, *step, id)))
}

/// Whether TOTP `step` may be accepted in wizard `id` after `last`: only a
/// later step (RFC 6238 §5.2), or this step again in the wizard that
/// recorded it (requests racing on one wizard: its compare-and-set picks one).
fn fresh_totp_step(last: TotpStep, step: u64, id: WizardId) -> bool {
    step > last.step || (step == last.step && last.nonce == id.as_u64())
}

impl AccountRead {
    fn new(email: Email, account: store::Account) -> Result<AccountRead, StoreError> {
        Ok(AccountRead {
            email,
            user: account.user.map(records::read_user).transpose()?,
            taken: account.taken,
            totp_step: account.totp_step,
        })
    }
}

/// Records the answer to an allowance's op; how long to wait if refused.
fn settle_allowance(
    allowance: &Allowance,
    reply: Reply,
) -> Result<Option<std::time::Duration>, StoreError> {
    match reply {
        Reply::Rate(rate) => Ok(allowance.settle(rate)),
        other => Err(records::unexpected(Some(other))),
    }
}

fn next_reply(replies: &mut impl Iterator<Item = Reply>) -> Result<Reply, StoreError> {
    replies
        .next()
        .ok_or_else(|| records::corrupt(anyhow::anyhow!("a reply is missing")))
}

/// The compare-and-set that moves wizard `id` from `version` to `wizard`.
fn swap(
    id: WizardId,
    version: u64,
    wizard: &Wizard,
    account: Option<&Email>,
    nonce: u64,
) -> Result<Op, StoreError> {
    Ok(Op::Swap {
        key: Key::Wizard(id),
        expected: version,
        row: records::wizard_row(wizard, account)?,
        nonce,
    })
}

fn give_back(account: &Email, attempt: &Attempt, gate: &Gate) -> Op {
    Op::GiveBack {
        account: account.clone(),
        since: attempt.window,
        ticket: attempt.ticket,
        window: gate.limits.window,
    }
}
