//! Getting one-time codes to people.

mod email;
mod sms;

pub use email::{EmailError, Letter, Mailer};
pub use sms::{DeliveryError, SmsGateway};
