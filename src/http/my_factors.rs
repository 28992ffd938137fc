//! `/api/v2/my/account/2fa`: a signed-in user's own second factors (see
//! `second_factors`). Every endpoint needs the access token of a live
//! session; every change also needs a proof (the password, or a code).

use super::body::{fields_as, read_object};
use super::envelope::{Envelope, rfc3339};
use super::error::{ApiError, ErrorKind, store_error};
use super::my_account::MyAccount;
use super::signin::TotpSetup;
use crate::domain::{BackupCode, OtpCode, Password, PhoneNumber};
use crate::second_factors::{FactorError, Proof, SecondFactors, Status};
use crate::sessions::{Authenticated, Session, WithAccount};
use crate::users::User;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusData {
    totp: bool,
    sms: bool,
    phone: Option<String>,
    /// `null` when the account holds no backup codes.
    backup_codes_left: Option<usize>,
}

impl From<Status> for StatusData {
    fn from(status: Status) -> Self {
        StatusData {
            totp: status.totp,
            sms: status.phone.is_some(),
            phone: status.phone.map(|p| p.as_str().to_owned()),
            backup_codes_left: status.backup_codes_left,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SetupData {
    #[serde(flatten)]
    app: TotpSetup,
    backup_codes: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BackupCodesData {
    backup_codes: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhoneCheckData {
    phone: String,
    expires_at: String,
}

/// A proof: the password, or a code (six digits from the app, or a backup code).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofBody {
    password: Option<SecretString>,
    code: Option<String>,
}

/// What a proof may be, by endpoint.
#[derive(Clone, Copy)]
enum Accepts {
    /// Six digits (a code from the app, or a text).
    SixDigits,
    /// Six digits, or a backup code.
    Code,
    Either,
}

async fn read_proof(payload: web::Payload, accepts: Accepts) -> Result<Proof, ApiError> {
    proof_from(read_object(payload).await?, accepts)
}

fn proof_from(fields: Map<String, Value>, accepts: Accepts) -> Result<Proof, ApiError> {
    let body: ProofBody =
        fields_as(fields).map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e.message()))?;
    let refused = |what: &str| ApiError::new(ErrorKind::InvalidRequest, what.to_owned());
    match (body.password, body.code, accepts) {
        (Some(password), None, Accepts::Either) => Password::parse(password)
            .map(Proof::Password)
            .map_err(ApiError::invalid),
        (None, Some(code), Accepts::SixDigits) => OtpCode::parse(&code)
            .map(Proof::Totp)
            .map_err(ApiError::invalid),
        (None, Some(code), Accepts::Code | Accepts::Either) => {
            // Six digits are the app's; ten (grouped or not) a backup code.
            match OtpCode::parse(&code) {
                Ok(code) => Ok(Proof::Totp(code)),
                Err(_) => BackupCode::parse(&code)
                    .map(Proof::BackupCode)
                    .map_err(|_| refused("code must be 6 digits from the app, or a backup code")),
            }
        }
        (_, _, Accepts::SixDigits) => Err(refused("send the code: {\"code\"}")),
        (_, _, Accepts::Code) => Err(refused(
            "send a code from the app or a backup code: {\"code\"}",
        )),
        (_, _, Accepts::Either) => Err(refused(
            "send either the password or a code: {\"password\"} or {\"code\"}",
        )),
    }
}

/// The request's session and its account.
async fn signed_in(req: &HttpRequest, my: &MyAccount) -> Result<(Authenticated, User), ApiError> {
    let mut auth = my.authenticate(req, WithAccount::Yes).await?;
    // A session an account change left behind changes nothing more.
    if !auth.is_current() {
        return Err(ApiError::new(
            ErrorKind::InvalidToken,
            "the account changed since this session signed in; sign in again",
        ));
    }
    let user = auth.user.take().ok_or_else(|| {
        ApiError::new(
            ErrorKind::InvalidToken,
            "the account of this access token no longer exists",
        )
    })?;
    Ok((auth, user))
}

fn factor_error(e: FactorError, proof_was_password: bool) -> ApiError {
    let message = e.to_string();
    match e {
        FactorError::Refused if proof_was_password => {
            ApiError::new(ErrorKind::InvalidCredentials, message)
        }
        FactorError::Refused => ApiError::new(ErrorKind::InvalidCode, message),
        FactorError::TooManyAttempts { retry_after } => ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(ErrorKind::TooManyAttempts, message)
        },
        FactorError::AlreadyEnabled => ApiError::new(ErrorKind::FactorAlreadyEnabled, message),
        FactorError::NotEnabled => ApiError::new(ErrorKind::FactorUnavailable, message),
        FactorError::NoPendingSetup => ApiError::new(ErrorKind::NoPendingSetup, message),
        FactorError::Conflict => ApiError::new(ErrorKind::ConcurrentRequest, message),
        FactorError::CodeExpired => ApiError::new(ErrorKind::CodeExpired, message),
        FactorError::CodeRequired => ApiError::new(ErrorKind::InvalidRequest, message),
        FactorError::FactorRequired => ApiError::new(ErrorKind::FactorRequired, message),
        FactorError::ResendTooSoon { retry_after } => ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(ErrorKind::ResendTooSoon, message)
        },
        FactorError::ResendLimit => ApiError::new(ErrorKind::ResendLimitReached, message),
        FactorError::Delivery(e) => {
            tracing::warn!(error = %e, "SMS delivery failed");
            ApiError::new(
                ErrorKind::SmsDeliveryFailed,
                "the code could not be sent; try again",
            )
        }
        FactorError::Overloaded => ApiError::new(ErrorKind::Overloaded, message),
        FactorError::Store(e) => store_error(&e),
        FactorError::Internal(e) => {
            tracing::error!(error = ?e, "internal error");
            ApiError::new(ErrorKind::Internal, "something went wrong on our side")
        }
    }
}

fn is_password(proof: &Proof) -> bool {
    matches!(proof, Proof::Password(_))
}

fn shown(codes: &[BackupCode]) -> Vec<String> {
    codes.iter().map(BackupCode::display).collect()
}

/// `GET /account/2fa`.
pub async fn status(req: HttpRequest, my: web::Data<MyAccount>) -> Result<HttpResponse, ApiError> {
    let (_, user) = signed_in(&req, &my).await?;
    let status = my
        .factors
        .status(&user)
        .await
        .map_err(|e| factor_error(e, false))?;
    Ok(Envelope::signed_in(StatusData::from(status)).respond())
}

/// `POST /account/2fa/google/setup` `{password}`.
pub async fn set_up_totp(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (_, user) = signed_in(&req, &my).await?;
    let proof = read_proof(payload, Accepts::Either).await?;
    let password = is_password(&proof);
    let setup = my
        .factors
        .set_up_totp(&user, proof)
        .await
        .map_err(|e| factor_error(e, password))?;
    let app = TotpSetup::new(&setup.secret, &my.totp_issuer, &user.email)?;
    Ok(Envelope::signed_in(SetupData {
        app,
        backup_codes: shown(&setup.backup_codes),
    })
    .respond())
}

/// The shape of a change: the session's user, a proof, the new status.
async fn change(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
    accepts: Accepts,
    apply: impl AsyncFnOnce(&SecondFactors, &User, &Session, Proof) -> Result<Status, FactorError>,
) -> Result<HttpResponse, ApiError> {
    let (auth, user) = signed_in(&req, &my).await?;
    let proof = read_proof(payload, accepts).await?;
    let password = is_password(&proof);
    let status = apply(&my.factors, &user, &auth.session, proof)
        .await
        .map_err(|e| factor_error(e, password))?;
    Ok(Envelope::signed_in(StatusData::from(status)).respond())
}

/// `POST /account/2fa/google/enable` `{code}`: the set-up app's first code.
pub async fn enable_totp(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    change(req, my, payload, Accepts::SixDigits, async |f, u, s, p| {
        f.enable_totp(u, s, p).await
    })
    .await
}

/// `POST /account/2fa/google/disable` `{code}`: a code from the app or a backup code.
pub async fn disable_totp(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    change(req, my, payload, Accepts::Code, async |f, u, s, p| {
        f.disable_totp(u, s, p).await
    })
    .await
}

/// `POST /account/2fa/backup-codes` `{password}` or `{code}`: ten new codes.
pub async fn renew_backup_codes(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (auth, user) = signed_in(&req, &my).await?;
    let proof = read_proof(payload, Accepts::Either).await?;
    let password = is_password(&proof);
    let codes = my
        .factors
        .renew_backup_codes(&user, &auth.session, proof)
        .await
        .map_err(|e| factor_error(e, password))?;
    Ok(Envelope::signed_in(BackupCodesData {
        backup_codes: shown(&codes),
    })
    .respond())
}

/// `POST /account/2fa/sms` `{phone, password}`: sends a code to the number.
pub async fn add_phone(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (_, user) = signed_in(&req, &my).await?;
    let mut fields = read_object(payload).await?;
    let phone = match fields.remove("phone") {
        Some(Value::String(phone)) => PhoneNumber::parse(&phone).map_err(ApiError::invalid)?,
        _ => {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                "`phone` must be a phone number in E.164 form, such as +15550100123",
            ));
        }
    };
    let proof = proof_from(fields, Accepts::Either)?;
    let password = is_password(&proof);
    let check = my
        .factors
        .send_phone_code(&user, phone, proof)
        .await
        .map_err(|e| factor_error(e, password))?;
    Ok(Envelope::signed_in(PhoneCheckData {
        phone: check.phone.as_str().to_owned(),
        expires_at: rfc3339(check.expires_at),
    })
    .respond())
}

/// `POST /account/2fa/sms/confirm` `{code}`: the code sent to the new number.
pub async fn confirm_phone(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    change(req, my, payload, Accepts::SixDigits, async |f, u, s, p| {
        f.confirm_phone(u, s, p).await
    })
    .await
}

/// `POST /account/2fa/sms/disable` `{password}` or `{code}`.
pub async fn remove_phone(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    change(req, my, payload, Accepts::Either, async |f, u, s, p| {
        f.remove_phone(u, s, p).await
    })
    .await
}
