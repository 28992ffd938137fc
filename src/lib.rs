//! signin-wizard: a multi-step sign-in service whose attempts are state machines.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod allowance;
pub mod captcha;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod http;
pub mod lockout;
pub mod openapi;
pub mod policy;
pub mod replay;
pub mod second_factors;
pub mod sessions;
pub mod signin;
pub mod signing_keys;
pub mod spec;
pub mod startup;
pub mod store;
pub mod users;
pub mod wizard;
