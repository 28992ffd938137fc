//! Ready-made accounts so a newcomer can walk every branch at once.

use crate::credentials::{PasswordHasher, TotpSecret, TotpVault};
use crate::domain::{Email, NewPassword, PhoneNumber};
use crate::store::Records;
use crate::store::Store;
use crate::users::{self, AccountChange, NewUser};
use anyhow::Context as _;

/// A created demo account, for the start-up banner.
pub struct DemoAccount {
    pub email: Email,
    pub password: String,
    pub what: &'static str,
    pub totp_secret: Option<TotpSecret>,
}

/// Creates one account per branch of the wizard, sharing a fresh random password.
pub async fn create(
    store: &dyn Store,
    passwords: &PasswordHasher,
    vault: &TotpVault,
) -> anyhow::Result<Vec<DemoAccount>> {
    let password = random_password();
    let phone = PhoneNumber::parse("+15550100100").context("demo phone")?;
    // (email, what it shows, TOTP, SMS, must reset, must have a second factor)
    let specs = [
        (
            "totp@demo.test",
            "authenticator app",
            true,
            false,
            false,
            false,
        ),
        (
            "sms@demo.test",
            "SMS (code in this log)",
            false,
            true,
            false,
            false,
        ),
        (
            "both@demo.test",
            "choice of app or SMS",
            true,
            true,
            false,
            false,
        ),
        (
            "plain@demo.test",
            "password only",
            false,
            false,
            false,
            false,
        ),
        (
            "reset@demo.test",
            "must reset password",
            false,
            false,
            true,
            false,
        ),
        (
            "enrol@demo.test",
            "must enrol an authenticator app",
            false,
            false,
            false,
            true,
        ),
    ];
    let mut accounts = Vec::with_capacity(specs.len());
    for (email, what, totp, sms, force_password_reset, second_factor_required) in specs {
        let email = Email::parse(email).context("demo email")?;
        let totp_secret = totp.then(TotpSecret::generate);
        let new = NewUser {
            email: email.clone(),
            password: NewPassword::parse(password.clone().into()).context("demo password")?,
            totp_secret: totp_secret.clone(),
            phone: sms.then(|| phone.clone()),
            force_password_reset,
            second_factor_required,
        };
        upsert(store, passwords, vault, new)
            .await
            .with_context(|| format!("creating demo account {email}"))?;
        accounts.push(DemoAccount {
            email,
            password: password.clone(),
            what,
            totp_secret,
        });
    }
    Ok(accounts)
}

/// Creates the account, or resets it to `new` when a previous start (on a
/// shared store) already made it, so the printed password is always right.
async fn upsert(
    store: &dyn Store,
    passwords: &PasswordHasher,
    vault: &TotpVault,
    new: NewUser,
) -> anyhow::Result<()> {
    let Some(existing) = store.user_by_email(&new.email).await? else {
        users::register(store, passwords, vault, new).await?;
        return Ok(());
    };
    let read_at = existing.credentials_version;
    let totp_secret = new
        .totp_secret
        .map(|secret| vault.seal(existing.id, secret))
        .transpose()?;
    let reset = existing.changed(AccountChange {
        password_hash: Some(passwords.hash(&new.password).await?),
        totp_secret: Some(totp_secret),
        phone: Some(new.phone),
        backup_codes: Some(None),
        force_password_reset: Some(new.force_password_reset),
        second_factor_required: Some(new.second_factor_required),
        email: None,
    });
    store.update_user(read_at, &reset).await?;
    Ok(())
}

fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..16)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}
