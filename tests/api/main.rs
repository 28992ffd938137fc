//! One integration-test binary: every test drives a real server over HTTP.

mod admin;
mod bad_input;
mod captcha;
mod cluster_events;
mod concurrency;
mod configuration;
mod email;
mod footprint;
mod helpers;
mod instances;
mod keys;
mod lockout;
mod model;
mod openapi;
mod rate_limit;
mod redis_faults;
mod redis_servers;
mod replay;
mod resend;
mod round_trips;
mod sessions;
mod signin;
mod spec;
mod store_conformance;
mod tokens;
mod wizard_key;
