//! Getting one-time codes to people.

mod sms;

pub use sms::{DeliveryError, SmsGateway};
