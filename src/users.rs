//! User accounts as the sign-in wizard sees them.

use crate::credentials::{
    HashError, PasswordHash, PasswordHasher, StoredBackupCodes, StoredTotp, TotpSecret, TotpVault,
};
use crate::domain::{Email, NewPassword, PhoneNumber, UserId};
use crate::store::Records;
use crate::store::{Store, UserWriteError};
use crate::wizard::Account;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub password_hash: PasswordHash,
    /// Authenticator-app secret, when the user enrolled one (sealed with
    /// the operator's key-encryption key when there is one).
    pub totp_secret: Option<StoredTotp>,
    /// Where SMS codes go, when the user has a phone.
    pub phone: Option<PhoneNumber>,
    /// Single-use codes that stand in for the other factors (see
    /// `credentials::StoredBackupCodes`).
    #[serde(default)]
    pub backup_codes: Option<StoredBackupCodes>,
    /// Set by an admin: the next sign-in must reset the password first.
    pub force_password_reset: bool,
    /// Set by an admin: this account must have a second factor, whatever
    /// the settings say.
    #[serde(default)]
    pub second_factor_required: bool,
    pub created_at: DateTime<Utc>,
    /// Bumped by every change to the account, so that sign-ins begun before
    /// it start over (see `wizard::BoundUser`); writes compare-and-set on it.
    #[serde(default)]
    pub credentials_version: u64,
}

impl User {
    /// What the wizard needs to know once the password has been accepted.
    pub fn account(&self) -> Account {
        Account {
            id: self.id,
            version: self.credentials_version,
            totp: self.totp_secret.is_some(),
            phone: self.phone.clone(),
            backup_codes: self.backup_codes.is_some(),
            must_reset_password: self.force_password_reset,
            second_factor_required: self.second_factor_required,
        }
    }

    /// The account after an operator's `change`, at the next version if the
    /// change names anything (setting a field to its current value counts:
    /// a change is a change, and secrets are not compared).
    pub fn changed(mut self, change: AccountChange) -> User {
        let AccountChange {
            email,
            password_hash,
            totp_secret,
            phone,
            backup_codes,
            force_password_reset,
            second_factor_required,
        } = change;
        let named = [
            set(&mut self.email, email),
            set(&mut self.password_hash, password_hash),
            set(&mut self.totp_secret, totp_secret),
            set(&mut self.phone, phone),
            set(&mut self.backup_codes, backup_codes),
            set(&mut self.force_password_reset, force_password_reset),
            set(&mut self.second_factor_required, second_factor_required),
        ];
        // Backup codes stand in for another factor: without one, they go too.
        if self.totp_secret.is_none() && self.phone.is_none() {
            self.backup_codes = None;
        }
        if named.contains(&true) {
            self.credentials_version += 1;
        }
        self
    }
}

/// Sets `field` to `value` if there is one; whether there was.
fn set<T>(field: &mut T, value: Option<T>) -> bool {
    value.map(|value| *field = value).is_some()
}

/// An operator's change to an account, already parsed: `None` leaves a
/// field as it is; `Some(None)` clears an optional one.
#[derive(Debug, Default)]
pub struct AccountChange {
    pub email: Option<Email>,
    pub password_hash: Option<PasswordHash>,
    pub totp_secret: Option<Option<StoredTotp>>,
    pub phone: Option<Option<PhoneNumber>>,
    pub backup_codes: Option<Option<StoredBackupCodes>>,
    pub force_password_reset: Option<bool>,
    pub second_factor_required: Option<bool>,
}

/// What an operator supplies to create an account, already parsed.
#[derive(Debug)]
pub struct NewUser {
    pub email: Email,
    pub password: NewPassword,
    pub totp_secret: Option<TotpSecret>,
    pub phone: Option<PhoneNumber>,
    pub force_password_reset: bool,
    pub second_factor_required: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Write(#[from] UserWriteError),
    #[error(transparent)]
    Seal(#[from] anyhow::Error),
}

/// Hashes the password, seals the TOTP secret and stores the account (used
/// by the admin API, the CLI and the demo).
pub async fn register(
    store: &dyn Store,
    passwords: &PasswordHasher,
    vault: &TotpVault,
    new: NewUser,
) -> Result<User, RegisterError> {
    let id = UserId::random();
    let user = User {
        id,
        password_hash: passwords.hash(&new.password).await?,
        email: new.email,
        totp_secret: new
            .totp_secret
            .map(|secret| vault.seal(id, secret))
            .transpose()?,
        phone: new.phone,
        backup_codes: None,
        force_password_reset: new.force_password_reset,
        second_factor_required: new.second_factor_required,
        created_at: Utc::now(),
        credentials_version: 1,
    };
    store.insert_user(&user).await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok(user)
}

/// A user as operators see it: never the password hash or the TOTP secret,
/// except inside the `otpauth://` URI of the answer that set the secret.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserView {
    pub id: UserId,
    pub email: Email,
    pub totp_enabled: bool,
    pub phone: Option<PhoneNumber>,
    pub force_password_reset: bool,
    #[serde(default)]
    pub second_factor_required: bool,
    /// Whether the account holds backup codes (how many are left, its
    /// owner sees in self-service).
    #[serde(default)]
    pub backup_codes: bool,
    /// RFC 3339, whole seconds.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otpauth_uri: Option<String>,
    /// `otpauth_uri` as a QR code, a PNG `data:` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_code: Option<String>,
}

impl User {
    /// `enrolled`: the issuer and the secret just set, to show its enrolment URI.
    pub fn view(&self, enrolled: Option<(&str, &TotpSecret)>) -> UserView {
        let otpauth_uri = enrolled
            .and_then(|(issuer, secret)| secret.provisioning_uri(issuer, self.email.as_str()));
        UserView {
            id: self.id,
            email: self.email.clone(),
            totp_enabled: self.totp_secret.is_some(),
            phone: self.phone.clone(),
            force_password_reset: self.force_password_reset,
            second_factor_required: self.second_factor_required,
            backup_codes: self.backup_codes.is_some(),
            created_at: crate::clock::rfc3339(self.created_at),
            // A URI always fits a QR code; should drawing fail, the URI still helps.
            qr_code: otpauth_uri
                .as_deref()
                .and_then(|uri| crate::credentials::qr::png_data_url(uri).ok()),
            otpauth_uri,
        }
    }
}
