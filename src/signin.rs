//! The shell around the pure wizard: load, check the step, verify at the
//! edge, transition, save atomically, then send and sign.

use crate::clock::Clock;
use crate::credentials::{HashError, PasswordHasher, SmsCodes, TokenIssuer, TokenPair};
use crate::delivery::{DeliveryError, SmsGateway};
use crate::domain::{DeviceFingerprint, Email, OtpCode, Password, UserId, WizardId};
use crate::store::{Loaded, Store, StoreError, Versioned};
use crate::users::User;
use crate::wizard::{
    Action, Context, Effect, Event, Factor, Rejection, Step, Transition, Wizard, transition,
};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// What a client sends at the `login` step, already parsed.
#[derive(Debug)]
pub struct Credentials {
    pub email: Email,
    pub password: Password,
    pub fingerprint: DeviceFingerprint,
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
    #[error(transparent)]
    SmsDelivery(#[from] DeliveryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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
    pub wizard_ttl: Duration,
    pub sms_code_ttl: Duration,
}

impl SignIn {
    #[tracing::instrument(skip_all, fields(wizard_id))]
    pub async fn start(&self) -> Result<Wizard, Failure> {
        let wizard = Wizard::start(WizardId::random(), self.clock.now(), self.wizard_ttl);
        tracing::Span::current().record("wizard_id", tracing::field::display(wizard.id));
        self.store.insert_wizard(&wizard).await?;
        Ok(wizard)
    }

    /// The wizard as it stands, to give an error its context; `None` when
    /// it cannot be read (the error is then answered without context).
    pub async fn describe(&self, id: WizardId) -> Option<Wizard> {
        match self.store.load_wizard(id, None).await {
            Ok(loaded) => loaded.map(|l| l.wizard.wizard),
            Err(_) => None,
        }
    }

    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "login"))]
    pub async fn credentials(&self, id: WizardId, input: Credentials) -> Result<Outcome, Failure> {
        let Credentials {
            email,
            password,
            fingerprint,
        } = input;
        self.step(id, Some(&email), Action::Credentials, async |_, user| {
            // Unknown email or wrong password: the same work and the same answer.
            let matched = self
                .passwords
                .verify(&password, user.map(|u| &u.password_hash))
                .await?;
            let account = user.filter(|_| matched).map(User::account);
            Ok(Event::Credentials {
                account,
                fingerprint,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "2fa"))]
    pub async fn choose_factor(&self, id: WizardId, factor: Factor) -> Result<Outcome, Failure> {
        self.step(id, None, Action::ChooseFactor, async |_, user| {
            Ok(Event::ChooseFactor {
                factor,
                account: bound(user)?.account(),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "2fa_google_auth"))]
    pub async fn totp_code(&self, id: WizardId, code: OtpCode) -> Result<Outcome, Failure> {
        let now = self.clock.now();
        self.step(id, None, Action::TotpCode, async |_, user| {
            let accepted = bound(user)?
                .totp_secret
                .as_ref()
                .is_some_and(|s| s.verify(&code, now));
            Ok(Event::TotpCode { accepted })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(wizard_id = %id, workflow = "2fa_sms_auth"))]
    pub async fn sms_code(&self, id: WizardId, code: OtpCode) -> Result<Outcome, Failure> {
        self.step(id, None, Action::SmsCode, async |wizard, _| {
            Ok(Event::SmsCode {
                digest: self.sms_codes.digest(wizard.id, &code),
            })
        })
        .await
    }

    /// One wizard step: two store round trips (load, compare-and-set) plus
    /// whatever the effects need.
    async fn step(
        &self,
        id: WizardId,
        email: Option<&Email>,
        action: Action,
        verify: impl AsyncFnOnce(&Wizard, Option<&User>) -> Result<Event, SignInError>,
    ) -> Result<Outcome, Failure> {
        let now = self.clock.now();
        let Loaded {
            wizard: Versioned { version, wizard },
            user,
        } = self
            .store
            .load_wizard(id, email)
            .await
            .map_err(|e| Failure::about(id, e))?
            .ok_or_else(|| Failure::about(id, SignInError::NotFound))?;
        let in_context = |error: SignInError| Failure {
            id: Some(id),
            error,
            wizard: Some(wizard.clone()),
        };

        wizard
            .admits(action, now)
            .map_err(|r| in_context(r.into()))?;
        if wizard.user().is_some() && user.is_none() {
            // The account was deleted mid-flow: nothing more may come of this wizard.
            return Err(in_context(Rejection::InvalidCredentials.into()));
        }
        let event = verify(&wizard, user.as_ref()).await.map_err(in_context)?;
        let ctx = Context {
            now,
            sms_code_ttl: self.sms_code_ttl,
            fresh_sms: self.sms_codes.fresh(id),
        };
        let Transition {
            wizard: next,
            effects,
        } = transition(&wizard, event, &ctx).map_err(|r| in_context(r.into()))?;

        match self.store.replace_wizard(version, &next).await {
            Ok(true) => {}
            Ok(false) => {
                // Report where the winning request left the wizard, not what we loaded.
                let current = self.describe(id).await;
                return Err(Failure {
                    error: SignInError::Conflict,
                    id: Some(id),
                    wizard: current,
                });
            }
            Err(e) => return Err(in_context(e.into())),
        }

        let mut tokens = None;
        for effect in effects {
            match effect {
                Effect::SendSms { to, code } => {
                    if let Err(e) = self.sms.send_code(&to, &code).await {
                        tracing::warn!(error = %e, "SMS delivery failed; putting the wizard back");
                        self.roll_back(version + 1, &wizard).await;
                        return Err(in_context(e.into()));
                    }
                }
                Effect::IssueTokens { user } => {
                    tokens = Some(self.issue_tokens(user, now).await.map_err(in_context)?);
                }
            }
        }
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

    /// Undoes a saved step whose side effect failed, so the client can retry it.
    async fn roll_back(&self, saved_version: u64, previous: &Wizard) {
        match self.store.replace_wizard(saved_version, previous).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("wizard moved on before it could be rolled back"),
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

/// The user a wizard is bound to; gone if an admin deleted it mid-flow.
fn bound(user: Option<&User>) -> Result<&User, SignInError> {
    user.ok_or(SignInError::Rejected(Rejection::InvalidCredentials))
}
