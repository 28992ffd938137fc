use super::body::StepBody;
use super::envelope::{Envelope, rfc3339};
use super::error::{ApiError, ErrorKind};
use super::rate_limit::IpLimiter;
use crate::allowance::Allowance;
use crate::credentials::TotpSecret;
use crate::credentials::{IssuedToken, TokenPair};
use crate::domain::{
    BackupCode, DeviceFingerprint, Email, NewPassword, OtpCode, Password, WizardId, WizardKey,
};
use crate::signin::{Captcha, Credentials, Failure, Outcome, Presented, SignIn, SignInError};
use crate::wizard::{Factor, Step};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

#[derive(Serialize)]
struct StartData<'a> {
    recaptcha: Recaptcha<'a>,
    is_qr_available: bool,
    is_password_recovery_available: bool,
}

#[derive(Serialize)]
struct Recaptcha<'a> {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    site_key: Option<&'a str>,
}

/// B2Core's step data: both tokens once done, else the factors on offer;
/// what enrolling an authenticator app needs; backup codes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StepData {
    access_token: Option<TokenData>,
    refresh_token: Option<TokenData>,
    tfa_providers: Vec<TfaProvider>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    enrolment: Option<TotpSetup>,
    /// Issued by this step, shown this once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    backup_codes: Vec<String>,
    /// After a backup code was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    backup_codes_left: Option<usize>,
}

/// An authenticator app to enrol (in the wizard and in self-service):
/// the secret to type, the `otpauth://` URI, and that URI as a QR code.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TotpSetup {
    secret: String,
    otpauth_url: String,
    /// A PNG `data:` URL.
    qr_code: String,
}

impl TotpSetup {
    pub(super) fn new(
        secret: &TotpSecret,
        issuer: &str,
        account: &Email,
    ) -> Result<TotpSetup, ApiError> {
        let internal = |what: &str| {
            tracing::error!(what, "cannot draw an enrolment");
            ApiError::new(ErrorKind::Internal, "something went wrong on our side")
        };
        let otpauth_url = secret
            .provisioning_uri(issuer, account.as_str())
            .ok_or_else(|| internal("otpauth URI"))?;
        let qr_code =
            crate::credentials::qr::png_data_url(&otpauth_url).map_err(|_| internal("QR code"))?;
        Ok(TotpSetup {
            // Into the answer, the one place a secret is shown.
            secret: secret.expose_base32().to_owned(),
            otpauth_url,
            qr_code,
        })
    }
}

#[derive(Serialize)]
pub(super) struct TokenData {
    token: String,
    #[serde(rename = "createdAt")]
    created_at: String,
    #[serde(rename = "expiresAt")]
    expires_at: String,
}

#[derive(Serialize)]
pub(super) struct TfaProvider {
    name: Factor,
    #[serde(rename = "localizedCaption")]
    localized_caption: &'static str,
    enabled: bool,
}

impl From<IssuedToken> for TokenData {
    fn from(t: IssuedToken) -> Self {
        Self {
            // Into the answer, the one place a token is shown.
            token: t.token.expose_secret().to_owned(),
            created_at: rfc3339(t.created_at),
            expires_at: rfc3339(t.expires_at),
        }
    }
}

/// A step's answer.
fn step_answer(outcome: Outcome, issuer: &str) -> Result<HttpResponse, ApiError> {
    let (access_token, refresh_token) = match outcome.tokens {
        Some(TokenPair { access, refresh }) => (Some(access.into()), Some(refresh.into())),
        None => (None, None),
    };
    let enrolment = outcome
        .enrolment
        .as_ref()
        .map(|(secret, account)| TotpSetup::new(secret, issuer, account))
        .transpose()?;
    let data = StepData {
        access_token,
        refresh_token,
        tfa_providers: tfa_providers(outcome.factors),
        enrolment,
        backup_codes: outcome
            .backup_codes
            .iter()
            .map(BackupCode::display)
            .collect(),
        backup_codes_left: outcome.backup_codes_left,
    };
    Ok(Envelope::for_wizard(&outcome.wizard, data).respond())
}

/// The factors as B2Core's `tfaProviders` list them.
pub(super) fn tfa_providers(factors: Vec<Factor>) -> Vec<TfaProvider> {
    factors
        .into_iter()
        .map(|name| TfaProvider {
            name,
            localized_caption: match name {
                Factor::Totp => "Authenticator app",
                Factor::Sms => "SMS",
                Factor::BackupCode => "Backup codes",
            },
            enabled: true,
        })
        .collect()
}

pub async fn start(req: HttpRequest, signin: web::Data<SignIn>) -> Result<HttpResponse, ApiError> {
    let (wizard, key) = signin.start(allowance(&req).as_deref()).await?;
    let mut envelope = Envelope::for_wizard(&wizard, login_data(&signin));
    if let Some(meta) = envelope.meta.as_mut() {
        meta.wizard_key = Some(key.expose().to_owned());
    }
    Ok(envelope.respond())
}

/// What the login form needs to be drawn (at the start, and after a reset).
fn login_data(signin: &SignIn) -> StartData<'_> {
    StartData {
        recaptcha: match signin.captcha() {
            Captcha::Required(captcha) => Recaptcha {
                enabled: true,
                site_key: Some(&captcha.site_key),
            },
            // The truth: the login step will need a token, which this instance cannot offer.
            Captcha::Unverifiable => Recaptcha {
                enabled: true,
                site_key: None,
            },
            Captcha::Off => Recaptcha {
                enabled: false,
                site_key: None,
            },
        },
        is_qr_available: false,
        is_password_recovery_available: signin.mailer.is_some(),
    }
}

#[derive(Deserialize)]
struct CredentialsBody {
    email: String,
    password: SecretString,
    device_fingerprint: String,
    #[serde(rename = "recaptchaResponse")]
    recaptcha_response: Option<String>,
}

pub async fn credentials(
    req: HttpRequest,
    signin: web::Data<SignIn>,
    limiter: web::Data<IpLimiter>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut body = StepBody::read(payload).await?;
    let wizard_key = wizard_key(&req, body.id)?;
    let client_ip = limiter.client_ip(&req);
    let input = match body
        .take::<CredentialsBody>()
        .and_then(|b| parse_credentials(b, client_ip))
    {
        Ok(input) => input,
        Err(e) => return Err(in_context(&signin, body.id, wizard_key.as_ref(), e).await),
    };
    let presented = Presented {
        wizard_key,
        device: None,
        allowance: allowance(&req),
        client_ip,
    };
    let outcome = signin.credentials(body.id, input, &presented).await?;
    step_answer(outcome, &signin.totp_issuer)
}

fn parse_credentials(
    body: CredentialsBody,
    client_ip: Option<IpAddr>,
) -> Result<Credentials, ApiError> {
    Ok(Credentials {
        email: Email::parse(&body.email).map_err(ApiError::invalid)?,
        password: Password::parse(body.password).map_err(ApiError::invalid)?,
        fingerprint: DeviceFingerprint::parse(&body.device_fingerprint)
            .map_err(|e| ApiError::new(ErrorKind::InvalidDeviceFingerprint, e.0))?,
        captcha: body.recaptcha_response,
        client_ip,
    })
}

#[derive(Deserialize)]
struct ChooseFactorBody {
    #[serde(rename = "type")]
    factor: Factor,
}

#[derive(Deserialize)]
struct CodeBody {
    code: String,
}

#[derive(Deserialize)]
struct NoFields {}

pub async fn choose_factor(
    req: HttpRequest,
    signin: web::Data<SignIn>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, factor, presented) =
        read_later_step(&req, &signin, payload, |b: ChooseFactorBody| Ok(b.factor)).await?;
    let outcome = signin.choose_factor(id, factor, &presented).await?;
    Ok(Envelope::for_wizard(&outcome.wizard, ()).respond())
}

pub async fn totp_code(
    req: HttpRequest,
    signin: web::Data<SignIn>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, code, presented) = read_later_step(&req, &signin, payload, parse_code).await?;
    step_answer(
        signin.totp_code(id, code, &presented).await?,
        &signin.totp_issuer,
    )
}

/// `POST /2fa/backup_code`: one of the account's backup codes.
pub async fn backup_code(
    req: HttpRequest,
    signin: web::Data<SignIn>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, code, presented) = read_later_step(&req, &signin, payload, |b: CodeBody| {
        BackupCode::parse(&b.code).map_err(ApiError::invalid)
    })
    .await?;
    step_answer(
        signin.backup_code(id, code, &presented).await?,
        &signin.totp_issuer,
    )
}

/// `POST /2fa/google/enroll`: the first code of the app being enrolled.
pub async fn enroll_totp(
    req: HttpRequest,
    signin: web::Data<SignIn>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, code, presented) = read_later_step(&req, &signin, payload, parse_code).await?;
    step_answer(
        signin.enroll_totp(id, code, &presented).await?,
        &signin.totp_issuer,
    )
}

pub async fn sms_code(
    req: HttpRequest,
    signin: web::Data<SignIn>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, code, presented) = read_later_step(&req, &signin, payload, parse_code).await?;
    step_answer(
        signin.sms_code(id, code, &presented).await?,
        &signin.totp_issuer,
    )
}

pub async fn resend_sms(
    req: HttpRequest,
    signin: web::Data<SignIn>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, (), presented) = read_later_step(&req, &signin, payload, |_: NoFields| Ok(())).await?;
    let outcome = signin.resend_sms(id, &presented).await?;
    Ok(Envelope::for_wizard(&outcome.wizard, ()).respond())
}

#[derive(Deserialize)]
struct RestoreBody {
    /// Only at `login`: the address to send a reset code to.
    email: Option<String>,
    /// With `email`, while reCAPTCHA is on.
    #[serde(rename = "recaptchaResponse")]
    recaptcha_response: Option<String>,
}

/// What a wizard waiting for a reset code tells the client.
#[derive(Serialize)]
struct CodeSent {
    #[serde(rename = "codeExpiresAt")]
    code_expires_at: String,
}

/// `POST /password/restore`: at `login` with the `email` typed (the
/// answer is the same whether an account has it), at
/// `reset_password_email` without (and again at `reset_password_code`).
pub async fn restore_password(
    req: HttpRequest,
    signin: web::Data<SignIn>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, (email, captcha), presented) =
        read_later_step(&req, &signin, payload, |b: RestoreBody| {
            let email = b.email.as_deref().map(Email::parse).transpose();
            Ok((email.map_err(ApiError::invalid)?, b.recaptcha_response))
        })
        .await?;
    let outcome = signin
        .restore_password(id, email, captcha.as_deref(), &presented)
        .await?;
    let code_expires_at = match &outcome.wizard.step {
        Step::ResetCode { challenge, .. } => challenge.expires_at,
        _ => outcome.wizard.expires_at,
    };
    let data = CodeSent {
        code_expires_at: rfc3339(code_expires_at),
    };
    Ok(Envelope::for_wizard(&outcome.wizard, data).respond())
}

#[derive(Deserialize)]
struct ResetBody {
    code: String,
    password: SecretString,
    password_confirmation: SecretString,
}

/// `POST /password/reset`: the emailed code and the new password; the
/// answer is the `login` step, for signing in with it.
pub async fn reset_password(
    req: HttpRequest,
    signin: web::Data<SignIn>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, (code, password), presented) =
        read_later_step(&req, &signin, payload, |b: ResetBody| {
            let code = OtpCode::parse_reset(&b.code).map_err(ApiError::invalid)?;
            let (typed, again) = (
                b.password.expose_secret(),
                b.password_confirmation.expose_secret(),
            );
            if !bool::from(typed.as_bytes().ct_eq(again.as_bytes())) {
                return Err(ApiError::new(
                    ErrorKind::PasswordMismatch,
                    "password and password_confirmation differ",
                ));
            }
            let password = NewPassword::parse(b.password)
                .map_err(|e| ApiError::new(ErrorKind::InvalidPassword, e.0))?;
            Ok((code, password))
        })
        .await?;
    let outcome = signin
        .reset_password(id, code, password, &presented)
        .await?;
    Ok(Envelope::for_wizard(&outcome.wizard, login_data(&signin)).respond())
}

fn parse_code(body: CodeBody) -> Result<OtpCode, ApiError> {
    OtpCode::parse(&body.code).map_err(ApiError::invalid)
}

/// Reads a step after `login`: the wizard, the step's own input (`parse`d
/// from fields `B`), and what the client presented besides.
async fn read_later_step<B: DeserializeOwned, T>(
    req: &HttpRequest,
    signin: &SignIn,
    payload: web::Payload,
    parse: impl FnOnce(B) -> Result<T, ApiError>,
) -> Result<(WizardId, T, Presented), ApiError> {
    let mut body = StepBody::read(payload).await?;
    let wizard_key = wizard_key(req, body.id)?;
    let parsed = body
        .take_field::<String>("device_fingerprint")
        .and_then(|named| device(req, named))
        .and_then(|device| Ok((parse(body.take::<B>()?)?, device)));
    match parsed {
        Ok((input, device)) => Ok((
            body.id,
            input,
            Presented {
                wizard_key,
                device,
                allowance: allowance(req),
                client_ip: req
                    .app_data::<web::Data<IpLimiter>>()
                    .and_then(|limiter| limiter.client_ip(req)),
            },
        )),
        Err(e) => Err(in_context(signin, body.id, wizard_key.as_ref(), e).await),
    }
}

/// The client address's allowance, left by the limiter for the step's first round trip.
pub(super) fn allowance(req: &HttpRequest) -> Option<Arc<Allowance>> {
    req.extensions().get::<Arc<Allowance>>().cloned()
}

/// `X-Wizard-Key`, if sent. One that is not even well formed opens nothing:
/// the same answer as for a wrong key or an unknown uuid.
fn wizard_key(req: &HttpRequest, id: WizardId) -> Result<Option<WizardKey>, ApiError> {
    let Some(raw) = req.headers().get("X-Wizard-Key") else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .and_then(|raw| WizardKey::parse(raw).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::from(Failure {
                error: SignInError::NotFound,
                id: Some(id),
                wizard: None,
            })
        })
}

/// The device a later step names, in its body or an `X-Device-Fingerprint` header.
fn device(
    req: &HttpRequest,
    in_body: Option<String>,
) -> Result<Option<DeviceFingerprint>, ApiError> {
    let invalid =
        |message: &'static str| ApiError::new(ErrorKind::InvalidDeviceFingerprint, message);
    // A header that is not text is unusable, not absent.
    let in_header = req
        .headers()
        .get("X-Device-Fingerprint")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| invalid("X-Device-Fingerprint must be base64 text"))?;
    in_body
        .or(in_header)
        .map(|raw| DeviceFingerprint::parse(&raw))
        .transpose()
        .map_err(|e| invalid(e.0))
}

/// A malformed body still names the step its wizard is on (to whoever may open it).
async fn in_context(
    signin: &SignIn,
    id: WizardId,
    key: Option<&WizardKey>,
    error: ApiError,
) -> ApiError {
    error.about(id, signin.describe(id, key).await.as_ref())
}
