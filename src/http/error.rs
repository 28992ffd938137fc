use super::envelope::{Envelope, Meta};
use crate::captcha::CaptchaError;
use crate::domain::{ParseError, WizardId};
use crate::signin::{Failure, SignInError};
use crate::store::StoreError;
use crate::wizard::{Rejection, Wizard, Workflow};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Every error a client can see, each with a stable snake_case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter)]
pub enum ErrorKind {
    InvalidRequest,
    InvalidDeviceFingerprint,
    PayloadTooLarge,
    InvalidCredentials,
    InvalidCode,
    CodeExpired,
    WizardNotFound,
    WizardExpired,
    WizardCompleted,
    StepNotAllowed,
    FactorUnavailable,
    FactorAlreadyEnabled,
    FactorRequired,
    NoPendingSetup,
    ConcurrentRequest,
    SmsDeliveryFailed,
    EmailDeliveryFailed,
    RecoveryUnavailable,
    InvalidPassword,
    PasswordMismatch,
    PasswordReused,
    TooManyAttempts,
    RateLimited,
    DeviceMismatch,
    AccountChanged,
    ResendTooSoon,
    ResendLimitReached,
    CaptchaFailed,
    CaptchaUnavailable,
    WizardClosed,
    Overloaded,
    StoreUnavailable,
    RouteNotFound,
    Internal,
    // Sessions.
    InvalidToken,
    InvalidRefreshToken,
    SessionNotFound,
    // Admin API only.
    Unauthorized,
    InvalidField,
    EmailTaken,
    UserNotFound,
    KeysPinned,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::InvalidDeviceFingerprint => "invalid_device_fingerprint",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::InvalidCredentials => "invalid_credentials",
            ErrorKind::InvalidCode => "invalid_code",
            ErrorKind::CodeExpired => "code_expired",
            ErrorKind::WizardNotFound => "wizard_not_found",
            ErrorKind::WizardExpired => "wizard_expired",
            ErrorKind::WizardCompleted => "wizard_completed",
            ErrorKind::StepNotAllowed => "step_not_allowed",
            ErrorKind::FactorUnavailable => "factor_unavailable",
            ErrorKind::FactorAlreadyEnabled => "factor_already_enabled",
            ErrorKind::FactorRequired => "factor_required",
            ErrorKind::NoPendingSetup => "no_pending_setup",
            ErrorKind::ConcurrentRequest => "concurrent_request",
            ErrorKind::SmsDeliveryFailed => "sms_delivery_failed",
            ErrorKind::EmailDeliveryFailed => "email_delivery_failed",
            ErrorKind::RecoveryUnavailable => "password_recovery_unavailable",
            ErrorKind::InvalidPassword => "invalid_password",
            ErrorKind::PasswordMismatch => "password_mismatch",
            ErrorKind::PasswordReused => "password_reused",
            ErrorKind::TooManyAttempts => "too_many_attempts",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::DeviceMismatch => "device_mismatch",
            ErrorKind::AccountChanged => "account_changed",
            ErrorKind::ResendTooSoon => "resend_too_soon",
            ErrorKind::ResendLimitReached => "resend_limit_reached",
            ErrorKind::CaptchaFailed => "captcha_failed",
            ErrorKind::CaptchaUnavailable => "captcha_unavailable",
            ErrorKind::WizardClosed => "wizard_closed",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::StoreUnavailable => "store_unavailable",
            ErrorKind::RouteNotFound => "route_not_found",
            ErrorKind::Internal => "internal_error",
            ErrorKind::InvalidToken => "invalid_token",
            ErrorKind::InvalidRefreshToken => "invalid_refresh_token",
            ErrorKind::SessionNotFound => "session_not_found",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::InvalidField => "invalid_field",
            ErrorKind::EmailTaken => "email_taken",
            ErrorKind::UserNotFound => "user_not_found",
            ErrorKind::KeysPinned => "keys_pinned",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::InvalidDeviceFingerprint => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::InvalidCredentials
            | ErrorKind::InvalidCode
            | ErrorKind::Unauthorized
            | ErrorKind::InvalidToken
            | ErrorKind::InvalidRefreshToken => StatusCode::UNAUTHORIZED,
            ErrorKind::InvalidField
            | ErrorKind::CaptchaFailed
            | ErrorKind::InvalidPassword
            | ErrorKind::PasswordMismatch
            | ErrorKind::PasswordReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::WizardNotFound
            | ErrorKind::RouteNotFound
            | ErrorKind::UserNotFound
            | ErrorKind::SessionNotFound => StatusCode::NOT_FOUND,
            ErrorKind::CodeExpired
            | ErrorKind::WizardExpired
            | ErrorKind::WizardClosed
            | ErrorKind::AccountChanged => StatusCode::GONE,
            ErrorKind::TooManyAttempts
            | ErrorKind::RateLimited
            | ErrorKind::ResendTooSoon
            | ErrorKind::ResendLimitReached => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::DeviceMismatch => StatusCode::FORBIDDEN,
            ErrorKind::WizardCompleted
            | ErrorKind::StepNotAllowed
            | ErrorKind::FactorUnavailable
            | ErrorKind::FactorAlreadyEnabled
            | ErrorKind::FactorRequired
            | ErrorKind::NoPendingSetup
            | ErrorKind::ConcurrentRequest
            | ErrorKind::EmailTaken
            | ErrorKind::KeysPinned
            | ErrorKind::RecoveryUnavailable => StatusCode::CONFLICT,
            ErrorKind::SmsDeliveryFailed | ErrorKind::EmailDeliveryFailed => {
                StatusCode::BAD_GATEWAY
            }
            ErrorKind::Overloaded | ErrorKind::StoreUnavailable | ErrorKind::CaptchaUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ErrorKind {
    /// The wizard can take no further step: a client that follows
    /// `meta.next` must start a new one.
    fn ends_the_wizard(self) -> bool {
        matches!(
            self,
            ErrorKind::WizardExpired
                | ErrorKind::WizardClosed
                | ErrorKind::AccountChanged
                | ErrorKind::WizardCompleted
        )
    }
}

impl From<Rejection> for ErrorKind {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Expired => ErrorKind::WizardExpired,
            Rejection::Completed => ErrorKind::WizardCompleted,
            Rejection::StepNotAllowed => ErrorKind::StepNotAllowed,
            Rejection::InvalidCredentials => ErrorKind::InvalidCredentials,
            Rejection::InvalidCode => ErrorKind::InvalidCode,
            Rejection::CodeExpired => ErrorKind::CodeExpired,
            Rejection::FactorUnavailable => ErrorKind::FactorUnavailable,
            Rejection::DeviceMismatch => ErrorKind::DeviceMismatch,
            Rejection::AccountChanged => ErrorKind::AccountChanged,
            Rejection::ResendTooSoon { .. } => ErrorKind::ResendTooSoon,
            Rejection::ResendLimit => ErrorKind::ResendLimitReached,
            Rejection::PasswordReused => ErrorKind::PasswordReused,
        }
    }
}

/// An error answered as an envelope, in the context of the wizard when known.
#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub uuid: Option<WizardId>,
    /// The step the wizard is still on, and when it expires.
    pub stands_at: Option<(Workflow, DateTime<Utc>)>,
    /// Seconds until a retry can succeed (429 answers).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorData<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            uuid: None,
            stands_at: None,
            retry_after: None,
        }
    }

    pub fn invalid(e: ParseError) -> Self {
        Self::new(ErrorKind::InvalidRequest, e.0)
    }

    /// Names the wizard the request was about (and, if it could be read, its step).
    pub fn about(mut self, uuid: WizardId, wizard: Option<&Wizard>) -> Self {
        self.uuid = Some(uuid);
        self.in_wizard(wizard)
    }

    fn in_wizard(mut self, wizard: Option<&Wizard>) -> Self {
        if let Some(wizard) = wizard {
            self.uuid = Some(wizard.id);
            self.stands_at = Some((wizard.workflow(), wizard.expires_at));
        }
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = Envelope {
            code: self.kind.status().as_u16(),
            data: ErrorData {
                error: ErrorBody {
                    code: self.kind.code(),
                    message: &self.message,
                    retry_after: self.retry_after,
                },
            },
            done: false,
            uuid: self.uuid,
            // Without a readable wizard the way forward is a new one, which starts at `login`.
            workflow: self
                .stands_at
                .map_or(Workflow::Login, |(workflow, _)| workflow),
            meta: self.stands_at.map(|(workflow, expires_at)| {
                let mut meta = Meta::new(workflow, expires_at);
                if self.kind.ends_the_wizard() {
                    meta.next.clear();
                }
                meta
            }),
        }
        .respond();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if self.kind == ErrorKind::InvalidToken {
            // RFC 6750 §3: how to authenticate, and what was wrong.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        response
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        let message = failure.error.to_string();
        let error = match &failure.error {
            SignInError::Rejected(r) => ApiError {
                retry_after: match r {
                    Rejection::ResendTooSoon { retry_after_secs } => Some(*retry_after_secs),
                    _ => None,
                },
                ..ApiError::new((*r).into(), message)
            },
            SignInError::NotFound => ApiError::new(ErrorKind::WizardNotFound, message),
            SignInError::Conflict => ApiError::new(ErrorKind::ConcurrentRequest, message),
            SignInError::Overloaded => ApiError::new(ErrorKind::Overloaded, message),
            SignInError::TooManyAttempts { retry_after } => ApiError {
                retry_after: Some(*retry_after),
                ..ApiError::new(ErrorKind::TooManyAttempts, message)
            },
            SignInError::RateLimited { retry_after } | SignInError::MailLimited { retry_after } => {
                ApiError {
                    retry_after: Some(retry_after.as_millis().div_ceil(1000) as u64),
                    ..ApiError::new(ErrorKind::RateLimited, message)
                }
            }
            SignInError::WizardClosed => ApiError::new(ErrorKind::WizardClosed, message),
            SignInError::Captcha(CaptchaError::Failed) => {
                ApiError::new(ErrorKind::CaptchaFailed, message)
            }
            SignInError::Captcha(CaptchaError::Unavailable(e)) => {
                tracing::warn!(error = %e, "reCAPTCHA verifier unreachable");
                ApiError::new(ErrorKind::CaptchaUnavailable, message)
            }
            SignInError::SmsDelivery(e) => {
                tracing::warn!(error = %e, "SMS delivery failed");
                ApiError::new(
                    ErrorKind::SmsDeliveryFailed,
                    "the SMS could not be sent; try again",
                )
            }
            SignInError::EmailDelivery(e) => {
                tracing::warn!(error = %e, "email delivery failed");
                ApiError::new(
                    ErrorKind::EmailDeliveryFailed,
                    "the email could not be sent; try again",
                )
            }
            SignInError::RecoveryUnavailable => {
                ApiError::new(ErrorKind::RecoveryUnavailable, message)
            }
            SignInError::Store(e) => store_error(e),
            SignInError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                ApiError::new(ErrorKind::Internal, "something went wrong on our side")
            }
        };
        ApiError {
            uuid: failure.id,
            ..error
        }
        .in_wizard(failure.wizard.as_ref())
    }
}

/// Store trouble is ours, never the client's: 503 when it is down, 500 when it is corrupt.
pub fn store_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %e, "store unavailable");
            ApiError::new(
                ErrorKind::StoreUnavailable,
                "the session store is unavailable; retry shortly",
            )
        }
        StoreError::Corrupt(_) => {
            tracing::error!(error = %e, "corrupt record in store");
            ApiError::new(ErrorKind::Internal, "something went wrong on our side")
        }
    }
}

pub async fn unknown_route() -> HttpResponse {
    ApiError::new(ErrorKind::RouteNotFound, "no such endpoint (or method)").error_response()
}
