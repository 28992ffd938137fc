//! Model-based property test: random request sequences against a small
//! reference model of the B2Core flow, with the password-reset branch,
//! backup codes and forced enrolment.

use super::*;
use crate::domain::{DeviceFingerprint, OtpCode, PhoneNumber, UserId, WizardId, WizardKey};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Request {
    Password {
        correct: bool,
    },
    Choose(Factor),
    Totp {
        correct: bool,
    },
    Sms {
        correct: bool,
    },
    Backup {
        correct: bool,
    },
    Enroll {
        correct: bool,
    },
    Resend,
    /// At the login screen, for the account's email (`known`) or another.
    Forgot {
        known: bool,
    },
    /// A reset code for the wizard's account (again).
    Restore,
    /// The reset code, and a new password that is the old one or not.
    Reset {
        correct: bool,
        reused: bool,
    },
    Wait {
        secs: i64,
    },
    /// An operator changes the account (its version moves on).
    AdminChange,
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<bool>().prop_map(|correct| Request::Password { correct }),
        prop_oneof![
            Just(Factor::Totp),
            Just(Factor::Sms),
            Just(Factor::BackupCode)
        ]
        .prop_map(Request::Choose),
        any::<bool>().prop_map(|correct| Request::Totp { correct }),
        any::<bool>().prop_map(|correct| Request::Sms { correct }),
        any::<bool>().prop_map(|correct| Request::Backup { correct }),
        any::<bool>().prop_map(|correct| Request::Enroll { correct }),
        Just(Request::Resend),
        any::<bool>().prop_map(|known| Request::Forgot { known }),
        Just(Request::Restore),
        (any::<bool>(), any::<bool>())
            .prop_map(|(correct, reused)| Request::Reset { correct, reused }),
        (1i64..400).prop_map(|secs| Request::Wait { secs }),
        Just(Request::AdminChange),
    ]
}

/// The reference: where the flow should be, written as plainly as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Login,
    Choose,
    Totp,
    Sms {
        sent_at: i64,
        resends: u32,
    },
    Backup,
    Enroll,
    Reset,
    ResetCode {
        sent_at: i64,
        resends: u32,
        known: bool,
    },
    Done,
}

/// What the account has and must have, as the model tracks it.
#[derive(Debug, Clone, Copy)]
struct Has {
    totp: bool,
    sms: bool,
    backup: bool,
    reset: bool,
    required: bool,
}

impl Has {
    fn factors(self) -> Vec<Factor> {
        let mut factors = Vec::new();
        if self.totp {
            factors.push(Factor::Totp);
        }
        if self.sms {
            factors.push(Factor::Sms);
        }
        if self.backup && (self.totp || self.sms) {
            factors.push(Factor::BackupCode);
        }
        factors
    }
}

const TTL: i64 = 600;
const SMS_TTL: i64 = 300;
const RESET_CODE_TTL: i64 = 240;
const COOLDOWN: i64 = 30;
const MAX_RESENDS: u32 = 3;
const RIGHT: [u8; 32] = [1; 32];
const WRONG: [u8; 32] = [2; 32];

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tokens_only_after_every_required_factor(
        totp in any::<bool>(),
        sms in any::<bool>(),
        backup in any::<bool>(),
        reset in any::<bool>(),
        (by_policy, by_admin) in (any::<bool>(), any::<bool>()),
        requests in proptest::collection::vec(request(), 1..25),
    ) {
        let mut has = Has { totp, sms, backup, reset, required: by_policy || by_admin };
        let mut account = Account {
            id: UserId::random(),
            version: 1,
            totp,
            phone: sms.then(|| PhoneNumber::parse("+15550001111").unwrap()),
            backup_codes: backup,
            must_reset_password: reset,
            second_factor_required: by_admin,
        };
        let secret: crate::credentials::StoredTotp =
            serde_json::from_str(r#""GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ""#).unwrap();
        let fingerprint = DeviceFingerprint::parse("eyJ1c2VyX2FnZW50IjoicCJ9").unwrap();
        let mut wizard = Wizard::start(WizardId::random(), &WizardKey::generate(), t0(), Duration::seconds(TTL));
        let mut model = Model::Login;
        let mut elapsed = 0i64;
        let mut tokens_issued = 0;
        let mut bound_version = None;

        for request in requests {
            let event = match &request {
                Request::Wait { secs } => { elapsed += secs; continue; }
                Request::AdminChange => { account.version += 1; continue; }
                Request::Password { correct } => Event::Credentials {
                    account: correct.then(|| account.clone()),
                    fingerprint: fingerprint.clone(),
                },
                Request::Choose(factor) => Event::ChooseFactor { factor: *factor, account: account.clone() },
                Request::Totp { correct } => Event::TotpCode { account: account.clone(), accepted: *correct },
                Request::Sms { correct } => Event::SmsCode {
                    account: account.clone(),
                    digest: SecretDigest::new(if *correct { RIGHT } else { WRONG }),
                },
                Request::Backup { correct } => Event::BackupCode { account: account.clone(), accepted: *correct },
                Request::Enroll { correct } => Event::EnrollTotp {
                    account: account.clone(),
                    accepted: *correct,
                    backup_codes: crate::credentials::StoredBackupCodes { generation: 1, digests: vec![SecretDigest::new(RIGHT)] },
                },
                Request::Resend => Event::ResendSms { account: account.clone() },
                Request::Forgot { known } => Event::ForgotPassword { account: known.then(|| account.clone()) },
                Request::Restore => Event::RestorePassword { account: Some(account.clone()) },
                Request::Reset { correct, reused } => Event::ResetPassword {
                    account: Some(account.clone()),
                    digest: SecretDigest::new(if *correct { RIGHT } else { WRONG }),
                    password: match reused {
                        true => NewPasswordCheck::Reused,
                        false => NewPasswordCheck::Hashed(serde_json::from_str(r#""$argon2id$new""#).unwrap()),
                    },
                },
            };
            let ctx = Context {
                now: t0() + Duration::seconds(elapsed),
                sms_code_ttl: Duration::seconds(SMS_TTL),
                reset_code_ttl: Duration::seconds(RESET_CODE_TTL),
                resend_cooldown: Duration::seconds(COOLDOWN),
                max_resends: MAX_RESENDS,
                fresh_code: FreshCode { code: OtpCode::parse("123456").unwrap(), digest: SecretDigest::new(RIGHT) },
                fresh_reset_code: FreshCode { code: OtpCode::parse_reset("12345678").unwrap(), digest: SecretDigest::new(RIGHT) },
                second_factor_required: by_policy,
                fresh_totp: Some(secret.clone()),
            };
            let stale = bound_version.is_some_and(|v| v != account.version);
            let expected = expect(model, &request, elapsed, stale, has);
            match (transition(&wizard, event, &ctx), expected) {
                (Ok(t), Ok(next)) => {
                    let issued = t.effects.iter().filter(|e| matches!(e, Effect::IssueTokens { .. })).count();
                    let count = |f: fn(&Effect) -> bool| t.effects.iter().filter(|e| f(e)).count();
                    let sent = count(|e| matches!(e, Effect::SendSms { .. }));
                    let mailed_code = count(|e| matches!(e, Effect::EmailResetCode { .. }));
                    let mailed_notice = count(|e| matches!(e, Effect::EmailNoAccount));
                    let set = count(|e| matches!(e, Effect::SetPassword { .. }));
                    let enabled = count(|e| matches!(e, Effect::EnableTotp { .. }));
                    prop_assert_eq!(enabled, usize::from(model == Model::Enroll));
                    prop_assert_eq!(issued, usize::from(next == Model::Done));
                    prop_assert_eq!(sent, usize::from(matches!(next, Model::Sms { .. })));
                    prop_assert_eq!(mailed_code, usize::from(matches!(next, Model::ResetCode { known: true, .. })));
                    prop_assert_eq!(mailed_notice, usize::from(matches!(next, Model::ResetCode { known: false, .. })));
                    prop_assert_eq!(set, usize::from(matches!((model, next), (Model::ResetCode { .. }, Model::Login))));
                    tokens_issued += issued;
                    match (model, next) {
                        (Model::Login, Model::ResetCode { known, .. }) => {
                            bound_version = known.then_some(account.version);
                        }
                        (Model::Login, _) => bound_version = Some(account.version),
                        // The shell stores the new password: the account moves on, unbound.
                        (Model::ResetCode { .. }, Model::Login) => {
                            account.version += 1;
                            account.must_reset_password = false;
                            has.reset = false;
                            bound_version = None;
                        }
                        // The shell enrols the factor: the account moves on, and
                        // the tokens are bound to it as it now is.
                        (Model::Enroll, Model::Done) => {
                            account.version += 1;
                            account.totp = true;
                            account.backup_codes = true;
                            has.totp = true;
                            has.backup = true;
                            prop_assert_eq!(wizard_bound_after(&t.wizard), Some(account.version));
                        }
                        _ => {}
                    }
                    wizard = t.wizard;
                    model = next;
                }
                (Err(got), Err(want)) => prop_assert_eq!(got, want, "after {:?} in {:?}", request, model),
                (got, want) => prop_assert!(false, "{:?} in {:?}: got {:?}, model says {:?}", request, model, got.map(|t| t.wizard.step), want),
            }
            prop_assert_eq!(wizard.workflow(), workflow_of(model));
        }
        prop_assert!(tokens_issued <= 1, "one wizard, at most one token pair");
    }
}

fn wizard_bound_after(wizard: &Wizard) -> Option<u64> {
    wizard.bound().map(|b| b.version)
}

fn expect(
    model: Model,
    request: &Request,
    elapsed: i64,
    stale: bool,
    has: Has,
) -> Result<Model, Rejection> {
    if model == Model::Done {
        return Err(Rejection::Completed);
    }
    if elapsed >= TTL {
        return Err(Rejection::Expired);
    }
    let accepted = matches!(
        (model, request),
        (Model::Login, Request::Password { .. })
            | (Model::Choose, Request::Choose(_))
            | (Model::Totp, Request::Totp { .. })
            | (Model::Backup, Request::Backup { .. })
            | (Model::Enroll, Request::Enroll { .. })
            | (Model::Sms { .. }, Request::Sms { .. } | Request::Resend)
            | (Model::Login, Request::Forgot { .. })
            | (Model::Reset, Request::Restore)
            | (
                Model::ResetCode { .. },
                Request::Restore | Request::Reset { .. }
            )
    );
    if !accepted {
        return Err(Rejection::StepNotAllowed);
    }
    // Bound to the account as it was when the password was accepted.
    if stale {
        return Err(Rejection::AccountChanged);
    }
    let sms_step = Model::Sms {
        sent_at: elapsed,
        resends: 0,
    };
    match (model, request) {
        (Model::Login, Request::Password { correct: false }) => Err(Rejection::InvalidCredentials),
        (Model::Login, Request::Password { correct: true }) => {
            Ok(match (has.reset, has.factors().as_slice()) {
                (true, _) => Model::Reset,
                (false, []) if has.required => Model::Enroll,
                (false, []) => Model::Done,
                (false, [Factor::Totp]) => Model::Totp,
                (false, [Factor::Sms]) => sms_step,
                (false, _) => Model::Choose,
            })
        }
        (Model::Choose, Request::Choose(factor)) if !has.factors().contains(factor) => {
            Err(Rejection::FactorUnavailable)
        }
        (Model::Choose, Request::Choose(Factor::Totp)) => Ok(Model::Totp),
        (Model::Choose, Request::Choose(Factor::Sms)) => Ok(sms_step),
        (Model::Choose, Request::Choose(Factor::BackupCode)) => Ok(Model::Backup),
        (Model::Totp, Request::Totp { correct })
        | (Model::Backup, Request::Backup { correct })
        | (Model::Enroll, Request::Enroll { correct }) => {
            if *correct {
                Ok(Model::Done)
            } else {
                Err(Rejection::InvalidCode)
            }
        }
        (Model::Sms { sent_at, resends }, Request::Resend) => resent(sent_at, resends, elapsed)
            .map(|resends| Model::Sms {
                sent_at: elapsed,
                resends,
            }),
        (Model::Login, Request::Forgot { known }) => Ok(Model::ResetCode {
            sent_at: elapsed,
            resends: 0,
            known: *known,
        }),
        (Model::Reset, Request::Restore) => Ok(Model::ResetCode {
            sent_at: elapsed,
            resends: 0,
            known: true,
        }),
        (
            Model::ResetCode {
                sent_at,
                resends,
                known,
            },
            Request::Restore,
        ) => resent(sent_at, resends, elapsed).map(|resends| Model::ResetCode {
            sent_at: elapsed,
            resends,
            known,
        }),
        (Model::ResetCode { sent_at, known, .. }, Request::Reset { correct, reused }) => {
            if elapsed - sent_at >= RESET_CODE_TTL {
                Err(Rejection::CodeExpired)
            } else if !*correct || !known {
                // No code was sent to an address without an account.
                Err(Rejection::InvalidCode)
            } else if *reused {
                Err(Rejection::PasswordReused)
            } else {
                Ok(Model::Login)
            }
        }
        (Model::Sms { sent_at, .. }, Request::Sms { correct }) => {
            if elapsed - sent_at >= SMS_TTL {
                Err(Rejection::CodeExpired)
            } else if *correct {
                Ok(Model::Done)
            } else {
                Err(Rejection::InvalidCode)
            }
        }
        _ => Err(Rejection::StepNotAllowed),
    }
}

/// Codes sent again once one more is, or why not.
fn resent(sent_at: i64, resends: u32, elapsed: i64) -> Result<u32, Rejection> {
    if elapsed - sent_at < COOLDOWN {
        let retry_after_secs = u64::try_from(sent_at + COOLDOWN - elapsed).unwrap_or(0);
        Err(Rejection::ResendTooSoon { retry_after_secs })
    } else if resends >= MAX_RESENDS {
        Err(Rejection::ResendLimit)
    } else {
        Ok(resends + 1)
    }
}

fn workflow_of(model: Model) -> Workflow {
    match model {
        Model::Login => Workflow::Login,
        Model::Choose => Workflow::ChooseFactor,
        Model::Totp => Workflow::TotpCode,
        Model::Sms { .. } => Workflow::SmsCode,
        Model::Backup => Workflow::BackupCode,
        Model::Enroll => Workflow::EnrollTotp,
        Model::Reset => Workflow::ResetPassword,
        Model::ResetCode { .. } => Workflow::ResetCode,
        Model::Done => Workflow::Terminate,
    }
}
