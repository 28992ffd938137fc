//! The key layout, shared by every store. Each entity's keys carry a Redis
//! Cluster hash tag (`{...}`) so that everything one primitive touches sits
//! in one slot:
//! - `{w:<uuid>}`: a wizard record; `{w:<uuid>}c` the codes tried in it,
//!   `{w:<uuid>}g<ticket>` code tries already given back
//! - `{e:<email>}u`: the user with that email (same hash layout); `{e:<email>}a`
//!   its attempt counter (hash `n` count, `s` window start); `{e:<email>}b` its
//!   block (the end, in ms); `{e:<email>}t` its last TOTP step; `{e:<email>}g<ticket>`
//!   give-backs already applied; `{e:<email>}m` the allowance of emails sent to it (GCRA).
//!   Unknown emails get counters exactly like known ones.
//! - `{i:<uuid>}`: the email of the user with that id; `{i:<uuid>}s<sid>` one of
//!   its sessions (a record naming the account), `{i:<uuid>}S` the index of its
//!   sessions (a sorted set: session id, scored by when it ends);
//!   `{i:<uuid>}B<generation>` the backup codes of that generation already used
//!   (a claim set: code -> the nonce of the claim that used it, kept until deleted);
//!   `{i:<uuid>}p` a self-service authenticator-app setup waiting for its first
//!   code (record, with a time to live); `{i:<uuid>}q` a self-service phone
//!   waiting for its SMS code (record, with a time to live)
//! - `{r:<api>:<address>}`: a client address's request allowance (GCRA)
//! - `{policy}`: the runtime settings (record); `{keyring}k`: the shared keys
//!   (record, sealed with the operator's KEK if one is set); `{keyring}`: the
//!   keys as versions before rotation kept them, read once to carry them over

use crate::domain::{Email, SessionId, UserId, WizardId};
use std::fmt;
use std::net::IpAddr;

/// An account's keys are `ACCOUNT`, the email, and one of these suffixes.
pub const ACCOUNT: &str = "{e:";
pub const USER: &str = "}u";
pub const ATTEMPTS: &str = "}a";
pub const BLOCK: &str = "}b";
pub const TOTP_STEP: &str = "}t";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Wizard(WizardId),
    /// Codes tried in a wizard (see `lockout`).
    CodeTries(WizardId),
    CodeGivenBack(WizardId, u64),
    User(Email),
    Attempts(Email),
    Block(Email),
    TotpStep(Email),
    GivenBack(Email, u64),
    /// How many emails may still go to an address (see `signin`).
    MailAllowance(Email),
    UserIndex(UserId),
    Session(UserId, SessionId),
    Sessions(UserId),
    /// The backup codes of one generation (the user id, the generation)
    /// already used: a claim set (see `Op::Claim`).
    UsedBackupCodes(UserId, u64),
    /// A self-service authenticator-app setup waiting for its first code.
    PendingTotp(UserId),
    /// A self-service phone waiting for its SMS code.
    PendingPhone(UserId),
    /// A client address's allowance on one API (`scope`).
    Allowance(&'static str, IpAddr),
    Policy,
    /// The keyring as versions before rotation stored it.
    Keyring,
    Keys,
    /// That a record was deleted by the delete with this nonce (in its slot).
    Removed(Box<Key>, u64),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Wizard(id) => write!(f, "{{w:{id}}}"),
            Key::CodeTries(id) => write!(f, "{{w:{id}}}c"),
            Key::CodeGivenBack(id, ticket) => write!(f, "{{w:{id}}}g{ticket:x}"),
            Key::User(email) => write!(f, "{ACCOUNT}{email}{USER}"),
            Key::Attempts(email) => write!(f, "{ACCOUNT}{email}{ATTEMPTS}"),
            Key::Block(email) => write!(f, "{ACCOUNT}{email}{BLOCK}"),
            Key::TotpStep(email) => write!(f, "{ACCOUNT}{email}{TOTP_STEP}"),
            Key::GivenBack(email, ticket) => write!(f, "{{e:{email}}}g{ticket:x}"),
            Key::MailAllowance(email) => write!(f, "{ACCOUNT}{email}}}m"),
            Key::UserIndex(id) => write!(f, "{{i:{id}}}"),
            Key::Session(user, id) => write!(f, "{{i:{user}}}s{id}"),
            Key::Sessions(user) => write!(f, "{{i:{user}}}S"),
            Key::UsedBackupCodes(user, generation) => write!(f, "{{i:{user}}}B{generation:x}"),
            Key::PendingTotp(user) => write!(f, "{{i:{user}}}p"),
            Key::PendingPhone(user) => write!(f, "{{i:{user}}}q"),
            Key::Allowance(scope, ip) => write!(f, "{{r:{scope}:{ip}}}"),
            Key::Policy => f.write_str("{policy}"),
            Key::Keyring => f.write_str("{keyring}"),
            Key::Keys => f.write_str("{keyring}k"),
            Key::Removed(key, nonce) => write!(f, "{key}~{nonce:x}"),
        }
    }
}
