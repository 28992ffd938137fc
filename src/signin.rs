//! The shell around the pure wizard: load, check the step, verify at the
//! edge, transition, save atomically, then send and sign.

use crate::captcha::{CaptchaError, Recaptcha};
use crate::clock::Clock;
use crate::credentials::{HashError, PasswordHasher, SmsCodes, TokenIssuer, TokenPair};
use crate::delivery::{DeliveryError, SmsGateway};
use crate::domain::{DeviceFingerprint, Email, OtpCode, Password, UserId, WizardId, WizardKey};
use crate::lockout::{Admission, Gate, Limits};
use crate::policy::LivePolicy;
use crate::store::{Attempts, Loaded, Replaced, Settle, Store, StoreError, Versioned};
use crate::users::User;
use crate::wizard::{
    Action, Context, Effect, Event, Factor, Opener, Rejection, Step, Transition, Wizard, Workflow,
    transition,
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
    #[error("too many wrong codes for this sign-in; start a new one")]
    WizardClosed,
    #[error(transparent)]
    SmsDelivery(#[from] DeliveryError),
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
    pub sms_codes: SmsCodes,
    pub sms: SmsGateway,
    pub tokens: Arc<TokenIssuer>,
    pub clock: Clock,
    pub policy: Arc<LivePolicy>,
    /// Configured reCAPTCHA; checked while the policy has it on.
    pub captcha: Option<Recaptcha>,
    /// Codes one wizard may try before it is closed.
    pub codes_per_wizard: u32,
    pub sms_code_ttl: Duration,
    pub resend_cooldown: Duration,
    pub max_resends: u32,
    /// Refuse requests without the wizard's key (see `domain::WizardKey`),
    /// and later steps that do not name their device.
    pub require_wizard_key: bool,
}

impl SignIn {
    /// Starts a wizard; the key is handed to the client once, and only its digest is kept.
    #[tracing::instrument(skip_all, fields(wizard_id))]
    pub async fn start(&self) -> Result<(Wizard, WizardKey), Failure> {
        let ttl = self.policy.get().wizard_ttl();
        let key = WizardKey::generate();
        let wizard = Wizard::start(WizardId::random(), &key, self.clock.now(), ttl);
        tracing::Span::current().record("wizard_id", tracing::field::display(wizard.id));
        self.store.insert_wizard(&wizard).await?;
        Ok((wizard, key))
    }

    /// The wizard as it stands, to give an error its context; `None` when
    /// it cannot be read or the key does not open it.
    pub async fn describe(&self, id: WizardId, key: Option<&WizardKey>) -> Option<Wizard> {
        let opener = Opener::new(key, self.require_wizard_key);
        match self.store.load_wizard(id, None, &opener, None).await {
            Ok(loaded) => loaded.map(|l| l.wizard.wizard),
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
        match self.captcha() {
            Captcha::Off => {}
            Captcha::Required(recaptcha) => recaptcha
                .verify(captcha.as_deref(), client_ip)
                .await
                .map_err(|e| Failure::about(id, e))?,
            Captcha::Unverifiable => {
                return Err(Failure::about(
                    id,
                    CaptchaError::Unavailable(anyhow::anyhow!(
                        "reCAPTCHA is on, but this instance has no reCAPTCHA keys to verify with"
                    )),
                ));
            }
        }
        self.step(
            id,
            Some(&email),
            presented,
            Action::Credentials,
            async |_, user| {
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
            async |_, user| {
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
        self.step(id, None, presented, Action::TotpCode, async |_, user| {
            let user = bound(user)?;
            let step = user.totp_secret.as_ref().and_then(|s| s.verify(&code, now));
            Ok(Checked {
                event: Event::TotpCode {
                    account: user.account(),
                    accepted: step.is_some(),
                },
                totp_step: step.map(|step| (user.id, step)),
            })
        })
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
            async |wizard, user| {
                Ok(Event::SmsCode {
                    account: bound(user)?.account(),
                    digest: self.sms_codes.digest(wizard.id, &code),
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
        self.step(id, None, presented, Action::ResendSms, async |_, user| {
            Ok(Event::ResendSms {
                account: bound(user)?.account(),
            }
            .into())
        })
        .await
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
        let (step, take, code) = match action {
            Action::Credentials => (Workflow::Login, true, false),
            Action::ChooseFactor => (Workflow::ChooseFactor, false, false),
            Action::TotpCode => (Workflow::TotpCode, true, true),
            Action::SmsCode => (Workflow::SmsCode, true, true),
            Action::ResendSms => (Workflow::SmsCode, false, true),
        };
        let limits = Limits {
            now,
            max_attempts: policy.max_attempts,
            window: policy.attempts_window(),
            block: policy.block(),
            codes_per_wizard: self.codes_per_wizard,
        };
        Gate {
            step,
            take,
            code,
            limits,
        }
    }

    /// One wizard step: two store round trips (load with the attempt gate,
    /// compare-and-set) plus whatever the effects need.
    async fn step(
        &self,
        id: WizardId,
        email: Option<&Email>,
        presented: &Presented,
        action: Action,
        verify: impl AsyncFnOnce(&Wizard, Option<&User>) -> Result<Checked, SignInError>,
    ) -> Result<Outcome, Failure> {
        let now = self.clock.now();
        let gate = self.gate(action, now);
        let opener = Opener::new(presented.wizard_key.as_ref(), self.require_wizard_key);
        let Loaded {
            wizard: Versioned { version, wizard },
            user,
            admission,
            attempt_key: key,
        } = self
            .store
            .load_wizard(id, email, &opener, Some(&gate))
            .await
            .map_err(|e| Failure::about(id, e))?
            .ok_or_else(|| Failure::about(id, SignInError::NotFound))?;
        // The gate took an attempt before anything was checked (see `lockout`).
        let taken = match admission {
            Admission::Admitted { attempt } => attempt,
            _ => None,
        };
        // Set once the compare-and-set went through: the attempt is settled then.
        let mut settled = false;

        let result = async {
            let in_context = |error: SignInError| Failure {
                id: Some(id),
                error,
                wizard: Some(wizard.clone()),
            };

            wizard
                .admits(action, now)
                .and_then(|()| wizard.same_device(presented.device.as_ref(), self.require_wizard_key))
                .and_then(|()| wizard.still_bound_to(user.as_ref().map(User::account).as_ref()))
                .map_err(|r| in_context(r.into()))?;
            match admission {
                Admission::Blocked { until } => return Err(in_context(blocked(until, now))),
                Admission::WizardClosed => return Err(in_context(SignInError::WizardClosed)),
                Admission::Admitted { .. } => {}
                // Every step asks for a gate, and `admits` just found the wizard at
                // the gate's step and alive: a store that did not apply it disagrees
                // with us about the wizard, and nothing may be verified unchecked.
                Admission::Unchecked => {
                    return Err(in_context(SignInError::Internal(anyhow::anyhow!(
                        "the store did not apply the attempt gate to an admitted {action:?} step"
                    ))));
                }
            };
            // A failed check that used the last attempt of the window blocks the
            // account from now on; this answer is still the plain failure.
            let failed = async |rejection: Rejection| -> SignInError {
                let is_guess = matches!(
                    rejection,
                    Rejection::InvalidCredentials | Rejection::InvalidCode
                );
                let last_attempt =
                    is_guess && taken.is_some_and(|a| a.number >= gate.limits.max_attempts);
                if let Some(key) = key.as_ref().filter(|_| last_attempt)
                    && let Err(e) = self.store.block(key, now, now + gate.limits.block).await
                {
                    // The verdict stands; the next attempt past the limit starts the block instead.
                    tracing::error!(error = %e, "could not block an account after its last attempt");
                }
                rejection.into()
            };

            let Checked { event, totp_step } =
                verify(&wizard, user.as_ref()).await.map_err(in_context)?;
            let ctx = Context {
                now,
                sms_code_ttl: self.sms_code_ttl,
                resend_cooldown: self.resend_cooldown,
                max_resends: self.max_resends,
                fresh_sms: self.sms_codes.fresh(id),
            };
            let Transition {
                wizard: next,
                effects,
            } = match transition(&wizard, event, &ctx) {
                Ok(transition) => transition,
                Err(rejection) => return Err(in_context(failed(rejection).await)),
            };

            let attempt_settles = match (&key, &next.step, taken) {
                // A completed sign-in forgives the account's earlier failures.
                (Some(key), Step::Terminated { .. }, _) => Attempts::Clear(key.clone()),
                // A success short of the end (the password before a code) was no failure.
                (Some(key), _, Some(attempt)) => Attempts::Refund(key.clone(), attempt),
                _ => Attempts::Keep,
            };
            let settle = Settle {
                // No step is saved on an account that changed since it was read.
                user: next.bound(),
                attempts: attempt_settles,
                totp_step,
            };
            match self.store.replace_wizard(version, &next, &settle).await {
                Ok(Replaced::Done) => settled = true,
                Ok(Replaced::TotpReplayed) => {
                    return Err(in_context(failed(Rejection::InvalidCode).await));
                }
                Ok(Replaced::Lost) => {
                    // Report where the winning request left the wizard, not what we loaded.
                    let current = self.describe(id, presented.wizard_key.as_ref()).await;
                    return Err(Failure {
                        error: SignInError::Conflict,
                        id: Some(id),
                        wizard: current,
                    });
                }
                Err(e) => return Err(in_context(e.into())),
            }

            let tokens = self
                .perform(effects, now, (version + 1, &wizard))
                .await
                .map_err(in_context)?;
            let factors = match (&next.step, user) {
                (
                    Step::ChooseFactor { .. } | Step::TotpCode { .. } | Step::SmsCode { .. },
                    Some(user),
                ) => user.account().factors(),
                _ => Vec::new(),
            };
            Ok(Outcome {
                wizard: next,
                tokens,
                factors,
            })
        }
        .await;

        // An attempt that ended without a verdict on the password or code
        // (wrong key or device, overload, a lost race...) is given back.
        if let Err(failure) = &result
            && let Some(attempt) = &taken
            && !settled
            && !failure.error.is_verdict()
            && let Some(key) = &key
            && let Err(e) = self
                .store
                .refund(key, attempt, gate.code.then_some(id))
                .await
        {
            tracing::warn!(error = %e, "could not give an attempt back");
        }
        result
    }

    /// Performs a saved step's effects; the tokens, if it issued them. When an
    /// SMS cannot be sent, the step is undone (`saved` is the version it was
    /// saved as, and the wizard before it) so the client can retry it.
    async fn perform(
        &self,
        effects: Vec<Effect>,
        now: DateTime<Utc>,
        saved: (u64, &Wizard),
    ) -> Result<Option<TokenPair>, SignInError> {
        let mut tokens = None;
        for effect in effects {
            match effect {
                Effect::SendSms { to, code } => {
                    if let Err(e) = self.sms.send_code(&to, &code).await {
                        tracing::warn!(error = %e, "SMS delivery failed; putting the wizard back");
                        self.roll_back(saved.0, saved.1).await;
                        return Err(e.into());
                    }
                }
                Effect::IssueTokens { user } => tokens = Some(self.issue_tokens(user, now).await?),
            }
        }
        Ok(tokens)
    }

    /// Undoes a saved step whose side effect failed, so the client can retry it.
    async fn roll_back(&self, saved_version: u64, previous: &Wizard) {
        match self
            .store
            .replace_wizard(saved_version, previous, &Settle::default())
            .await
        {
            Ok(Replaced::Done) => {}
            Ok(_) => tracing::warn!("wizard moved on before it could be rolled back"),
            Err(e) => tracing::error!(error = %e, "could not roll the wizard back"),
        }
    }

    async fn issue_tokens(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<TokenPair, SignInError> {
        let tokens = Arc::clone(&self.tokens);
        // Two RSA signatures: CPU work, kept off the async workers.
        let pair = tokio::task::spawn_blocking(move || tokens.issue(user, now))
            .await
            .map_err(anyhow::Error::from)??;
        Ok(pair)
    }
}

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
}

/// A verdict from the edges, plus the TOTP step to record if it succeeds.
struct Checked {
    event: Event,
    totp_step: Option<(UserId, u64)>,
}

impl From<Event> for Checked {
    fn from(event: Event) -> Self {
        Checked {
            event,
            totp_step: None,
        }
    }
}

/// The answer for a blocked account: how long until a retry can succeed,
/// in whole seconds rounded up.
fn blocked(until: DateTime<Utc>, now: DateTime<Utc>) -> SignInError {
    let millis = u64::try_from((until - now).num_milliseconds()).unwrap_or(0);
    SignInError::TooManyAttempts {
        retry_after: millis.div_ceil(1000),
    }
}

/// The user a wizard is bound to (`Wizard::still_bound_to` has refused a deleted one).
fn bound(user: Option<&User>) -> Result<&User, SignInError> {
    user.ok_or(SignInError::Rejected(Rejection::AccountChanged))
}
