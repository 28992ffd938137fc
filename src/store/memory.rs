use super::{
    Account, AccountReads, CODE_GIVE_BACK_KEPT, CodeTries, Key, Op, REMOVAL_KEPT, Rate, Reply, Row,
    Store, StoreError, Taken, TotpStep,
};
use crate::domain::{Email, WizardId};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Sweep expired entries after this many writes (keeps writes O(1) amortised).
const SWEEP_EVERY: u64 = 1024;

/// Everything in one process, behind one short-held lock. For a single
/// instance (development, demos, tests); state is gone on restart. Like
/// Redis with its TTLs, it forgets entries by its own (monotonic) clock,
/// after durations: the service's clock is for decisions, not for this.
/// Each primitive does exactly what its Redis script does (see `Op`).
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    writes: u64,
}

struct Entry {
    value: Value,
    forget_at: Option<Instant>,
}

enum Value {
    Record {
        row: Row,
        nonce: u64,
    },
    Counter {
        count: u32,
        since: DateTime<Utc>,
    },
    Block(DateTime<Utc>),
    Step {
        step: u64,
        nonce: u64,
    },
    /// Codes tried in a wizard.
    Tries(u32),
    /// A GCRA theoretical arrival time.
    Arrival(DateTime<Utc>),
    /// A sorted set: each member and when it ends.
    Members(HashMap<String, DateTime<Utc>>),
    /// A claim set: each member and the nonce that claimed it (kept until deleted).
    Claims(HashMap<String, u64>),
    Text(String),
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under the lock can panic between related writes (they are
        // plain map updates), so a poisoned lock still guards consistent data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn round_trips(&self) -> u64 {
        0
    }

    async fn run(&self, stages: &[&[Op]]) -> Result<Vec<Reply>, StoreError> {
        let mut inner = self.lock();
        Ok(stages
            .iter()
            .flat_map(|stage| stage.iter())
            .map(|op| inner.apply(op))
            .collect())
    }
}

impl Inner {
    fn live(&self, key: &Key) -> Option<&Value> {
        self.entries
            .get(key)
            .filter(|e| e.forget_at.is_none_or(|at| at > Instant::now()))
            .map(|e| &e.value)
    }

    fn set(&mut self, key: Key, value: Value, kept_for: Option<Duration>) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            let now = Instant::now();
            self.entries
                .retain(|_, e| e.forget_at.is_none_or(|at| at > now));
        }
        self.entries.insert(
            key,
            Entry {
                value,
                forget_at: kept_for.map(after),
            },
        );
    }

    /// Replaces a live entry's value, keeping its time to live.
    fn replace(&mut self, key: &Key, value: Value) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.value = value;
        }
    }

    fn record(&self, key: &Key) -> Option<(&Row, u64)> {
        match self.live(key) {
            Some(Value::Record { row, nonce }) => Some((row, *nonce)),
            _ => None,
        }
    }

    /// The codes tried in wizard `id`, one more first if `count`; kept as long as the wizard.
    fn code_tries(&mut self, id: WizardId, count: bool) -> u32 {
        let key = Key::CodeTries(id);
        let tries = match self.live(&key) {
            Some(Value::Tries(n)) => *n,
            _ => 0,
        } + u32::from(count);
        if count {
            let forget_at = self.entries.get(&Key::Wizard(id)).and_then(|e| e.forget_at);
            self.writes += 1;
            self.entries.insert(
                key,
                Entry {
                    value: Value::Tries(tries),
                    forget_at,
                },
            );
        }
        tries
    }

    fn read_account(&mut self, account: &Email, reads: &AccountReads) -> Account {
        let AccountReads {
            now,
            window,
            count,
            totp,
        } = *reads;
        let user = self
            .record(&Key::User(account.clone()))
            .map(|(row, _)| row.clone());
        let totp_step = match self.live(&Key::TotpStep(account.clone())) {
            Some(Value::Step { step, nonce }) if totp => Some(TotpStep {
                step: *step,
                nonce: *nonce,
            }),
            _ => None,
        };
        let taken = match self.live(&Key::Block(account.clone())) {
            Some(Value::Block(until)) if *until > now => Taken::Blocked { until: *until },
            _ if !count => Taken::Open,
            _ => {
                let key = Key::Attempts(account.clone());
                let (count, since) = match self.live(&key) {
                    Some(Value::Counter { count, since }) if *since + window > now => {
                        (count + 1, *since)
                    }
                    _ => (1, now),
                };
                self.set(
                    key,
                    Value::Counter { count, since },
                    Some(since + window - now),
                );
                Taken::Counted { count, since }
            }
        };
        Account {
            user,
            taken,
            totp_step,
        }
    }

    fn apply(&mut self, op: &Op) -> Reply {
        match op {
            Op::Read(key) => Reply::Row(self.record(key).map(|(row, _)| row.clone())),
            Op::Insert {
                key,
                row,
                nonce,
                ttl,
            } => {
                if let Some((_, stored)) = self.record(key) {
                    return Reply::Done(stored == *nonce);
                }
                let row = row.clone();
                self.set(key.clone(), Value::Record { row, nonce: *nonce }, *ttl);
                Reply::Done(true)
            }
            Op::Swap {
                key,
                expected,
                row,
                nonce,
            } => match self.record(key) {
                Some((stored, n)) if stored.version == expected + 1 && n == *nonce => {
                    Reply::Done(true)
                }
                Some((stored, _)) if stored.version == *expected => {
                    let row = Row {
                        version: expected + 1,
                        ..row.clone()
                    };
                    self.replace(key, Value::Record { row, nonce: *nonce });
                    Reply::Done(true)
                }
                _ => Reply::Done(false),
            },
            Op::Remove {
                key,
                expected,
                nonce,
            } => {
                let marker = Key::Removed(Box::new(key.clone()), *nonce);
                match self.record(key) {
                    None => Reply::Done(self.live(&marker).is_some()),
                    Some((stored, _)) if stored.version != *expected => Reply::Done(false),
                    Some(_) => {
                        self.entries.remove(key);
                        self.set(marker, Value::Text(String::new()), Some(REMOVAL_KEPT));
                        Reply::Done(true)
                    }
                }
            }
            Op::ReadAccount { account, reads } => Reply::Account(self.read_account(account, reads)),
            Op::ReadBound {
                record,
                reads,
                code,
            } => {
                let found = self.record(record).map(|(row, _)| row.clone());
                let code_tries = match (&found, code, record) {
                    (Some(_), Some(code), Key::Wizard(id)) => {
                        Some(self.code_tries(*id, matches!(code, CodeTries::Count { .. })))
                    }
                    _ => None,
                };
                let reads = AccountReads {
                    count: reads.count
                        && code
                            .zip(code_tries)
                            .is_none_or(|(code, tries)| code.within_cap(tries)),
                    ..*reads
                };
                let account = found
                    .as_ref()
                    .and_then(|row| row.account.as_deref())
                    .and_then(|email| Email::parse(email).ok())
                    .map(|email| self.read_account(&email, &reads));
                Reply::Bound {
                    record: found,
                    code_tries,
                    account,
                }
            }
            Op::GiveBackCode { wizard, ticket } => {
                let marker = Key::CodeGivenBack(*wizard, *ticket);
                if self.live(&marker).is_some() {
                    return Reply::Done(false);
                }
                self.set(
                    marker,
                    Value::Text(String::new()),
                    Some(CODE_GIVE_BACK_KEPT),
                );
                let key = Key::CodeTries(*wizard);
                match self.live(&key) {
                    Some(Value::Tries(n)) if *n > 0 => {
                        let fewer = Value::Tries(n - 1);
                        self.replace(&key, fewer);
                        Reply::Done(true)
                    }
                    _ => Reply::Done(false),
                }
            }
            Op::GiveBack {
                account,
                since,
                ticket,
                window,
            } => {
                let marker = Key::GivenBack(account.clone(), *ticket);
                if self.live(&marker).is_some() {
                    return Reply::Done(false);
                }
                self.set(marker, Value::Text(String::new()), Some(*window));
                let key = Key::Attempts(account.clone());
                match self.live(&key) {
                    Some(Value::Counter { count, since: s }) if *count > 0 && s == since => {
                        let value = Value::Counter {
                            count: count - 1,
                            since: *s,
                        };
                        self.replace(&key, value);
                        Reply::Done(true)
                    }
                    _ => Reply::Done(false),
                }
            }
            Op::Block {
                account,
                now,
                until,
            } => {
                let key = Key::Block(account.clone());
                if self.live(&key).is_some() {
                    return Reply::Done(false);
                }
                self.set(key, Value::Block(*until), Some(*until - *now));
                self.entries.remove(&Key::Attempts(account.clone()));
                Reply::Done(true)
            }
            Op::Forgive { account } => {
                self.entries.remove(&Key::Attempts(account.clone()));
                self.entries.remove(&Key::Block(account.clone()));
                Reply::Done(true)
            }
            Op::ForgiveIf {
                account,
                user_version,
                step,
                wizard,
            } => {
                let wizard_stands = wizard.is_none_or(|(id, version, nonce)| {
                    self.record(&Key::Wizard(id))
                        .is_some_and(|(row, n)| row.version == version && n == nonce)
                });
                let user_stands = self
                    .record(&Key::User(account.clone()))
                    .is_some_and(|(row, _)| row.version == *user_version);
                let step_stands = match step {
                    None => true,
                    Some((step, nonce)) => matches!(
                        self.live(&Key::TotpStep(account.clone())),
                        Some(Value::Step { step: s, nonce: n }) if s == step && n == nonce
                    ),
                };
                if !(wizard_stands && user_stands && step_stands) {
                    return Reply::Done(false);
                }
                self.entries.remove(&Key::Attempts(account.clone()));
                self.entries.remove(&Key::Block(account.clone()));
                Reply::Done(true)
            }
            Op::Advance {
                account,
                step,
                nonce,
                ttl,
            } => {
                let key = Key::TotpStep(account.clone());
                match self.live(&key) {
                    Some(Value::Step { step: s, nonce: n }) if s == step && n == nonce => {
                        Reply::Done(true)
                    }
                    Some(Value::Step { step: s, .. }) if s >= step => Reply::Done(false),
                    _ => {
                        let value = Value::Step {
                            step: *step,
                            nonce: *nonce,
                        };
                        self.set(key, value, Some(*ttl));
                        Reply::Done(true)
                    }
                }
            }
            Op::Rate {
                key,
                now,
                interval,
                burst,
            } => {
                let interval = Duration::from_std(*interval).unwrap_or(Duration::MAX);
                let tat = match self.live(key) {
                    Some(Value::Arrival(tat)) => (*tat).max(*now),
                    _ => *now,
                };
                let tolerance = interval * (*burst as i32 - 1);
                if tat - *now > tolerance {
                    let retry_in = (tat - *now - tolerance).to_std().unwrap_or_default();
                    return Reply::Rate(Rate::Refused { retry_in });
                }
                let next = tat + interval;
                let used = (next - *now).num_microseconds().unwrap_or(i64::MAX);
                let per = interval.num_microseconds().unwrap_or(i64::MAX).max(1);
                let remaining = (i64::from(*burst) * per - used) / per;
                self.set(key.clone(), Value::Arrival(next), Some(next - *now));
                Reply::Rate(Rate::Allowed {
                    remaining: u32::try_from(remaining).unwrap_or(0),
                    full_in: (next - *now).to_std().unwrap_or_default(),
                })
            }
            Op::Enlist {
                set,
                member,
                until,
                now,
                keep,
            } => {
                let mut members = match self.live(set) {
                    Some(Value::Members(members)) => members.clone(),
                    _ => HashMap::new(),
                };
                let end = members.entry(member.clone()).or_insert(*until);
                *end = (*end).max(*until);
                members.retain(|_, until| *until > *now);
                // The ones that end first (ties by member, as Redis orders them).
                let mut by_end: Vec<(&DateTime<Utc>, &String)> =
                    members.iter().map(|(m, end)| (end, m)).collect();
                by_end.sort();
                let over = members.len().saturating_sub(*keep as usize);
                let beyond: Vec<String> = by_end
                    .into_iter()
                    .map(|(_, m)| m.clone())
                    .filter(|m| m != member)
                    .take(over)
                    .collect();
                let last = members.values().max().copied();
                match last {
                    Some(last) => self.set(set.clone(), Value::Members(members), Some(last - *now)),
                    None => {
                        self.entries.remove(set);
                    }
                }
                Reply::Members(beyond)
            }
            Op::Members { set, now } => Reply::Members(match self.live(set) {
                Some(Value::Members(members)) => members
                    .iter()
                    .filter(|(_, until)| *until > now)
                    .map(|(member, _)| member.clone())
                    .collect(),
                _ => Vec::new(),
            }),
            Op::Delist { set, member } => {
                let removed = match self.entries.get_mut(set) {
                    Some(Entry {
                        value: Value::Members(members),
                        ..
                    }) => members.remove(member).is_some(),
                    _ => false,
                };
                Reply::Done(removed)
            }
            Op::Claim { key, member, nonce } => {
                let mut claims = match self.entries.remove(key) {
                    Some(Entry {
                        value: Value::Claims(claims),
                        ..
                    }) => claims,
                    _ => HashMap::new(),
                };
                let holder = *claims.entry(member.clone()).or_insert(*nonce);
                let claimed = u32::try_from(claims.len()).unwrap_or(u32::MAX);
                self.set(key.clone(), Value::Claims(claims), None);
                Reply::Claim {
                    held: holder == *nonce,
                    claimed,
                }
            }
            Op::Claimed(key) => Reply::Members(match self.live(key) {
                Some(Value::Claims(claims)) => claims.keys().cloned().collect(),
                _ => Vec::new(),
            }),
            Op::Get(key) => Reply::Value(match self.live(key) {
                Some(Value::Text(text)) => Some(text.clone()),
                _ => None,
            }),
            Op::PutNew { key, value } => {
                if self.live(key).is_some() {
                    return Reply::Done(false);
                }
                self.set(key.clone(), Value::Text(value.clone()), None);
                Reply::Done(true)
            }
            Op::Put { key, value } => {
                self.set(key.clone(), Value::Text(value.clone()), None);
                Reply::Done(true)
            }
            Op::Delete(key) => Reply::Done(self.entries.remove(key).is_some()),
        }
    }
}

/// `duration` from now, by this process's monotonic clock.
fn after(duration: Duration) -> Instant {
    Instant::now() + duration.to_std().unwrap_or_default()
}
