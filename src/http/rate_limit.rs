//! Per-client-IP request limits (GCRA, kept in the store), with the `X-RateLimit-*`
//! headers on every answer: one on `/api/v2/my/*`, which stops one address
//! from spraying many accounts long before the per-account lockout would
//! lock real users out (see the README's "Abuse resistance"), and one of its
//! own on the admin API, so its token cannot be guessed at line speed.

use super::admin::AdminError;
use super::client_ip::{TrustedProxies, counted_as};
use super::error::{ApiError, ErrorKind, store_error};
use crate::policy::LivePolicy;
use crate::store::{Key, Op, Rate, Reply, Store, StoreError};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpRequest, ResponseError, web};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A per-address allowance kept in the store (GCRA, one atomic call): on
/// Redis every instance draws on the same allowance, so N instances allow
/// the configured rate in total, not N times it; on the embedded store it
/// is in process.
pub struct IpLimiter {
    per_minute: PerMinute,
    guards: Guarded,
    trusted_proxies: TrustedProxies,
    store: Arc<dyn Store>,
    /// Addresses refused lately, until they may try again: a flood from one
    /// address is answered here, without a store round trip per request.
    refused: Mutex<HashMap<IpAddr, Instant>>,
}

/// The API a limiter guards, which decides the shape of its 429 and names its allowances.
#[derive(Clone, Copy)]
enum Guarded {
    Wizard,
    Admin,
}

/// Where a limiter's requests-per-minute come from (0 turns it off).
enum PerMinute {
    /// The wizard's: the runtime settings, which an admin may change.
    Settings(Arc<LivePolicy>),
    /// The admin API's: fixed at start-up, so the API cannot lift its own limit.
    Fixed(u32),
}

enum Decision {
    Off,
    Allowed {
        limit: u32,
        remaining: u32,
        reset: Duration,
    },
    Limited {
        limit: u32,
        retry_after: Duration,
    },
}

impl IpLimiter {
    /// The limit on `/api/v2/my/*`, from the runtime settings.
    pub fn for_wizard(
        policy: Arc<LivePolicy>,
        trusted_proxies: TrustedProxies,
        store: Arc<dyn Store>,
    ) -> Self {
        Self::new(
            Guarded::Wizard,
            PerMinute::Settings(policy),
            trusted_proxies,
            store,
        )
    }

    /// The admin API's own limit.
    pub fn for_admin(
        per_minute: u32,
        trusted_proxies: TrustedProxies,
        store: Arc<dyn Store>,
    ) -> Self {
        Self::new(
            Guarded::Admin,
            PerMinute::Fixed(per_minute),
            trusted_proxies,
            store,
        )
    }

    fn new(
        guards: Guarded,
        per_minute: PerMinute,
        trusted_proxies: TrustedProxies,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            guards,
            per_minute,
            trusted_proxies,
            store,
            refused: Mutex::new(HashMap::new()),
        }
    }

    fn refused(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn check(&self, ip: IpAddr) -> Result<Decision, StoreError> {
        let limit = match &self.per_minute {
            PerMinute::Settings(policy) => policy.get().ip_limit_per_minute,
            PerMinute::Fixed(per_minute) => *per_minute,
        };
        if limit == 0 {
            return Ok(Decision::Off);
        }
        let ip = counted_as(ip);
        let now = Instant::now();
        if let Some(until) = self.refused().get(&ip).filter(|until| **until > now) {
            return Ok(Decision::Limited {
                limit,
                retry_after: *until - now,
            });
        }
        let scope = match self.guards {
            Guarded::Wizard => "wizard",
            Guarded::Admin => "admin",
        };
        // A minute's worth of requests may come as one burst, then one per 60/limit seconds.
        let op = Op::Rate {
            key: Key::Allowance(scope, ip),
            now: chrono::Utc::now(),
            interval: Duration::from_secs(60) / limit,
            burst: limit,
        };
        Ok(match self.store.run(&[&[op]]).await?.pop() {
            Some(Reply::Rate(Rate::Allowed { remaining, full_in })) => Decision::Allowed {
                limit,
                remaining,
                reset: full_in,
            },
            Some(Reply::Rate(Rate::Refused { retry_in })) => {
                self.refused().insert(ip, now + retry_in);
                Decision::Limited {
                    limit,
                    retry_after: retry_in,
                }
            }
            other => {
                return Err(StoreError::Corrupt(anyhow::anyhow!(
                    "not a rate check: {other:?}"
                )));
            }
        })
    }

    /// Forgets refusals that are over (bounded memory).
    pub fn forget_idle(&self) {
        let now = Instant::now();
        self.refused().retain(|_, until| *until > now);
    }

    /// The client's address (see `client_ip`).
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.trusted_proxies.client_ip(req)
    }

    /// An error in this API's shape.
    fn answer(&self, error: ApiError) -> actix_web::HttpResponse {
        match self.guards {
            Guarded::Wizard => error.error_response(),
            Guarded::Admin => AdminError::from(error).error_response(),
        }
    }
}

fn seconds(d: Duration) -> HeaderValue {
    HeaderValue::from(d.as_millis().div_ceil(1000) as u64)
}

fn set_headers(headers: &mut HeaderMap, limit: u32, remaining: u32, reset: Duration) {
    headers.insert(
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderValue::from(limit),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderValue::from(remaining),
    );
    headers.insert(HeaderName::from_static("x-ratelimit-reset"), seconds(reset));
}

/// The middleware: 429 `rate_limited` past the limit, headers always.
pub async fn limit_by_ip(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let Some(limiter) = req.app_data::<web::Data<IpLimiter>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let decision = match limiter.client_ip(req.request()) {
        Some(ip) => limiter.check(ip).await,
        None => Ok(Decision::Off),
    };
    match decision {
        Ok(Decision::Off) => Ok(next.call(req).await?.map_into_left_body()),
        Ok(Decision::Allowed {
            limit,
            remaining,
            reset,
        }) => {
            let mut response = next.call(req).await?;
            set_headers(response.headers_mut(), limit, remaining, reset);
            Ok(response.map_into_left_body())
        }
        Ok(Decision::Limited { limit, retry_after }) => {
            let error = ApiError {
                retry_after: Some(retry_after.as_millis().div_ceil(1000) as u64),
                ..ApiError::new(
                    ErrorKind::RateLimited,
                    "too many requests from this address; slow down",
                )
            };
            let mut response = limiter.answer(error);
            // As on every answer: when the whole allowance is back (one request after `retry_after`, the rest after).
            let full_again = retry_after + Duration::from_secs(60) / limit * (limit - 1);
            set_headers(response.headers_mut(), limit, 0, full_again);
            Ok(req.into_response(response).map_into_right_body())
        }
        // The allowance cannot be read: refuse rather than serve unlimited.
        Err(e) => {
            let response = limiter.answer(store_error(&e));
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
