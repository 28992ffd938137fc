use super::{
    Account, AccountReads, CodeTries, Key, Op, Rate, Reply, Row, Store, StoreError, Taken,
    TotpStep, keys,
};
use crate::config::ServiceUrl;
use crate::domain::Email;
use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

/// The primitives as Redis commands: plain commands where Redis has one,
/// else a short script over the keys of one hash slot (see `keys`). The
/// scripts decide nothing; each is safe to re-run after a dropped
/// connection (a write recognises its own nonce, a give-back its ticket; a
/// re-run take counts twice, which errs against the guesser).
pub struct RedisStore {
    conn: Connection,
    prefix: String,
    round_trips: AtomicU64,
}

#[derive(Clone)]
enum Connection {
    /// One node: all stages go out as one pipeline, applied in order.
    Single(ConnectionManager),
    /// A Cluster: each stage's commands go to their nodes concurrently.
    Cluster(ClusterConnection),
}

#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    pub url: ServiceUrl,
    /// `url` is one node of a Redis Cluster, which tells the client the rest.
    pub cluster: bool,
    pub prefix: String,
    /// Upper bound for one command, so a stalled Redis becomes a quick 503.
    pub timeout: StdDuration,
}

const INSERT: &str = include_str!("lua/insert.lua");
const SWAP: &str = include_str!("lua/swap.lua");
const REMOVE: &str = include_str!("lua/remove.lua");
const READ_ACCOUNT: &str = concat!(
    include_str!("lua/account.lua"),
    include_str!("lua/read_account.lua")
);
const READ_WIZARD: &str = concat!(
    include_str!("lua/wizard.lua"),
    include_str!("lua/read_wizard.lua")
);
const READ_BOUND: &str = concat!(
    include_str!("lua/account.lua"),
    include_str!("lua/wizard.lua"),
    include_str!("lua/read_bound.lua")
);
const GIVE_BACK_CODE: &str = include_str!("lua/give_back_code.lua");
const FORGIVE_IF: &str = include_str!("lua/forgive_if.lua");
const GIVE_BACK: &str = include_str!("lua/give_back.lua");
const BLOCK: &str = include_str!("lua/block.lua");
const ADVANCE: &str = include_str!("lua/advance.lua");
const RATE: &str = include_str!("lua/rate.lua");
const ENLIST: &str = include_str!("lua/enlist.lua");
const CLAIM: &str = include_str!("lua/claim.lua");

impl RedisStore {
    pub async fn connect(config: &RedisStoreConfig) -> anyhow::Result<Self> {
        let url = config.url.expose().as_str();
        let conn = if config.cluster {
            let client = ClusterClient::builder(vec![url])
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .retries(2)
                .build()
                .context("WIZARD_REDIS_URL is not a Redis URL")?;
            Connection::Cluster(
                client
                    .get_async_connection()
                    .await
                    .with_context(|| format!("cannot reach the Redis Cluster at {}", config.url))?,
            )
        } else {
            let client = redis::Client::open(url).context("WIZARD_REDIS_URL is not a Redis URL")?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(1)
                .set_max_delay(config.timeout);
            Connection::Single(
                ConnectionManager::new_with_config(client, manager_config)
                    .await
                    .with_context(|| format!("cannot reach Redis at {}", config.url))?,
            )
        };
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            round_trips: AtomicU64::new(0),
        })
    }

    fn key(&self, key: &Key) -> String {
        format!("{}{key}", self.prefix)
    }

    fn script(&self, source: &str, keys: &[Key]) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(source).arg(keys.len());
        for key in keys {
            cmd.arg(self.key(key));
        }
        cmd
    }

    fn command(&self, op: &Op) -> Cmd {
        match op {
            Op::Read(key) => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(self.key(key));
                cmd
            }
            Op::Insert {
                key,
                row,
                nonce,
                ttl,
            } => {
                let mut cmd = self.script(INSERT, std::slice::from_ref(key));
                cmd.arg(pack(row, row.version, *nonce))
                    .arg(ttl.map_or(0, |ttl| ttl.num_milliseconds().max(1)));
                cmd
            }
            Op::Swap {
                key,
                expected,
                row,
                nonce,
            } => {
                let mut cmd = self.script(SWAP, std::slice::from_ref(key));
                cmd.arg(&expected.to_be_bytes()[..])
                    .arg(pack(row, expected + 1, *nonce));
                cmd
            }
            Op::Remove {
                key,
                expected,
                nonce,
            } => {
                let keys = [key.clone(), Key::Removed(Box::new(key.clone()), *nonce)];
                let mut cmd = self.script(REMOVE, &keys);
                cmd.arg(&expected.to_be_bytes()[..])
                    .arg(super::REMOVAL_KEPT.num_milliseconds());
                cmd
            }
            Op::Enlist {
                set,
                member,
                until,
                now,
                keep,
            } => {
                let mut cmd = self.script(ENLIST, std::slice::from_ref(set));
                cmd.arg(member)
                    .arg(until.timestamp_millis())
                    .arg(now.timestamp_millis())
                    .arg(*keep);
                cmd
            }
            Op::Members { set, now } => {
                let mut cmd = redis::cmd("ZRANGEBYSCORE");
                cmd.arg(self.key(set))
                    .arg(format!("({}", now.timestamp_millis()))
                    .arg("+inf");
                cmd
            }
            Op::Delist { set, member } => {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(self.key(set)).arg(member);
                cmd
            }
            Op::ReadAccount { account, reads } => {
                let keys = [
                    Key::User(account.clone()),
                    Key::Attempts(account.clone()),
                    Key::Block(account.clone()),
                    Key::TotpStep(account.clone()),
                ];
                let mut cmd = self.script(READ_ACCOUNT, &keys);
                account_args(&mut cmd, reads);
                cmd
            }
            Op::ReadBound {
                record,
                reads,
                code,
            } => {
                let keys = bound_keys(record);
                let mut cmd = self.script(READ_BOUND, &keys);
                account_args(&mut cmd, reads);
                let cap = match code {
                    Some(CodeTries::Count { cap }) => *cap,
                    _ => u32::MAX,
                };
                cmd.arg(code_arg(code_of(record, *code)))
                    .arg(cap)
                    .arg(format!("{}{}", self.prefix, keys::ACCOUNT))
                    .arg(keys::USER)
                    .arg(keys::ATTEMPTS)
                    .arg(keys::BLOCK)
                    .arg(keys::TOTP_STEP);
                cmd
            }
            Op::GiveBack {
                account,
                since,
                ticket,
                window,
            } => {
                let keys = [
                    Key::Attempts(account.clone()),
                    Key::GivenBack(account.clone(), *ticket),
                ];
                let mut cmd = self.script(GIVE_BACK, &keys);
                cmd.arg(since.timestamp_millis())
                    .arg(window.num_milliseconds().max(1));
                cmd
            }
            Op::Block {
                account,
                now,
                until,
            } => {
                let keys = [Key::Attempts(account.clone()), Key::Block(account.clone())];
                let mut cmd = self.script(BLOCK, &keys);
                cmd.arg(until.timestamp_millis())
                    .arg((*until - *now).num_milliseconds().max(1));
                cmd
            }
            Op::Forgive { account } => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(self.key(&Key::Attempts(account.clone())))
                    .arg(self.key(&Key::Block(account.clone())));
                cmd
            }
            Op::ForgiveIf {
                account,
                user_version,
                step,
                wizard,
            } => {
                let mut keys = vec![
                    Key::User(account.clone()),
                    Key::TotpStep(account.clone()),
                    Key::Attempts(account.clone()),
                    Key::Block(account.clone()),
                ];
                keys.extend(wizard.map(|(id, ..)| Key::Wizard(id)));
                let mut cmd = self.script(FORGIVE_IF, &keys);
                cmd.arg(&user_version.to_be_bytes()[..])
                    .arg(
                        step.map(|(step, nonce)| format!("{step}:{nonce}"))
                            .unwrap_or_default(),
                    )
                    .arg(
                        wizard
                            .map(|(_, version, nonce)| record_head(version, nonce))
                            .unwrap_or_default(),
                    );
                cmd
            }
            Op::GiveBackCode { wizard, ticket } => {
                let keys = [
                    Key::CodeTries(*wizard),
                    Key::CodeGivenBack(*wizard, *ticket),
                ];
                let mut cmd = self.script(GIVE_BACK_CODE, &keys);
                cmd.arg(super::CODE_GIVE_BACK_KEPT.num_milliseconds());
                cmd
            }
            Op::Advance {
                account,
                step,
                nonce,
                ttl,
            } => {
                let mut cmd = self.script(ADVANCE, &[Key::TotpStep(account.clone())]);
                cmd.arg(step).arg(nonce).arg(ttl.num_milliseconds().max(1));
                cmd
            }
            Op::Rate {
                key,
                now,
                interval,
                burst,
            } => {
                let mut cmd = self.script(RATE, std::slice::from_ref(key));
                cmd.arg(now.timestamp_micros())
                    .arg(interval.as_micros().max(1) as u64)
                    .arg(burst);
                cmd
            }
            Op::Claim { key, member, nonce } => {
                let mut cmd = self.script(CLAIM, std::slice::from_ref(key));
                // Decimal, compared as a string by the script (exact for any u64).
                cmd.arg(member).arg(nonce.to_string());
                cmd
            }
            Op::Claimed(key) => {
                let mut cmd = redis::cmd("HKEYS");
                cmd.arg(self.key(key));
                cmd
            }
            Op::Get(key) => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(self.key(key));
                cmd
            }
            Op::PutNew { key, value } => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(self.key(key)).arg(value).arg("NX");
                cmd
            }
            Op::Put { key, value } => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(self.key(key)).arg(value);
                cmd
            }
            Op::Delete(key) => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(self.key(key));
                cmd
            }
        }
    }
}

impl RedisStore {
    /// One op on a Cluster. A bound read and a forgiving guarded by the
    /// wizard span two slots (the wizard's, then its account's), so each is
    /// two commands there, answered as one.
    async fn on_cluster(&self, mut conn: ClusterConnection, op: &Op) -> redis::RedisResult<Value> {
        if let Op::ForgiveIf {
            account,
            user_version,
            step,
            wizard: Some((id, version, nonce)),
        } = op
        {
            let found: Option<Vec<u8>> = redis::from_redis_value(
                conn.req_packed_command(&self.command(&Op::Read(Key::Wizard(*id))))
                    .await?,
            )?;
            if found.as_deref().and_then(|f| f.get(..16))
                != Some(&record_head(*version, *nonce)[..])
            {
                return Ok(Value::Int(0));
            }
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let unguarded = Op::ForgiveIf {
                account: account.clone(),
                user_version: *user_version,
                step: *step,
                wizard: None,
            };
            return conn.req_packed_command(&self.command(&unguarded)).await;
        }
        let Op::ReadBound {
            record,
            reads,
            code,
        } = op
        else {
            return conn.req_packed_command(&self.command(op)).await;
        };
        let code = code_of(record, *code);
        let mut read = self.script(READ_WIZARD, &bound_keys(record));
        read.arg(code_arg(code));
        let (found, tries): (Value, Option<u32>) =
            redis::from_redis_value(conn.req_packed_command(&read).await?)?;
        let reads = AccountReads {
            count: reads.count
                && code
                    .zip(tries)
                    .is_none_or(|(code, tries)| code.within_cap(tries)),
            ..*reads
        };
        let account = match row(found.clone()) {
            Ok(Some(Row {
                account: Some(email),
                ..
            })) => match Email::parse(&email) {
                Ok(account) => {
                    self.round_trips.fetch_add(1, Ordering::Relaxed);
                    let reads = Op::ReadAccount { account, reads };
                    conn.req_packed_command(&self.command(&reads)).await?
                }
                Err(_) => Value::Nil,
            },
            _ => Value::Nil,
        };
        let tries = tries.map_or(Value::Nil, |n| Value::Int(n.into()));
        Ok(Value::Array(vec![found, tries, account]))
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        match self.conn {
            Connection::Single(_) => "redis",
            Connection::Cluster(_) => "redis-cluster",
        }
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    async fn run(&self, stages: &[&[Op]]) -> Result<Vec<Reply>, StoreError> {
        let ops: Vec<&Op> = stages.iter().flat_map(|stage| stage.iter()).collect();
        let values: Vec<Value> = match &self.conn {
            Connection::Single(conn) => {
                if ops.is_empty() {
                    return Ok(Vec::new());
                }
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                let mut pipe = redis::pipe();
                for op in &ops {
                    pipe.add_command(self.command(op));
                }
                pipe.query_async(&mut conn.clone())
                    .await
                    .map_err(unavailable)?
            }
            Connection::Cluster(conn) => {
                let mut values = Vec::with_capacity(ops.len());
                for stage in stages.iter().filter(|stage| !stage.is_empty()) {
                    self.round_trips.fetch_add(1, Ordering::Relaxed);
                    let sent = stage.iter().map(|op| self.on_cluster(conn.clone(), op));
                    values.extend(try_join_all(sent).await.map_err(unavailable)?);
                }
                values
            }
        };
        ops.iter()
            .zip(values)
            .map(|(op, value)| reply(op, value))
            .collect()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.into())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(anyhow::anyhow!("unexpected reply to {what}"))
}

/// Reads a command's answer as the reply its op promises.
fn reply(op: &Op, value: Value) -> Result<Reply, StoreError> {
    let parse = |what| move |_| corrupt(what);
    Ok(match op {
        Op::Read(_) => Reply::Row(row(value)?),
        Op::ReadAccount { .. } => Reply::Account(account(value)?),
        Op::ReadBound { .. } => {
            let (wizard, code_tries, found): (Value, Option<u32>, Value) =
                redis::from_redis_value(value).map_err(parse("a bound read"))?;
            Reply::Bound {
                record: row(wizard)?,
                code_tries,
                account: match found {
                    Value::Nil => None,
                    found => Some(account(found)?),
                },
            }
        }
        Op::Rate { .. } => {
            let (allowed, remaining, micros): (u8, u32, u64) =
                redis::from_redis_value(value).map_err(parse("a rate check"))?;
            let wait = StdDuration::from_micros(micros);
            Reply::Rate(match allowed {
                1 => Rate::Allowed {
                    remaining,
                    full_in: wait,
                },
                _ => Rate::Refused { retry_in: wait },
            })
        }
        Op::Get(_) => Reply::Value(redis::from_redis_value(value).map_err(parse("a value read"))?),
        Op::Claim { .. } => {
            let (held, claimed): (u8, u32) =
                redis::from_redis_value(value).map_err(parse("a claim"))?;
            Reply::Claim {
                held: held == 1,
                claimed,
            }
        }
        Op::Members { .. } | Op::Enlist { .. } | Op::Claimed(_) => {
            Reply::Members(redis::from_redis_value(value).map_err(parse("members"))?)
        }
        Op::Delist { .. } => {
            let removed: i64 = redis::from_redis_value(value).map_err(parse("a delist"))?;
            Reply::Done(removed > 0)
        }
        Op::PutNew { .. } => Reply::Done(!matches!(value, Value::Nil)),
        Op::Put { .. } | Op::Forgive { .. } => Reply::Done(true),
        Op::Delete(_) => {
            let deleted: i64 = redis::from_redis_value(value).map_err(parse("a delete"))?;
            Reply::Done(deleted > 0)
        }
        Op::Insert { .. }
        | Op::Swap { .. }
        | Op::Remove { .. }
        | Op::GiveBack { .. }
        | Op::GiveBackCode { .. }
        | Op::ForgiveIf { .. }
        | Op::Block { .. }
        | Op::Advance { .. } => {
            let done: i64 = redis::from_redis_value(value).map_err(parse("a script"))?;
            Reply::Done(done == 1)
        }
    })
}

/// The first 16 bytes of a record: its version and its write's nonce.
fn record_head(version: u64, nonce: u64) -> Vec<u8> {
    [version.to_be_bytes(), nonce.to_be_bytes()].concat()
}

/// A record as one string (see `lua/insert.lua`): version, write nonce,
/// the account's length and the account, the body.
fn pack(row: &Row, version: u64, nonce: u64) -> Vec<u8> {
    let account = row.account.as_deref().unwrap_or("").as_bytes();
    let mut packed = Vec::with_capacity(17 + account.len() + row.body.len());
    packed.extend(record_head(version, nonce));
    // Emails are at most 254 bytes (`domain::Email`).
    packed.push(u8::try_from(account.len()).unwrap_or(0));
    packed.extend(account);
    packed.extend(&row.body);
    packed
}

fn row(value: Value) -> Result<Option<Row>, StoreError> {
    let Some(packed): Option<Vec<u8>> =
        redis::from_redis_value(value).map_err(|_| corrupt("a record read"))?
    else {
        return Ok(None);
    };
    let header = packed.get(..17).ok_or_else(|| corrupt("a record"))?;
    let version = u64::from_be_bytes(header[..8].try_into().map_err(|_| corrupt("a record"))?);
    let end = 17 + usize::from(header[16]);
    let account = packed.get(17..end).ok_or_else(|| corrupt("a record"))?;
    Ok(Some(Row {
        version,
        account: match account {
            [] => None,
            account => Some(
                String::from_utf8(account.to_vec()).map_err(|_| corrupt("a record's account"))?,
            ),
        },
        body: packed[end..].to_vec(),
    }))
}

/// An account as `account.lua` answers it.
fn account(value: Value) -> Result<Account, StoreError> {
    let (user, (verdict, value, since), totp_step): (Value, (String, i64, i64), Option<String>) =
        redis::from_redis_value(value).map_err(|_| corrupt("an account read"))?;
    let taken = match verdict.as_str() {
        "blocked" => Taken::Blocked {
            until: from_millis(value)?,
        },
        "open" => Taken::Open,
        "counted" => Taken::Counted {
            count: u32::try_from(value).map_err(|_| corrupt("a take"))?,
            since: from_millis(since)?,
        },
        _ => return Err(corrupt("a take")),
    };
    // Stored as `step:nonce` (see `lua/advance.lua`).
    let totp_step = totp_step
        .map(|stored| {
            stored
                .split_once(':')
                .and_then(|(step, nonce)| {
                    Some(TotpStep {
                        step: step.parse().ok()?,
                        nonce: nonce.parse().ok()?,
                    })
                })
                .ok_or_else(|| corrupt("a TOTP step"))
        })
        .transpose()?;
    Ok(Account {
        user: row(user)?,
        taken,
        totp_step,
    })
}

/// The keys of a bound read: the record, and a wizard's code tries.
fn bound_keys(record: &Key) -> Vec<Key> {
    std::iter::once(record.clone())
        .chain(super::code_tries_of(record))
        .collect()
}

/// The code tries a bound read asks for: none where the record has none.
fn code_of(record: &Key, code: Option<CodeTries>) -> Option<CodeTries> {
    code.filter(|_| super::code_tries_of(record).is_some())
}

/// `wizard.lua`'s code-tries argument.
fn code_arg(code: Option<CodeTries>) -> &'static str {
    match code {
        None => "",
        Some(CodeTries::Read) => "0",
        Some(CodeTries::Count { .. }) => "1",
    }
}

fn account_args(cmd: &mut Cmd, reads: &AccountReads) {
    cmd.arg(reads.now.timestamp_millis())
        .arg(reads.window.num_milliseconds())
        .arg(u8::from(reads.count))
        .arg(u8::from(reads.totp));
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(anyhow::anyhow!("timestamp {ms} out of range")))
}
