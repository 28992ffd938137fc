//! Operator API for user accounts, behind a bearer token.

use super::body::{BodyError, fields_as, read_object, read_optional_object};
use super::envelope::rfc3339;
use super::error::{ApiError, ErrorKind, store_error};
use super::my_account::{RevokedData, SessionsData, session_data};
use crate::clock::Clock;
use crate::credentials::{
    HashError, Keyring, PasswordHasher, SigningAlgorithm, TokenIssuer, TotpSecret, TotpVault,
};
use crate::domain::{AdminToken, Email, NewPassword, ParseError, PhoneNumber, SessionId, UserId};
use crate::policy::{InvalidSetting, LivePolicy, PolicyPatch, UpdateError};
use crate::sessions::Sessions;
use crate::signing_keys::{RotateError, SigningKeys};
use crate::store::Records;
use crate::store::{Store, UserWriteError};
use crate::users::{self, AccountChange, NewUser, RegisterError, User};
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;

pub struct AdminApi {
    token: AdminToken,
    store: Arc<dyn Store>,
    passwords: Arc<PasswordHasher>,
    policy: Arc<LivePolicy>,
    /// Whether reCAPTCHA keys are configured (so it may be switched on).
    recaptcha_configured: bool,
    /// Issuer shown by authenticator apps next to the account.
    totp_issuer: String,
    /// Seals the TOTP secrets an operator sets.
    totp: TotpVault,
    sessions: Arc<Sessions>,
    clock: Clock,
    signing_keys: Arc<SigningKeys>,
    tokens: Arc<TokenIssuer>,
}

/// What the admin API is built from (see `startup`).
pub struct AdminParts {
    pub store: Arc<dyn Store>,
    pub passwords: Arc<PasswordHasher>,
    pub policy: Arc<LivePolicy>,
    pub recaptcha_configured: bool,
    pub totp_issuer: String,
    pub totp: TotpVault,
    pub sessions: Arc<Sessions>,
    pub clock: Clock,
    pub signing_keys: Arc<SigningKeys>,
    pub tokens: Arc<TokenIssuer>,
}

impl AdminApi {
    pub fn new(token: &AdminToken, parts: AdminParts) -> Self {
        Self {
            token: token.clone(),
            store: parts.store,
            passwords: parts.passwords,
            policy: parts.policy,
            recaptcha_configured: parts.recaptcha_configured,
            totp_issuer: parts.totp_issuer,
            totp: parts.totp,
            sessions: parts.sessions,
            clock: parts.clock,
            signing_keys: parts.signing_keys,
            tokens: parts.tokens,
        }
    }

    /// What a user view shows of a TOTP secret just set: its enrolment URI.
    fn enrolled<'a>(&'a self, secret: Option<&'a TotpSecret>) -> Option<(&'a str, &'a TotpSecret)> {
        secret.map(|secret| (self.totp_issuer.as_str(), secret))
    }

    /// Ends every session of a user whose account changed or went away.
    async fn end_sessions(&self, user: UserId) -> Result<usize, AdminError> {
        let ended = self
            .sessions
            .end_all(user, None)
            .await
            .map_err(|e| AdminError(store_error(&e)))?;
        tracing::info!(user_id = %user, ended, "sessions ended");
        Ok(ended)
    }

    fn authorize(&self, req: &HttpRequest) -> Result<(), AdminError> {
        // The scheme is case-insensitive (RFC 9110 §11.1); an empty token never matches.
        let presented = req
            .headers()
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        if self.token.admits(presented) {
            Ok(())
        } else {
            Err(AdminError::new(
                ErrorKind::Unauthorized,
                "a valid admin bearer token is required",
            ))
        }
    }

    async fn existing(&self, id: &str) -> Result<User, AdminError> {
        let id = UserId::parse(id).map_err(|_| not_found())?;
        self.store
            .user(id)
            .await
            .map_err(|e| AdminError(store_error(&e)))?
            .ok_or_else(not_found)
    }
}

/// Admin answers are plain JSON: `{"error": {"code", "message"}}` on failure.
#[derive(Debug)]
pub struct AdminError(ApiError);

impl AdminError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(ApiError::new(kind, message))
    }

    fn field(e: ParseError) -> Self {
        Self::new(ErrorKind::InvalidField, e.0)
    }

    /// Ours, never the operator's: logged in full, answered without detail.
    fn internal(e: anyhow::Error) -> Self {
        tracing::error!(error = ?e, "admin request failed");
        Self::new(ErrorKind::Internal, "something went wrong on our side")
    }
}

impl From<ApiError> for AdminError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<UserWriteError> for AdminError {
    fn from(e: UserWriteError) -> Self {
        match e {
            UserWriteError::EmailTaken => {
                Self::new(ErrorKind::EmailTaken, "another user has this email")
            }
            UserWriteError::NotFound => not_found(),
            UserWriteError::Changed => Self::new(
                ErrorKind::ConcurrentRequest,
                "the user was changed by another request meanwhile; read it again and retry",
            ),
            UserWriteError::Store(e) => Self(store_error(&e)),
        }
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl actix_web::ResponseError for AdminError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.0.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut error =
            serde_json::json!({ "code": self.0.kind.code(), "message": self.0.message });
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.0.retry_after {
            error["retry_after"] = secs.into();
            response.insert_header((actix_web::http::header::RETRY_AFTER, secs));
        }
        response.json(serde_json::json!({ "error": error }))
    }
}

fn not_found() -> AdminError {
    AdminError::new(ErrorKind::UserNotFound, "no user has this id")
}

fn hash_error(e: HashError) -> AdminError {
    match e {
        HashError::Overloaded => {
            AdminError::new(ErrorKind::Overloaded, "the service is busy; retry shortly")
        }
        HashError::Internal(e) => AdminError::internal(e.context("password hashing failed")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    email: String,
    password: SecretString,
    totp_secret: Option<String>,
    #[serde(default)]
    generate_totp: bool,
    phone: Option<String>,
    #[serde(default)]
    force_password_reset: bool,
    #[serde(default)]
    second_factor_required: bool,
}

async fn parse<T: serde::de::DeserializeOwned>(payload: web::Payload) -> Result<T, AdminError> {
    parse_wording(payload, |_, message| message).await
}

/// A body that is not the expected shape is 400; a field whose value is of
/// the wrong type is 422 naming it, like any other unacceptable value
/// (`word` may say it as the field's own rule).
async fn parse_wording<T: serde::de::DeserializeOwned>(
    payload: web::Payload,
    word: impl FnOnce(&str, String) -> String,
) -> Result<T, AdminError> {
    fields_as(read_object(payload).await?).map_err(|e| match e {
        BodyError::Shape(message) => AdminError::new(ErrorKind::InvalidRequest, message),
        BodyError::Field { field, message } => {
            AdminError::new(ErrorKind::InvalidField, word(&field, message))
        }
    })
}

fn totp_from(secret: Option<String>, generate: bool) -> Result<Option<TotpSecret>, AdminError> {
    match (secret, generate) {
        (Some(_), true) => Err(AdminError::new(
            ErrorKind::InvalidField,
            "give totp_secret or generate_totp, not both",
        )),
        (Some(raw), false) => TotpSecret::parse(&raw).map(Some).map_err(AdminError::field),
        (None, generate) => Ok(generate.then(TotpSecret::generate)),
    }
}

pub async fn create_user(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    payload: web::Payload,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    let body: CreateUser = parse(payload).await?;
    let totp_secret = totp_from(body.totp_secret, body.generate_totp)?;
    let new = NewUser {
        email: Email::parse(&body.email).map_err(AdminError::field)?,
        password: NewPassword::parse(body.password).map_err(AdminError::field)?,
        totp_secret: totp_secret.clone(),
        phone: body
            .phone
            .as_deref()
            .map(PhoneNumber::parse)
            .transpose()
            .map_err(AdminError::field)?,
        force_password_reset: body.force_password_reset,
        second_factor_required: body.second_factor_required,
    };
    let user = users::register(admin.store.as_ref(), &admin.passwords, &admin.totp, new)
        .await
        .map_err(|e| match e {
            RegisterError::Hash(e) => hash_error(e),
            RegisterError::Write(e) => e.into(),
            RegisterError::Seal(e) => AdminError::internal(e),
        })?;
    Ok(HttpResponse::Created().json(user.view(admin.enrolled(totp_secret.as_ref()))))
}

pub async fn get_user(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    let user = admin.existing(&id).await?;
    Ok(HttpResponse::Ok().json(user.view(None)))
}

/// `null` clears a field; a missing field leaves it as it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    email: Option<String>,
    password: Option<SecretString>,
    #[serde(default, deserialize_with = "present")]
    totp_secret: Option<Option<String>>,
    #[serde(default)]
    generate_totp: bool,
    #[serde(default, deserialize_with = "present")]
    phone: Option<Option<String>>,
    force_password_reset: Option<bool>,
    second_factor_required: Option<bool>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub async fn update_user(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    let body: UpdateUser = parse(payload).await?;
    let user = admin.existing(&id).await?;
    let totp_changed = body.totp_secret.is_some() || body.generate_totp;
    let totp_secret = totp_changed
        .then(|| totp_from(body.totp_secret.flatten(), body.generate_totp))
        .transpose()?;
    let password_hash = match body.password {
        Some(raw) => {
            let password = NewPassword::parse(raw).map_err(AdminError::field)?;
            Some(admin.passwords.hash(&password).await.map_err(hash_error)?)
        }
        None => None,
    };
    let change = AccountChange {
        email: body
            .email
            .map(|raw| Email::parse(&raw))
            .transpose()
            .map_err(AdminError::field)?,
        password_hash,
        totp_secret: totp_secret
            .as_ref()
            .map(|secret| {
                secret
                    .as_ref()
                    .map(|s| admin.totp.seal(user.id, s.clone()))
                    .transpose()
            })
            .transpose()
            .map_err(AdminError::internal)?,
        phone: body
            .phone
            .map(|phone| phone.as_deref().map(PhoneNumber::parse).transpose())
            .transpose()
            .map_err(AdminError::field)?,
        force_password_reset: body.force_password_reset,
        second_factor_required: body.second_factor_required,
        ..AccountChange::default()
    };
    let read_at = user.credentials_version;
    let user = user.changed(change);
    admin.store.update_user(read_at, &user).await?;
    tracing::info!(user_id = %user.id, "user updated");
    // Every change moves the credentials version, which sessions signed in
    // before it can no longer refresh with: end them now, so that their
    // access tokens stop working here too.
    if user.credentials_version != read_at {
        admin.end_sessions(user.id).await?;
    }
    Ok(HttpResponse::Ok().json(user.view(admin.enrolled(totp_secret.flatten().as_ref()))))
}

pub async fn delete_user(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    // Sessions before (if the delete then fails, the user is signed out
    // rather than left with sessions nobody can reach through the admin API)
    // and after (a sign-in that completed in between); by id, so that a
    // retry after a failure ends them even once the user is gone.
    let id = UserId::parse(&id).map_err(|_| not_found())?;
    admin.end_sessions(id).await?;
    if admin
        .store
        .delete_user(id)
        .await
        .map_err(|e| AdminError(store_error(&e)))?
    {
        tracing::info!(user_id = %id, "user deleted");
        admin.end_sessions(id).await?;
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found())
    }
}

pub async fn unlock_user(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    let user = admin.existing(&id).await?;
    admin
        .store
        .clear_attempts(&user.email)
        .await
        .map_err(|e| AdminError(store_error(&e)))?;
    tracing::info!(user_id = %user.id, "user unlocked");
    Ok(HttpResponse::NoContent().finish())
}

pub async fn get_settings(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    Ok(HttpResponse::Ok().json(admin.policy.get()))
}

/// The store this instance uses, and the round trips it made to it so far:
/// what a step costs, for operators and the load tool (not public, since
/// exact counts would tell an onlooker what other requests did).
pub async fn store_stats(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "backend": admin.store.backend(),
        "round_trips": admin.store.round_trips(),
    })))
}

pub async fn put_settings(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    payload: web::Payload,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    // A value of the wrong type gets the answer an out-of-range one gets.
    let patch: PolicyPatch = parse_wording(payload, |field, message| {
        InvalidSetting::for_field(field).map_or(message, |invalid| invalid.message)
    })
    .await?;
    let policy = admin
        .policy
        .update(|current| current.patched(patch, admin.recaptcha_configured))
        .await
        .map_err(|e| match e {
            UpdateError::Invalid(e) => AdminError::new(ErrorKind::InvalidField, e.message),
            UpdateError::Store(e) => AdminError(store_error(&e)),
            UpdateError::Contended => AdminError::new(ErrorKind::ConcurrentRequest, e.to_string()),
        })?;
    tracing::info!(?policy, "settings changed");
    Ok(HttpResponse::Ok().json(policy))
}

pub async fn list_sessions(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    let user = admin.existing(&id).await?;
    let sessions = admin
        .sessions
        .list(user.id, admin.clock.now())
        .await
        .map_err(|e| AdminError(store_error(&e)))?;
    Ok(HttpResponse::Ok().json(SessionsData {
        sessions: sessions.iter().map(|s| session_data(s, None)).collect(),
    }))
}

pub async fn end_user_session(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    let (user, session) = path.into_inner();
    let user = admin.existing(&user).await?;
    let not_found = || {
        AdminError::new(
            ErrorKind::SessionNotFound,
            "this user has no session with this id",
        )
    };
    let session = SessionId::parse(&session).map_err(|_| not_found())?;
    let ended = admin
        .sessions
        .end(user.id, session)
        .await
        .map_err(|e| AdminError(store_error(&e)))?;
    if !ended {
        return Err(not_found());
    }
    tracing::info!(user_id = %user.id, session_id = %session, "session ended by an admin");
    Ok(HttpResponse::NoContent().finish())
}

pub async fn end_user_sessions(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    let user = admin.existing(&id).await?;
    let revoked = admin.end_sessions(user.id).await?;
    Ok(HttpResponse::Ok().json(RevokedData { revoked }))
}

/// A signing key as the admin API shows it (never its private half).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyView {
    kid: String,
    algorithm: SigningAlgorithm,
    created_at: String,
    signs_from: String,
    /// Whether it signs now (else it is published ahead, or kept for the
    /// tokens it signed until they expire).
    signing: bool,
}

#[derive(Serialize)]
struct KeysView {
    keys: Vec<KeyView>,
}

impl AdminApi {
    /// The keys of `keyring` published now.
    fn keys_view(&self, keyring: &Keyring) -> Result<KeysView, AdminError> {
        let keys = keyring
            .needed(self.clock.now(), self.tokens.keep_for())
            .map(|state| {
                let signer = state.key.signer()?;
                Ok(KeyView {
                    kid: signer.kid().to_owned(),
                    algorithm: state.key.algorithm,
                    created_at: rfc3339(state.key.created_at),
                    signs_from: rfc3339(state.key.signs_from),
                    signing: state.signing,
                })
            })
            .collect::<anyhow::Result<_>>()
            .map_err(|e| AdminError::internal(e.context("a loaded signing key does not parse")))?;
        Ok(KeysView { keys })
    }
}

pub async fn list_keys(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    Ok(HttpResponse::Ok().json(admin.keys_view(&admin.tokens.keyring())?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotate {
    algorithm: Option<SigningAlgorithm>,
}

pub async fn rotate_keys(
    req: HttpRequest,
    admin: web::Data<AdminApi>,
    payload: web::Payload,
) -> Result<HttpResponse, AdminError> {
    admin.authorize(&req)?;
    let body: Rotate = fields_as(read_optional_object(payload).await?).map_err(|e| match e {
        BodyError::Shape(message) => AdminError::new(ErrorKind::InvalidRequest, message),
        BodyError::Field { message, .. } => AdminError::new(ErrorKind::InvalidField, message),
    })?;
    let keyring = admin
        .signing_keys
        .rotate(body.algorithm, admin.tokens.keep_for())
        .await
        .map_err(|e| match e {
            RotateError::Pinned => AdminError::new(ErrorKind::KeysPinned, e.to_string()),
            RotateError::Busy => AdminError::new(ErrorKind::ConcurrentRequest, e.to_string()),
            RotateError::Store(e) => AdminError(store_error(&e)),
            RotateError::Internal(e) => {
                AdminError::internal(e.context("rotating the signing key failed"))
            }
        })?;
    // This instance at once; the others within seconds.
    if let Err(e) = admin.signing_keys.reload(&admin.tokens).await {
        tracing::warn!(error = %e, "could not reload the keyring after rotating it");
    }
    Ok(HttpResponse::Ok().json(admin.keys_view(&keyring)?))
}
