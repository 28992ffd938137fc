//! The store primitives' contract, run against every store: each op's
//! answer, its effect, and what a re-sent op (a retry after a dropped
//! connection) does. A difference between stores fails here.

use crate::helpers::{BACKENDS, Backend, shared_cluster_url, shared_redis_url};
use chrono::{DateTime, Duration, TimeZone, Utc};
use signin_wizard::domain::{Email, SessionId, UserId, WizardId};
use signin_wizard::store::{
    Account, AccountReads, CodeTries, Key, MemoryStore, Op, Rate, RedisStore, RedisStoreConfig,
    Reply, Row, Store, Taken, TotpStep,
};
use std::sync::Arc;

async fn store(backend: Backend) -> Box<dyn Store> {
    let (url, cluster) = match backend {
        Backend::Memory => return Box::new(MemoryStore::new()),
        Backend::Redis => (shared_redis_url(), false),
        Backend::Cluster => (shared_cluster_url(), true),
    };
    Box::new(
        RedisStore::connect(&RedisStoreConfig {
            url: url.parse().unwrap(),
            cluster,
            prefix: format!("test:{}:", uuid::Uuid::new_v4()),
            timeout: std::time::Duration::from_secs(2),
        })
        .await
        .unwrap(),
    )
}

async fn one(store: &dyn Store, op: Op) -> Reply {
    store.run(&[&[op]]).await.unwrap().pop().unwrap()
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_900_000_000_000 + ms).unwrap()
}

fn row(version: u64, body: &str) -> Row {
    Row {
        version,
        account: None,
        body: body.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn records_compare_and_set_and_recognise_their_own_retries() {
    for backend in BACKENDS {
        let store = store(backend).await;
        let store = store.as_ref();
        let key = Key::Wizard(WizardId::random());
        let insert = |nonce| Op::Insert {
            key: key.clone(),
            row: row(1, "a"),
            nonce,
            ttl: Some(Duration::minutes(1)),
        };
        assert_eq!(
            one(store, insert(1)).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            one(store, insert(1)).await,
            Reply::Done(true),
            "{backend:?}: a retry"
        );
        assert_eq!(
            one(store, insert(2)).await,
            Reply::Done(false),
            "{backend:?}: another insert"
        );

        let swap = |expected, nonce| Op::Swap {
            key: key.clone(),
            expected,
            row: row(0, "b"),
            nonce,
        };
        assert_eq!(
            one(store, swap(1, 3)).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            one(store, swap(1, 3)).await,
            Reply::Done(true),
            "{backend:?}: a retry"
        );
        assert_eq!(
            one(store, swap(1, 4)).await,
            Reply::Done(false),
            "{backend:?}: a lost race"
        );
        assert_eq!(
            one(store, Op::Read(key.clone())).await,
            Reply::Row(Some(row(2, "b"))),
            "{backend:?}"
        );

        let remove = |expected| Op::Remove {
            key: key.clone(),
            expected,
            nonce: 6,
        };
        assert_eq!(
            one(store, remove(1)).await,
            Reply::Done(false),
            "{backend:?}"
        );
        assert_eq!(
            one(store, remove(2)).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            one(store, Op::Read(key.clone())).await,
            Reply::Row(None),
            "{backend:?}"
        );
        assert_eq!(
            one(store, swap(2, 5)).await,
            Reply::Done(false),
            "{backend:?}: nothing to swap"
        );
    }
}

#[tokio::test]
async fn attempts_count_in_windows_give_back_once_and_blocks_never_grow() {
    for backend in BACKENDS {
        let store = store(backend).await;
        let store = store.as_ref();
        let email = Email::parse(&format!("{}@conformance.test", uuid::Uuid::new_v4())).unwrap();
        let window = Duration::seconds(60);
        let read = |now, count| Op::ReadAccount {
            account: email.clone(),
            reads: AccountReads {
                now,
                window,
                count,
                totp: false,
            },
        };
        let taken = |reply| match reply {
            Reply::Account(Account { taken, .. }) => taken,
            other => panic!("{other:?}"),
        };
        let counted = |count, since| Taken::Counted { count, since };

        assert_eq!(
            taken(one(store, read(t(0), true)).await),
            counted(1, t(0)),
            "{backend:?}"
        );
        assert_eq!(
            taken(one(store, read(t(10), true)).await),
            counted(2, t(0)),
            "{backend:?}"
        );
        assert_eq!(
            taken(one(store, read(t(20), false)).await),
            Taken::Open,
            "{backend:?}"
        );
        let give_back = |since, ticket| Op::GiveBack {
            account: email.clone(),
            since,
            ticket,
            window,
        };
        assert_eq!(
            one(store, give_back(t(0), 9)).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            one(store, give_back(t(0), 9)).await,
            Reply::Done(false),
            "{backend:?}: once per ticket"
        );
        assert_eq!(
            taken(one(store, read(t(30), true)).await),
            counted(2, t(0)),
            "{backend:?}"
        );

        // A new window; a give-back for the old one buys nothing in it.
        assert_eq!(
            taken(one(store, read(t(60_000), true)).await),
            counted(1, t(60_000)),
            "{backend:?}"
        );
        assert_eq!(
            one(store, give_back(t(0), 10)).await,
            Reply::Done(false),
            "{backend:?}"
        );

        let block = |now, until| Op::Block {
            account: email.clone(),
            now,
            until,
        };
        assert_eq!(
            one(store, block(t(60_001), t(660_001))).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            one(store, block(t(60_002), t(900_000))).await,
            Reply::Done(false),
            "{backend:?}: not extended"
        );
        let blocked = Taken::Blocked { until: t(660_001) };
        assert_eq!(
            taken(one(store, read(t(60_003), true)).await),
            blocked,
            "{backend:?}"
        );
        assert_eq!(
            taken(one(store, read(t(60_004), false)).await),
            blocked,
            "{backend:?}"
        );

        // The block forgot the count, and counting while blocked added none.
        assert_eq!(
            one(
                store,
                Op::Forgive {
                    account: email.clone()
                }
            )
            .await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            taken(one(store, read(t(60_005), true)).await),
            counted(1, t(60_005)),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn totp_steps_only_rise_and_allowances_refill_at_their_rate() {
    for backend in BACKENDS {
        let store = store(backend).await;
        let store = store.as_ref();
        let email = Email::parse(&format!("{}@conformance.test", uuid::Uuid::new_v4())).unwrap();
        let advance = |step, nonce| Op::Advance {
            account: email.clone(),
            step,
            nonce,
            ttl: Duration::minutes(10),
        };
        assert_eq!(
            one(store, advance(5, 1)).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            one(store, advance(5, 1)).await,
            Reply::Done(true),
            "{backend:?}: same writer"
        );
        assert_eq!(
            one(store, advance(5, 2)).await,
            Reply::Done(false),
            "{backend:?}: replayed"
        );
        assert_eq!(
            one(store, advance(4, 3)).await,
            Reply::Done(false),
            "{backend:?}: older"
        );
        assert_eq!(
            one(store, advance(6, 2)).await,
            Reply::Done(true),
            "{backend:?}"
        );
        let reads = AccountReads {
            now: t(0),
            window: Duration::seconds(60),
            count: false,
            totp: true,
        };
        match one(
            store,
            Op::ReadAccount {
                account: email.clone(),
                reads,
            },
        )
        .await
        {
            Reply::Account(account) => {
                assert_eq!(
                    account.totp_step,
                    Some(TotpStep { step: 6, nonce: 2 }),
                    "{backend:?}"
                )
            }
            other => panic!("{other:?}"),
        }

        let ip = "203.0.113.77".parse().unwrap();
        let rate = |now| Op::Rate {
            key: Key::Allowance("conformance", ip),
            now,
            interval: std::time::Duration::from_secs(30),
            burst: 2,
        };
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            one(store, rate(t(0))).await,
            Reply::Rate(Rate::Allowed {
                remaining: 1,
                full_in: secs(30)
            }),
            "{backend:?}"
        );
        assert_eq!(
            one(store, rate(t(0))).await,
            Reply::Rate(Rate::Allowed {
                remaining: 0,
                full_in: secs(60)
            }),
            "{backend:?}"
        );
        assert_eq!(
            one(store, rate(t(10_000))).await,
            Reply::Rate(Rate::Refused { retry_in: secs(20) }),
            "{backend:?}"
        );
        assert_eq!(
            one(store, rate(t(30_000))).await,
            Reply::Rate(Rate::Allowed {
                remaining: 0,
                full_in: secs(60)
            }),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn a_bound_read_finds_the_account_named_in_the_wizard_record_and_counts_code_tries() {
    for backend in BACKENDS {
        let store = store(backend).await;
        let store = store.as_ref();
        let email = Email::parse(&format!("{}@conformance.test", uuid::Uuid::new_v4())).unwrap();
        let user = Key::User(email.clone());
        let inserted = one(
            store,
            Op::Insert {
                key: user,
                row: row(3, "user"),
                nonce: 1,
                ttl: None,
            },
        )
        .await;
        assert_eq!(inserted, Reply::Done(true));
        let reads = AccountReads {
            now: t(0),
            window: Duration::seconds(60),
            count: true,
            totp: false,
        };
        let bound = |wizard, code| Op::ReadBound {
            record: Key::Wizard(wizard),
            reads,
            code,
        };
        let count = CodeTries::Count { cap: 2 };

        let id = WizardId::random();
        let record = Row {
            version: 1,
            account: Some(email.as_str().to_owned()),
            body: b"wizard".to_vec(),
        };
        let ttl = Some(Duration::minutes(1));
        one(
            store,
            Op::Insert {
                key: Key::Wizard(id),
                row: record.clone(),
                nonce: 2,
                ttl,
            },
        )
        .await;
        match one(store, bound(id, Some(count))).await {
            Reply::Bound {
                record: found,
                code_tries,
                account: Some(account),
            } => {
                assert_eq!(found, Some(record.clone()), "{backend:?}");
                assert_eq!(code_tries, Some(1), "{backend:?}");
                assert_eq!(account.user, Some(row(3, "user")), "{backend:?}");
                assert_eq!(
                    account.taken,
                    Taken::Counted {
                        count: 1,
                        since: t(0)
                    },
                    "{backend:?}"
                );
            }
            other => panic!("{backend:?}: {other:?}"),
        }
        let tries = |reply| match reply {
            Reply::Bound { code_tries, .. } => code_tries,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            tries(one(store, bound(id, Some(count))).await),
            Some(2),
            "{backend:?}"
        );
        let give_back = Op::GiveBackCode {
            wizard: id,
            ticket: 5,
        };
        assert_eq!(
            one(store, give_back.clone()).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            one(store, give_back).await,
            Reply::Done(false),
            "{backend:?}: once per ticket"
        );
        assert_eq!(
            tries(one(store, bound(id, Some(CodeTries::Read))).await),
            Some(1),
            "{backend:?}"
        );
        assert_eq!(
            tries(one(store, bound(id, None)).await),
            None,
            "{backend:?}"
        );
        // Past the cap, a try is counted but the account's attempt is not taken.
        let taken = |reply| match reply {
            Reply::Bound {
                code_tries,
                account: Some(account),
                ..
            } => (code_tries, account.taken),
            other => panic!("{other:?}"),
        };
        let counted = |count| Taken::Counted { count, since: t(0) };
        assert_eq!(
            taken(one(store, bound(id, Some(count))).await),
            (Some(2), counted(5)),
            "{backend:?}"
        );
        assert_eq!(
            taken(one(store, bound(id, Some(count))).await),
            (Some(3), Taken::Open),
            "{backend:?}"
        );
        assert_eq!(
            taken(one(store, bound(id, Some(CodeTries::Read))).await),
            (Some(3), counted(6)),
            "{backend:?}: the account's count went on from 5"
        );

        // A wizard not bound to an account, and one that does not exist.
        let unbound = WizardId::random();
        let record = Row {
            account: None,
            ..record
        };
        one(
            store,
            Op::Insert {
                key: Key::Wizard(unbound),
                row: record,
                nonce: 3,
                ttl,
            },
        )
        .await;
        match one(store, bound(unbound, Some(count))).await {
            Reply::Bound {
                record: Some(_),
                code_tries: Some(1),
                account: None,
            } => {}
            other => panic!("{backend:?}: {other:?}"),
        }
        match one(store, bound(WizardId::random(), Some(count))).await {
            Reply::Bound {
                record: None,
                code_tries: None,
                account: None,
            } => {}
            other => panic!("{backend:?}: {other:?}"),
        }

        // Any record that names its account (a session's): no code tries,
        // even when asked, and none are counted.
        let session = Key::Session(UserId::random(), SessionId::random());
        let named = Row {
            version: 1,
            account: Some(email.as_str().to_owned()),
            body: b"session".to_vec(),
        };
        one(
            store,
            Op::Insert {
                key: session.clone(),
                row: named.clone(),
                nonce: 4,
                ttl,
            },
        )
        .await;
        for code in [None, Some(count)] {
            match one(
                store,
                Op::ReadBound {
                    record: session.clone(),
                    reads: AccountReads {
                        count: false,
                        ..reads
                    },
                    code,
                },
            )
            .await
            {
                Reply::Bound {
                    record: Some(found),
                    code_tries: None,
                    account: Some(account),
                } => {
                    assert_eq!(found, named, "{backend:?}");
                    assert_eq!(account.user, Some(row(3, "user")), "{backend:?}");
                    assert_eq!(account.taken, Taken::Open, "{backend:?}");
                }
                other => panic!("{backend:?}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn forgiving_is_refused_once_the_account_or_its_totp_step_changed() {
    for backend in BACKENDS {
        let store = store(backend).await;
        let store = store.as_ref();
        let email = Email::parse(&format!("{}@conformance.test", uuid::Uuid::new_v4())).unwrap();
        let user = Op::Insert {
            key: Key::User(email.clone()),
            row: row(4, "user"),
            nonce: 1,
            ttl: None,
        };
        one(store, user).await;
        let advance = Op::Advance {
            account: email.clone(),
            step: 7,
            nonce: 11,
            ttl: Duration::minutes(10),
        };
        one(store, advance).await;
        let reads = AccountReads {
            now: t(0),
            window: Duration::seconds(60),
            count: true,
            totp: false,
        };
        let take = || Op::ReadAccount {
            account: email.clone(),
            reads,
        };
        let forgive = |user_version, step| Op::ForgiveIf {
            account: email.clone(),
            user_version,
            step,
            wizard: None,
        };
        // Guarded by a wizard as a step wrote it (version 1, nonce 21).
        let id = WizardId::random();
        let record = row(1, "wizard");
        one(
            store,
            Op::Insert {
                key: Key::Wizard(id),
                row: record,
                nonce: 21,
                ttl: None,
            },
        )
        .await;
        let forgive_after = |wizard| Op::ForgiveIf {
            account: email.clone(),
            user_version: 4,
            step: Some((7, 11)),
            wizard: Some(wizard),
        };

        one(store, take()).await;
        assert_eq!(
            one(store, forgive_after((id, 1, 22))).await,
            Reply::Done(false),
            "{backend:?}: the wizard was written by another request"
        );
        assert_eq!(
            one(store, forgive_after((WizardId::random(), 1, 21))).await,
            Reply::Done(false),
            "{backend:?}: no such wizard"
        );
        assert_eq!(
            one(store, forgive(3, None)).await,
            Reply::Done(false),
            "{backend:?}: user changed"
        );
        assert_eq!(
            one(store, forgive(4, Some((7, 12)))).await,
            Reply::Done(false),
            "{backend:?}: step taken by another"
        );
        assert_eq!(
            one(store, forgive(4, Some((7, 11)))).await,
            Reply::Done(true),
            "{backend:?}"
        );
        match one(store, take()).await {
            Reply::Account(account) => assert_eq!(
                account.taken,
                Taken::Counted {
                    count: 1,
                    since: t(0)
                },
                "{backend:?}"
            ),
            other => panic!("{other:?}"),
        }

        assert_eq!(
            one(store, forgive_after((id, 1, 21))).await,
            Reply::Done(true),
            "{backend:?}"
        );

        // A delete, retried after it applied, still reports done; another
        // delete of the record now gone does not.
        let remove = |nonce| Op::Remove {
            key: Key::User(email.clone()),
            expected: 4,
            nonce,
        };
        assert_eq!(
            one(store, remove(1)).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            one(store, remove(1)).await,
            Reply::Done(true),
            "{backend:?}: retried"
        );
        assert_eq!(
            one(store, remove(2)).await,
            Reply::Done(false),
            "{backend:?}: another delete"
        );
        assert_eq!(
            one(store, forgive(4, None)).await,
            Reply::Done(false),
            "{backend:?}: user gone"
        );
    }
}

#[tokio::test]
async fn sorted_sets_keep_their_members_until_they_end() {
    for backend in BACKENDS {
        let store = store(backend).await;
        let store = store.as_ref();
        let set = Key::Sessions(UserId::random());
        // In minutes: the set is kept (by the store's own clock) until its last member ends.
        let at = |minutes: i64| t(minutes * 60_000);
        let enlist_keeping = |member: &str, until: i64, now: i64, keep: u32| Op::Enlist {
            set: set.clone(),
            member: member.to_owned(),
            until: at(until),
            now: at(now),
            keep,
        };
        let enlist = |member: &str, until: i64, now: i64| enlist_keeping(member, until, now, 10);
        let none = Reply::Members(Vec::new());
        let members = |now: i64| Op::Members {
            set: set.clone(),
            now: at(now),
        };
        let sorted = |reply| match reply {
            Reply::Members(mut members) => {
                members.sort();
                members
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(sorted(one(store, members(0)).await), Vec::<String>::new());
        assert_eq!(one(store, enlist("a", 100, 0)).await, none);
        assert_eq!(one(store, enlist("b", 50, 0)).await, none);
        assert_eq!(
            sorted(one(store, members(10)).await),
            ["a", "b"],
            "{backend:?}"
        );
        // Members that ended are not answered, and the next enlist forgets them.
        assert_eq!(sorted(one(store, members(50)).await), ["a"], "{backend:?}");
        one(store, enlist("c", 200, 60)).await;
        assert_eq!(
            sorted(one(store, members(10)).await),
            ["a", "c"],
            "{backend:?}"
        );
        // Enlisting again moves a member's end later, never earlier.
        one(store, enlist("a", 300, 60)).await;
        one(store, enlist("a", 120, 60)).await;
        assert_eq!(sorted(one(store, members(250)).await), ["a"], "{backend:?}");
        let delist = |member: &str| Op::Delist {
            set: set.clone(),
            member: member.to_owned(),
        };
        assert_eq!(
            one(store, delist("a")).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            one(store, delist("a")).await,
            Reply::Done(false),
            "{backend:?}"
        );
        assert_eq!(sorted(one(store, members(10)).await), ["c"], "{backend:?}");
        // Beyond `keep`, the members that end first are answered (never the one
        // enlisted), and stay until someone delists them.
        one(store, enlist("d", 150, 60)).await;
        assert_eq!(
            sorted(one(store, enlist_keeping("e", 400, 60, 2)).await),
            ["d"],
            "{backend:?}"
        );
        assert_eq!(
            sorted(one(store, members(60)).await),
            ["c", "d", "e"],
            "{backend:?}"
        );
        // Enlisted to end first, and still not among those beyond.
        assert_eq!(
            sorted(one(store, enlist_keeping("f", 100, 60, 1)).await),
            ["c", "d", "e"],
            "{backend:?}"
        );
        for member in ["c", "d", "e", "f"] {
            assert_eq!(
                one(store, delist(member)).await,
                Reply::Done(true),
                "{backend:?}"
            );
        }
        assert_eq!(sorted(one(store, members(10)).await), Vec::<String>::new());
    }
}

#[tokio::test]
async fn a_claim_is_held_by_its_first_nonce_and_recognises_its_retries() {
    for backend in BACKENDS {
        let store = store(backend).await;
        let store = store.as_ref();
        let key = Key::UsedBackupCodes(UserId::random(), 1);
        let claim = |member: &str, nonce| Op::Claim {
            key: key.clone(),
            member: member.to_owned(),
            nonce,
        };
        let held = |held, claimed| Reply::Claim { held, claimed };
        let claimed = || Op::Claimed(key.clone());
        let sorted = |reply| match reply {
            Reply::Members(mut members) => {
                members.sort();
                members
            }
            other => panic!("{other:?}"),
        };
        // Nonces beyond 2^53 and differing in their last bit: no rounding.
        let (first, other) = (u64::MAX - 1, u64::MAX);

        assert_eq!(sorted(one(store, claimed()).await), Vec::<String>::new());
        assert_eq!(
            one(store, claim("a", first)).await,
            held(true, 1),
            "{backend:?}"
        );
        assert_eq!(
            one(store, claim("a", other)).await,
            held(false, 1),
            "{backend:?}: claimed by another"
        );
        assert_eq!(
            one(store, claim("a", first)).await,
            held(true, 1),
            "{backend:?}: a retry"
        );
        assert_eq!(
            one(store, claim("b", other)).await,
            held(true, 2),
            "{backend:?}"
        );
        assert_eq!(
            sorted(one(store, claimed()).await),
            ["a", "b"],
            "{backend:?}"
        );

        assert_eq!(
            one(store, Op::Delete(key.clone())).await,
            Reply::Done(true),
            "{backend:?}"
        );
        assert_eq!(
            sorted(one(store, claimed()).await),
            Vec::<String>::new(),
            "{backend:?}"
        );
        assert_eq!(
            one(store, claim("a", other)).await,
            held(true, 1),
            "{backend:?}: a new set"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_claims_racing_for_one_member_exactly_one_holds() {
    const RACERS: u64 = 16;
    for backend in BACKENDS {
        let store: Arc<dyn Store> = Arc::from(store(backend).await);
        let key = Key::UsedBackupCodes(UserId::random(), 0x2a);
        let start = Arc::new(tokio::sync::Barrier::new(RACERS as usize));
        let racers = (0..RACERS).map(|i| {
            let (store, key, start) = (store.clone(), key.clone(), start.clone());
            tokio::spawn(async move {
                let op = Op::Claim {
                    key,
                    member: "code".to_owned(),
                    nonce: u64::MAX - i,
                };
                start.wait().await;
                store.run(&[&[op]]).await.unwrap().pop().unwrap()
            })
        });
        let mut held = 0;
        for reply in futures::future::join_all(racers).await {
            match reply.unwrap() {
                Reply::Claim { held: h, claimed } => {
                    assert_eq!(claimed, 1, "{backend:?}");
                    held += usize::from(h);
                }
                other => panic!("{backend:?}: {other:?}"),
            }
        }
        assert_eq!(held, 1, "{backend:?}: exactly one of {RACERS} holds");
    }
}

#[tokio::test]
async fn pending_setups_are_records_like_any_other() {
    for backend in BACKENDS {
        let store = store(backend).await;
        let store = store.as_ref();
        let user = UserId::random();
        for key in [Key::PendingTotp(user), Key::PendingPhone(user)] {
            let insert = Op::Insert {
                key: key.clone(),
                row: row(1, "pending"),
                nonce: 1,
                ttl: Some(Duration::minutes(10)),
            };
            assert_eq!(
                one(store, insert).await,
                Reply::Done(true),
                "{backend:?} {key}"
            );
            let swap = Op::Swap {
                key: key.clone(),
                expected: 1,
                row: row(0, "confirmed"),
                nonce: 2,
            };
            assert_eq!(
                one(store, swap).await,
                Reply::Done(true),
                "{backend:?} {key}"
            );
            assert_eq!(
                one(store, Op::Read(key.clone())).await,
                Reply::Row(Some(row(2, "confirmed"))),
                "{backend:?} {key}"
            );
            let remove = Op::Remove {
                key: key.clone(),
                expected: 2,
                nonce: 3,
            };
            assert_eq!(
                one(store, remove).await,
                Reply::Done(true),
                "{backend:?} {key}"
            );
            assert_eq!(
                one(store, Op::Read(key.clone())).await,
                Reply::Row(None),
                "{backend:?} {key}"
            );
        }
    }
}
