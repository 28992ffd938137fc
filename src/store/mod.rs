//! Where wizards, users, attempt counters and shared settings live: in
//! process, or in Redis (one node or a Cluster).
//!
//! A store knows no policy. It offers a handful of atomic primitives on one
//! key (or on keys of one account, which share a Redis Cluster hash slot),
//! each one round trip ([`Op`]); every rule built from them (the attempt
//! gate, refunds, the code cap, TOTP replay, the order of writes that keeps
//! cross-slot steps safe) is Rust code in `lockout`, `signin` and
//! [`records`], written once for every store. The conformance suite runs the
//! same tests against each store.

pub mod keys;
mod memory;
pub mod records;
mod redis;
mod wizard_record;

pub use keys::Key;
pub use memory::MemoryStore;
pub use records::{Records, StoredPolicy, UserWriteError, Versioned};
pub use redis::{RedisStore, RedisStoreConfig};

use crate::domain::{Email, WizardId};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer (down, timed out, refused, moving a slot).
    #[error("store unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// The backend answered with something we cannot read.
    #[error("store returned a corrupt record: {0:#}")]
    Corrupt(anyhow::Error),
}

/// A versioned record: a compare-and-set names `version`, and `nonce`
/// (random per write) lets a write retried after a dropped connection
/// recognise itself instead of reporting a lost race.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub version: u64,
    /// The account (email) a wizard is bound to, so that its later steps
    /// can find the account's counters without decoding the body.
    pub account: Option<String>,
    pub body: Vec<u8>,
}

/// One atomic primitive. None of them decides anything: they store, compare
/// and count as told.
#[derive(Debug, Clone)]
pub enum Op {
    /// The record at the key, if any.
    Read(Key),
    /// Stores the record (at its own version) unless the key holds one; forgotten
    /// after `ttl` (by the store's own clock) if given.
    Insert {
        key: Key,
        row: Row,
        nonce: u64,
        ttl: Option<Duration>,
    },
    /// Stores the record as version `expected + 1` if the stored version is
    /// still `expected`; the key keeps its time to live.
    Swap {
        key: Key,
        expected: u64,
        row: Row,
        nonce: u64,
    },
    /// Deletes the record if its version is `expected`. A record already
    /// gone counts as deleted only for this same delete (`nonce`), retried.
    Remove {
        key: Key,
        expected: u64,
        nonce: u64,
    },
    /// What a step reads of an account (all in the account's hash slot):
    /// its user, its attempt counter, and its last TOTP step if `totp`.
    /// The counter is a fixed window of `window` from its first attempt:
    /// unless the account is blocked, it counts one attempt if `count`
    /// (starting a new window once the last one ended) and answers the
    /// count; while blocked, it changes nothing and answers the block.
    ReadAccount {
        account: Email,
        reads: AccountReads,
    },
    /// A record (a wizard's or a session's) and, if it names its account,
    /// that account's reads: one round trip on a single Redis, two on a
    /// Cluster (where the two live in different slots). With `code`, also
    /// the codes tried in a wizard (see [`CodeTries`]; only a wizard's
    /// record has them).
    ReadBound {
        record: Key,
        reads: AccountReads,
        code: Option<CodeTries>,
    },
    /// Takes one code try off a wizard's count, once per `ticket`.
    GiveBackCode {
        wizard: WizardId,
        ticket: u64,
    },
    /// Takes one attempt off the counter if its window still began at
    /// `since`; once per `ticket`, however often it is sent.
    GiveBack {
        account: Email,
        since: DateTime<Utc>,
        ticket: u64,
        window: Duration,
    },
    /// Blocks the account until `until` unless it is blocked already (a
    /// block is never extended), and forgets its count.
    Block {
        account: Email,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// Forgets the account's count and any block.
    Forgive {
        account: Email,
    },
    /// [`Op::Forgive`], unless the account changed since a step read it:
    /// its user is no longer at `user_version`, or (with `step`) its last
    /// TOTP step is no longer the one this step recorded (`step`, `nonce`).
    /// With `wizard`, also unless that wizard's record is no longer the
    /// one this step wrote (version, nonce): a step that lost its
    /// compare-and-set forgives nothing. On a single Redis this one script
    /// spans two slots; a Cluster checks the wizard first.
    ForgiveIf {
        account: Email,
        user_version: u64,
        step: Option<(u64, u64)>,
        wizard: Option<(WizardId, u64, u64)>,
    },
    /// Raises the account's last accepted TOTP step to `step` if it is
    /// higher than the stored one (or this same write, `nonce`, retried).
    Advance {
        account: Email,
        step: u64,
        nonce: u64,
        ttl: Duration,
    },
    /// One request against a client's allowance (GCRA): `burst` requests
    /// at once, refilled one per `interval`.
    Rate {
        key: Key,
        now: DateTime<Utc>,
        interval: std::time::Duration,
        burst: u32,
    },
    /// Adds `member` to the sorted set at `set` to end at `until` (or moves
    /// its end later, never earlier), and forgets the members that ended by
    /// `now`. Answers the members beyond the `keep` that end last, `member`
    /// never among them, without removing them (whoever ends them delists
    /// them, so a member is never lost while its record may live). The set
    /// is kept as long as its last member. Safe to run again.
    Enlist {
        set: Key,
        member: String,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        keep: u32,
    },
    /// The members of the sorted set at `set` that end after `now`.
    Members {
        set: Key,
        now: DateTime<Utc>,
    },
    /// Removes `member` from the sorted set at `set`.
    Delist {
        set: Key,
        member: String,
    },
    /// Claims `member` of the claim set at `key` for `nonce`, unless another
    /// nonce claimed it first; the same nonce claiming again (a retry, or
    /// requests racing in one wizard, whose own compare-and-set then picks
    /// one) holds it too. Answers whether `nonce` holds it and how many
    /// members the set has claimed. The set is kept until it is deleted.
    Claim {
        key: Key,
        member: String,
        nonce: u64,
    },
    /// The members claimed in the claim set at `key`.
    Claimed(Key),
    /// A plain value (the user index, the keyring).
    Get(Key),
    /// Stores a plain value unless the key holds one.
    PutNew {
        key: Key,
        value: String,
    },
    Put {
        key: Key,
        value: String,
    },
    /// Deletes whatever the key holds (a value, a record, a set).
    Delete(Key),
}

/// What [`Op::ReadBound`] does with the codes tried in a wizard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeTries {
    /// Only read them.
    Read,
    /// Count one more first. The account's attempt (if `reads.count`) is
    /// then taken only while the tries counted are at most `cap`, so that
    /// requests racing into a wizard that has used up its codes spend no
    /// attempt of the account: the account's and the wizard's counters
    /// then admit the same requests, whatever order a Cluster ran them in.
    Count { cap: u32 },
}

impl CodeTries {
    /// Whether `tries` (as counted) still let the account's attempt be taken.
    pub fn within_cap(self, tries: u32) -> bool {
        match self {
            CodeTries::Read => true,
            CodeTries::Count { cap } => tries <= cap,
        }
    }
}

/// Where a wizard's record keeps its code tries ([`Op::ReadBound`]).
pub fn code_tries_of(record: &Key) -> Option<Key> {
    match record {
        Key::Wizard(id) => Some(Key::CodeTries(*id)),
        _ => None,
    }
}

/// The parameters of an account's reads (see [`Op::ReadAccount`]).
#[derive(Debug, Clone, Copy)]
pub struct AccountReads {
    pub now: DateTime<Utc>,
    pub window: Duration,
    pub count: bool,
    pub totp: bool,
}

/// What [`Op::ReadAccount`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: Option<Row>,
    pub taken: Taken,
    pub totp_step: Option<TotpStep>,
}

/// The last TOTP step an account accepted, and the nonce of the write that
/// recorded it (see [`Op::Advance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpStep {
    pub step: u64,
    pub nonce: u64,
}

/// What an [`Op`] answered, in the order the ops were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Row(Option<Row>),
    /// Whether a conditional write (or a give-back) took effect.
    Done(bool),
    Account(Account),
    Bound {
        record: Option<Row>,
        /// Codes tried in the wizard, this one included if it was counted.
        code_tries: Option<u32>,
        account: Option<Account>,
    },
    Value(Option<String>),
    Rate(Rate),
    Members(Vec<String>),
    /// The answer of an [`Op::Claim`].
    Claim {
        /// Whether the claim's nonce holds the member.
        held: bool,
        /// How many members the set has claimed, this one included.
        claimed: u32,
    },
}

impl Reply {
    /// What kind of answer this is, for errors: never the contents, which
    /// may hold a user record (password hash, TOTP secret).
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Row(_) => "a record",
            Reply::Done(_) => "a verdict",
            Reply::Account(_) => "an account",
            Reply::Bound { .. } => "a bound read",
            Reply::Value(_) => "a value",
            Reply::Rate(_) => "a rate check",
            Reply::Members(_) => "members",
            Reply::Claim { .. } => "a claim",
        }
    }
}

/// The answer of a [`Op::Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Allowed {
        remaining: u32,
        /// Until the whole allowance is back.
        full_in: std::time::Duration,
    },
    Refused {
        retry_in: std::time::Duration,
    },
}

/// The account's counter after the take of an [`Op::ReadAccount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// `count` attempts in the window that began at `since` (this one included, if counted).
    Counted {
        count: u32,
        since: DateTime<Utc>,
    },
    /// Not counted, not blocked (reads with `count: false`).
    Open,
    Blocked {
        until: DateTime<Utc>,
    },
}

/// The primitives, run in stages: every op of a stage may run concurrently
/// (on a Cluster they go to different nodes), and a stage starts only once
/// the one before it has been applied. A single Redis sends all stages in
/// one pipeline (it applies a connection's commands in order); the
/// embedded store applies them in order under one lock.
#[async_trait]
pub trait Store: Send + Sync {
    fn backend(&self) -> &'static str;
    /// Network round trips made so far (none in process): what a step
    /// costs, for operators and the load tool (see `GET /api/v2/admin/store`).
    fn round_trips(&self) -> u64;
    async fn run(&self, stages: &[&[Op]]) -> Result<Vec<Reply>, StoreError>;
}

/// How long a wizard record is kept from its start: its lifetime, then as
/// long again, so that late requests hear "expired" rather than "not found".
/// A duration, which each store counts by its own clock: Redis's need not
/// agree with the service's, and the core never relies on records vanishing.
pub fn kept_for(wizard: &crate::wizard::Wizard) -> Duration {
    (wizard.expires_at - wizard.created_at) * 2
}

/// How long a delete is remembered, so that it recognises itself retried.
pub const REMOVAL_KEPT: Duration = Duration::minutes(1);

/// How long a code try given back is remembered (a retried give-back
/// applies once): longer than any request lasts.
pub const CODE_GIVE_BACK_KEPT: Duration = Duration::minutes(10);

/// How long an account's last TOTP step is remembered: older steps fall out
/// of the ±1 step window within 90 s; keep a margin.
pub const TOTP_STEP_KEPT: Duration = Duration::minutes(10);
