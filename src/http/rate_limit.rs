//! Per-client-IP request limits (governor's GCRA), with the `X-RateLimit-*`
//! headers on every answer: one on `/api/v2/my/*`, which stops one address
//! from spraying many accounts long before the per-account lockout would
//! lock real users out (see the README's "Abuse resistance"), and one of its
//! own on the admin API, so its token cannot be guessed at line speed.

use super::admin::AdminError;
use super::client_ip::{TrustedProxies, counted_as};
use super::error::{ApiError, ErrorKind};
use crate::policy::LivePolicy;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpRequest, ResponseError, web};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

type Keyed =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

pub struct IpLimiter {
    per_minute: PerMinute,
    guards: Guarded,
    trusted_proxies: TrustedProxies,
    /// The limiter for the current per-minute limit, rebuilt when an admin changes it.
    current: RwLock<Option<(u32, Arc<Keyed>)>>,
}

/// The API a limiter guards, which decides the shape of its 429.
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
        guards: Guarded,
    },
}

impl IpLimiter {
    /// The limit on `/api/v2/my/*`, from the runtime settings.
    pub fn for_wizard(policy: Arc<LivePolicy>, trusted_proxies: TrustedProxies) -> Self {
        Self::new(
            Guarded::Wizard,
            PerMinute::Settings(policy),
            trusted_proxies,
        )
    }

    /// The admin API's own limit.
    pub fn for_admin(per_minute: u32, trusted_proxies: TrustedProxies) -> Self {
        Self::new(
            Guarded::Admin,
            PerMinute::Fixed(per_minute),
            trusted_proxies,
        )
    }

    fn new(guards: Guarded, per_minute: PerMinute, trusted_proxies: TrustedProxies) -> Self {
        Self {
            guards,
            per_minute,
            trusted_proxies,
            current: RwLock::new(None),
        }
    }

    fn limiter(&self) -> Option<(u32, Arc<Keyed>)> {
        let per_minute = NonZeroU32::new(match &self.per_minute {
            PerMinute::Settings(policy) => policy.get().ip_limit_per_minute,
            PerMinute::Fixed(per_minute) => *per_minute,
        })?;
        if let Some((limit, limiter)) = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && *limit == per_minute.get()
        {
            return Some((*limit, Arc::clone(limiter)));
        }
        // A minute's worth of requests may come as one burst, then one per 60/limit seconds.
        let limiter = Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute)).with_middleware());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) =
            Some((per_minute.get(), Arc::clone(&limiter)));
        Some((per_minute.get(), limiter))
    }

    fn check(&self, ip: IpAddr) -> Decision {
        let Some((limit, limiter)) = self.limiter() else {
            return Decision::Off;
        };
        let now = DefaultClock::default().now();
        match limiter.check_key(&counted_as(ip)) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let per_request = Duration::from_secs(60) / limit;
                Decision::Allowed {
                    limit,
                    remaining,
                    reset: per_request * (limit - remaining),
                }
            }
            Err(not_until) => Decision::Limited {
                limit,
                retry_after: not_until.wait_time_from(now),
                guards: self.guards,
            },
        }
    }

    /// Forgets addresses whose allowance is full again (bounded memory).
    pub fn forget_idle(&self) {
        if let Some((_, limiter)) = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            limiter.retain_recent();
        }
    }

    /// The client's address (see `client_ip`).
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.trusted_proxies.client_ip(req)
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
    let limiter = req.app_data::<web::Data<IpLimiter>>();
    let decision = match limiter.and_then(|l| Some((l, l.client_ip(req.request())?))) {
        Some((limiter, ip)) => limiter.check(ip),
        None => Decision::Off,
    };
    match decision {
        Decision::Off => Ok(next.call(req).await?.map_into_left_body()),
        Decision::Allowed {
            limit,
            remaining,
            reset,
        } => {
            let mut response = next.call(req).await?;
            set_headers(response.headers_mut(), limit, remaining, reset);
            Ok(response.map_into_left_body())
        }
        Decision::Limited {
            limit,
            retry_after,
            guards,
        } => {
            let error = ApiError {
                retry_after: Some(retry_after.as_millis().div_ceil(1000) as u64),
                ..ApiError::new(
                    ErrorKind::RateLimited,
                    "too many requests from this address; slow down",
                )
            };
            // Each API answers in its own shape.
            let mut response = match guards {
                Guarded::Wizard => error.error_response(),
                Guarded::Admin => AdminError::from(error).error_response(),
            };
            // As on every answer: when the whole allowance is back (one request after `retry_after`, the rest after).
            let full_again = retry_after + Duration::from_secs(60) / limit * (limit - 1);
            set_headers(response.headers_mut(), limit, 0, full_again);
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
