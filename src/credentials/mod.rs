//! Secrets and the checks made with them: password hashes, TOTP, SMS code
//! digests and signed tokens.

mod keyring;
mod one_time_code;
mod password;
pub mod qr;
mod sealing;
mod signing;
mod tokens;
mod totp;

pub use keyring::{KeyState, Keyring, SigningKey};
pub use one_time_code::{BACKUP_CODES, OneTimeCodes, StoredBackupCodes};
pub use password::{HashError, PasswordHash, PasswordHasher, PasswordPolicy};
pub use sealing::{Kek, Sealed};
pub use signing::{Signer, SigningAlgorithm};
pub use tokens::{
    AccessClaims, IssuedToken, LEEWAY, TokenIssuer, TokenPair, TokenRejection, TokenSettings,
    TokenUse,
};
pub use totp::{StoredTotp, TotpSecret, TotpVault};
