//! Per-client-IP request limits (GCRA, kept in the store), with the `X-RateLimit-*`
//! headers on every answer: one on `/api/v2/my/*`, which stops one address
//! from spraying many accounts long before the per-account lockout would
//! lock real users out (see the README's "Abuse resistance"), and one of its
//! own on the admin API, so its token cannot be guessed at line speed.

use super::admin::AdminError;
use super::client_ip::{TrustedProxies, counted_as};
use super::error::{ApiError, ErrorKind, store_error};
use crate::allowance::Allowance;
use crate::policy::LivePolicy;
use crate::store::{Key, Op, Rate, Reply, Store, StoreError};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
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

/// What the limiter knows before asking the store.
enum Prepared {
    Off,
    /// Refused lately, and still waiting.
    Limited {
        limit: u32,
        retry_after: Duration,
    },
    /// To ask the store: by the handler, with its first round trip, or here.
    Ask {
        limit: u32,
        ip: IpAddr,
        allowance: Arc<Allowance>,
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

    fn prepare(&self, ip: IpAddr) -> Prepared {
        let limit = match &self.per_minute {
            PerMinute::Settings(policy) => policy.get().ip_limit_per_minute,
            PerMinute::Fixed(per_minute) => *per_minute,
        };
        if limit == 0 {
            return Prepared::Off;
        }
        let ip = counted_as(ip);
        let now = Instant::now();
        if let Some(until) = self.refused().get(&ip).filter(|until| **until > now) {
            return Prepared::Limited {
                limit,
                retry_after: *until - now,
            };
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
        Prepared::Ask {
            limit,
            ip,
            allowance: Arc::new(Allowance::new(op)),
        }
    }

    /// Sends the allowance's op, unless a handler sent it already.
    async fn ask(&self, allowance: &Allowance) -> Result<Rate, StoreError> {
        if let Some(verdict) = allowance.verdict() {
            return Ok(verdict);
        }
        match self.store.run(&[&[allowance.op().clone()]]).await?.pop() {
            Some(Reply::Rate(rate)) => {
                allowance.settle(rate);
                Ok(rate)
            }
            other => Err(StoreError::Corrupt(anyhow::anyhow!(
                "not a rate check: {}",
                other.map_or("nothing", |r| r.kind())
            ))),
        }
    }

    /// The decision on what the store answered, remembering a refusal.
    fn decide(&self, limit: u32, ip: IpAddr, rate: Rate) -> Decision {
        match rate {
            Rate::Allowed { remaining, full_in } => Decision::Allowed {
                limit,
                remaining,
                reset: full_in,
            },
            Rate::Refused { retry_in } => {
                self.refused().insert(ip, Instant::now() + retry_in);
                Decision::Limited {
                    limit,
                    retry_after: retry_in,
                }
            }
        }
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

/// The 429 for an address over its allowance, with the headers every answer carries.
fn limited(limiter: &IpLimiter, limit: u32, retry_after: Duration) -> HttpResponse {
    let error = ApiError {
        retry_after: Some(retry_after.as_millis().div_ceil(1000) as u64),
        ..ApiError::new(
            ErrorKind::RateLimited,
            "too many requests from this address; slow down",
        )
    };
    let mut response = limiter.answer(error);
    set_limited_headers(response.headers_mut(), limit, retry_after);
    response
}

/// As on every answer: when the whole allowance is back (one request after `retry_after`, the rest after).
fn set_limited_headers(headers: &mut HeaderMap, limit: u32, retry_after: Duration) {
    let full_again = retry_after + Duration::from_secs(60) / limit * (limit - 1);
    set_headers(headers, limit, 0, full_again);
}

/// The middleware: 429 `rate_limited` past the limit, headers always. On
/// the wizard's API the handler sends the allowance's op with its first
/// store round trip (see `allowance`) and answers 429 itself; a request
/// that never reached the store (a malformed body) is counted here after
/// it, and its answer replaced if it was over. The admin API asks first:
/// nothing of it runs past its limit.
pub async fn limit_by_ip(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let Some(limiter) = req.app_data::<web::Data<IpLimiter>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let prepared = match limiter.client_ip(req.request()) {
        Some(ip) => limiter.prepare(ip),
        None => Prepared::Off,
    };
    let (limit, ip, allowance) = match prepared {
        Prepared::Off => return Ok(next.call(req).await?.map_into_left_body()),
        Prepared::Limited { limit, retry_after } => {
            let response = limited(&limiter, limit, retry_after);
            return Ok(req.into_response(response).map_into_right_body());
        }
        Prepared::Ask {
            limit,
            ip,
            allowance,
        } => (limit, ip, allowance),
    };
    if let Guarded::Admin = limiter.guards {
        let decision = limiter.ask(&allowance).await;
        return Ok(match decision.map(|rate| limiter.decide(limit, ip, rate)) {
            Ok(Decision::Allowed {
                limit,
                remaining,
                reset,
            }) => {
                let mut response = next.call(req).await?;
                set_headers(response.headers_mut(), limit, remaining, reset);
                response.map_into_left_body()
            }
            Ok(Decision::Limited { limit, retry_after }) => req
                .into_response(limited(&limiter, limit, retry_after))
                .map_into_right_body(),
            // The allowance cannot be read: refuse rather than serve unlimited.
            Err(e) => req
                .into_response(limiter.answer(store_error(&e)))
                .map_into_right_body(),
        });
    }
    req.extensions_mut().insert(Arc::clone(&allowance));
    let mut response = next.call(req).await?;
    let answered_by_handler = allowance.verdict().is_some();
    let decision = limiter.ask(&allowance).await;
    Ok(match decision.map(|rate| limiter.decide(limit, ip, rate)) {
        Ok(Decision::Allowed {
            limit,
            remaining,
            reset,
        }) => {
            set_headers(response.headers_mut(), limit, remaining, reset);
            response.map_into_left_body()
        }
        Ok(Decision::Limited { limit, retry_after }) if answered_by_handler => {
            set_limited_headers(response.headers_mut(), limit, retry_after);
            response.map_into_left_body()
        }
        Ok(Decision::Limited { limit, retry_after }) => response
            .into_response(limited(&limiter, limit, retry_after))
            .map_into_right_body(),
        Err(e) => response
            .into_response(limiter.answer(store_error(&e)))
            .map_into_right_body(),
    })
}
