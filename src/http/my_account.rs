//! A signed-in client's own account: who it is, its sessions, refresh and
//! sign-out. Every endpoint but refresh needs `Authorization: Bearer` with
//! an access token of a live session; no other way of sending one (such as
//! a `token` query parameter) is read (see docs/decisions.md).

use super::body::{fields_as, read_object, read_optional_object};
use super::envelope::{Envelope, rfc3339};
use super::error::{ApiError, ErrorKind, store_error};
use super::signin::{TfaProvider, TokenData, allowance, tfa_providers};
use crate::clock::Clock;
use crate::credentials::TokenPair;
use crate::domain::SessionId;
use crate::second_factors::SecondFactors;
use crate::sessions::{
    AuthError, Authenticated, Device, RefreshError, Session, Sessions, WithAccount,
};
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;

/// What these endpoints are built from (see `startup`).
pub struct MyAccount {
    pub sessions: Arc<Sessions>,
    pub factors: Arc<SecondFactors>,
    /// The issuer an enrolled authenticator app shows.
    pub totp_issuer: String,
    pub clock: Clock,
}

#[derive(Serialize)]
struct TokensData {
    #[serde(rename = "accessToken")]
    access_token: TokenData,
    #[serde(rename = "refreshToken")]
    refresh_token: TokenData,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MeData {
    id: String,
    email: String,
    phone: Option<String>,
    tfa_providers: Vec<TfaProvider>,
    created_at: String,
    session: SessionData,
}

/// A session as its user (or an admin) sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionData {
    id: SessionId,
    /// Whether it is the session of the request's own token (not in admin answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<bool>,
    created_at: String,
    last_active_at: String,
    expires_at: String,
    ip: Option<IpAddr>,
    device: Device,
}

#[derive(Serialize)]
pub(super) struct SessionsData {
    pub sessions: Vec<SessionData>,
}

#[derive(Serialize)]
pub(super) struct RevokedData {
    pub revoked: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    #[serde(rename = "refreshToken")]
    refresh_token: SecretString,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeAllBody {
    #[serde(rename = "keepCurrent", default)]
    keep_current: bool,
}

pub(super) fn session_data(session: &Session, current: Option<SessionId>) -> SessionData {
    SessionData {
        id: session.id,
        current: current.map(|current| session.id == current),
        created_at: rfc3339(session.created_at),
        last_active_at: rfc3339(session.last_active_at),
        expires_at: rfc3339(session.expires_at),
        ip: session.ip,
        device: session.device.clone(),
    }
}

impl MyAccount {
    /// The request's access token and its live session.
    pub(super) async fn authenticate(
        &self,
        req: &HttpRequest,
        with: WithAccount,
    ) -> Result<Authenticated, ApiError> {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let bearer = req
            .headers()
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::InvalidToken,
                    "an access token is required: Authorization: Bearer <token>",
                )
            })?;
        let allowance = allowance(req);
        self.sessions
            .authenticate(bearer, allowance.as_deref(), with, self.clock.now())
            .await
            .map_err(|e| match e {
                AuthError::Invalid(reason) => {
                    tracing::debug!(?reason, "access token refused");
                    ApiError::new(
                        ErrorKind::InvalidToken,
                        "the access token is not valid (expired, revoked or not ours); refresh or sign in again",
                    )
                }
                AuthError::RateLimited { retry_after } => rate_limited(retry_after),
                AuthError::Store(e) => store_error(&e),
            })
    }
}

pub(super) fn rate_limited(retry_after: std::time::Duration) -> ApiError {
    ApiError {
        retry_after: Some(retry_after.as_millis().div_ceil(1000) as u64),
        ..ApiError::new(
            ErrorKind::RateLimited,
            "too many requests from this address; slow down",
        )
    }
}

fn tokens_data(pair: TokenPair) -> TokensData {
    TokensData {
        access_token: pair.access.into(),
        refresh_token: pair.refresh.into(),
    }
}

pub async fn me(req: HttpRequest, my: web::Data<MyAccount>) -> Result<HttpResponse, ApiError> {
    let auth = my.authenticate(&req, WithAccount::Yes).await?;
    let user = auth.user.ok_or_else(|| {
        ApiError::new(
            ErrorKind::InvalidToken,
            "the account of this access token no longer exists",
        )
    })?;
    let data = MeData {
        id: user.id.to_string(),
        email: user.email.as_str().to_owned(),
        phone: user.phone.as_ref().map(|p| p.as_str().to_owned()),
        tfa_providers: tfa_providers(user.account().factors()),
        created_at: rfc3339(user.created_at),
        session: session_data(&auth.session, Some(auth.session.id)),
    };
    Ok(Envelope::signed_in(data).respond())
}

pub async fn sessions(
    req: HttpRequest,
    my: web::Data<MyAccount>,
) -> Result<HttpResponse, ApiError> {
    let auth = my.authenticate(&req, WithAccount::No).await?;
    let sessions = my
        .sessions
        .list(auth.session.user, my.clock.now())
        .await
        .map_err(|e| store_error(&e))?;
    let data = SessionsData {
        sessions: sessions
            .iter()
            .map(|s| session_data(s, Some(auth.session.id)))
            .collect(),
    };
    Ok(Envelope::signed_in(data).respond())
}

pub async fn end_session(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let auth = my.authenticate(&req, WithAccount::No).await?;
    let not_found = || {
        ApiError::new(
            ErrorKind::SessionNotFound,
            "you have no session with this id",
        )
    };
    // Another user's session id is looked up under this user: not found either.
    let id = SessionId::parse(&path).map_err(|_| not_found())?;
    let ended = my
        .sessions
        .end(auth.session.user, id)
        .await
        .map_err(|e| store_error(&e))?;
    if !ended {
        return Err(not_found());
    }
    Ok(Envelope::signed_in(RevokedData { revoked: 1 }).respond())
}

pub async fn end_all_sessions(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let auth = my.authenticate(&req, WithAccount::No).await?;
    let body: RevokeAllBody = fields_as(read_optional_object(payload).await?)
        .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e.message()))?;
    let keep = body.keep_current.then_some(auth.session.id);
    let revoked = my
        .sessions
        .end_all(auth.session.user, keep)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(Envelope::signed_in(RevokedData { revoked }).respond())
}

pub async fn sign_out(
    req: HttpRequest,
    my: web::Data<MyAccount>,
) -> Result<HttpResponse, ApiError> {
    let auth = my.authenticate(&req, WithAccount::No).await?;
    let ended = my
        .sessions
        .end(auth.session.user, auth.session.id)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(Envelope::signed_in(RevokedData {
        revoked: usize::from(ended),
    })
    .respond())
}

pub async fn refresh(
    req: HttpRequest,
    my: web::Data<MyAccount>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: RefreshBody = fields_as(read_object(payload).await?)
        .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e.message()))?;
    let allowance = allowance(&req);
    let pair = my
        .sessions
        .refresh(&body.refresh_token, allowance.as_deref(), my.clock.now())
        .await
        .map_err(|e| match e {
            RefreshError::Invalid => ApiError::new(ErrorKind::InvalidRefreshToken, e.to_string()),
            RefreshError::Conflict => ApiError::new(
                ErrorKind::ConcurrentRequest,
                "another request refreshed this session at the same time; use the tokens it got",
            ),
            RefreshError::Blocked { retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(ErrorKind::TooManyAttempts, e.to_string())
            },
            RefreshError::RateLimited { retry_after } => rate_limited(retry_after),
            RefreshError::Store(e) => store_error(&e),
            RefreshError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                ApiError::new(ErrorKind::Internal, "something went wrong on our side")
            }
        })?;
    Ok(Envelope::signed_in(tokens_data(pair)).respond())
}
