//! Parsed input: once a value has one of these types it is known to be well formed.

mod admin_token;
mod backup_code;
mod email;
mod fingerprint;
mod otp_code;
mod password;
mod phone;
mod wizard_id;
mod wizard_key;

pub use admin_token::AdminToken;
pub use backup_code::BackupCode;
pub use email::Email;
pub use fingerprint::DeviceFingerprint;
pub use otp_code::OtpCode;
pub use password::{NewPassword, Password};
pub use phone::PhoneNumber;
pub use wizard_id::{SessionId, UserId, WizardId};
pub use wizard_key::WizardKey;

/// Why a value was refused at the door; the message is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub &'static str);
