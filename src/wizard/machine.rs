use super::model::{
    Account, Action, BoundUser, CodeChallenge, Factor, FreshCode, Rejection, SecretDigest, Step,
    Wizard,
};
use crate::credentials::{PasswordHash, StoredBackupCodes, StoredTotp};
use crate::domain::{DeviceFingerprint, OtpCode, PhoneNumber, UserId};
use chrono::{DateTime, Duration, Utc};

/// A verdict from the edges about one client request. Every event after
/// the password carries `account`: the bound user's record as it is now.
#[derive(Debug, Clone)]
pub enum Event {
    /// The password check: `None` when the email is unknown or the password wrong.
    Credentials {
        account: Option<Account>,
        fingerprint: DeviceFingerprint,
    },
    /// The client picked a factor.
    ChooseFactor { factor: Factor, account: Account },
    /// The TOTP check against the user's secret.
    TotpCode { account: Account, accepted: bool },
    /// The keyed digest of the SMS code the client typed.
    SmsCode {
        account: Account,
        digest: SecretDigest,
    },
    /// The client asks for a new SMS code.
    ResendSms { account: Account },
    /// The check of a backup code: `accepted` when it is one of the
    /// account's and was not used before (the shell claims it).
    BackupCode { account: Account, accepted: bool },
    /// The first code of the app being enrolled, checked against the
    /// step's secret, and the backup codes drawn to go with the factor.
    EnrollTotp {
        account: Account,
        accepted: bool,
        backup_codes: StoredBackupCodes,
    },
    /// A reset code for the email typed at the login screen, whose account
    /// (`None`: no account has it) is not bound: nothing is proven yet.
    ForgotPassword { account: Option<Account> },
    /// A reset code (again) for the account the wizard names, as it is now.
    RestorePassword { account: Option<Account> },
    /// The keyed digest of the reset code the client typed, and what the
    /// edges made of the new password (checked only once the code matched).
    ResetPassword {
        account: Option<Account>,
        digest: SecretDigest,
        password: NewPasswordCheck,
    },
}

/// The new password of a reset, as the edges judged it. The code is
/// checked first (cheaply), and only a matching code pays for argon2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewPasswordCheck {
    /// Not looked at: the code did not match, or no account has the email.
    Unchecked,
    /// It is the account's current password.
    Reused,
    Hashed(PasswordHash),
}

impl Event {
    pub fn action(&self) -> Action {
        match self {
            Event::Credentials { .. } => Action::Credentials,
            Event::ChooseFactor { .. } => Action::ChooseFactor,
            Event::TotpCode { .. } => Action::TotpCode,
            Event::SmsCode { .. } => Action::SmsCode,
            Event::ResendSms { .. } => Action::ResendSms,
            Event::BackupCode { .. } => Action::BackupCode,
            Event::EnrollTotp { .. } => Action::EnrollTotp,
            Event::ForgotPassword { .. } => Action::ForgotPassword,
            Event::RestorePassword { .. } => Action::RestorePassword,
            Event::ResetPassword { .. } => Action::ResetPassword,
        }
    }

    /// The bound user's current record, for the events that come after the password.
    fn current_account(&self) -> Option<&Account> {
        match self {
            Event::Credentials { .. } | Event::ForgotPassword { .. } => None,
            Event::ChooseFactor { account, .. }
            | Event::TotpCode { account, .. }
            | Event::SmsCode { account, .. }
            | Event::ResendSms { account }
            | Event::BackupCode { account, .. }
            | Event::EnrollTotp { account, .. } => Some(account),
            Event::RestorePassword { account } | Event::ResetPassword { account, .. } => {
                account.as_ref()
            }
        }
    }
}

/// Everything a transition needs besides the wizard and the event.
#[derive(Debug, Clone)]
pub struct Context {
    pub now: DateTime<Utc>,
    pub sms_code_ttl: Duration,
    /// Lifetime of an emailed reset code (never beyond its wizard's).
    pub reset_code_ttl: Duration,
    /// Least time between two codes (SMS or email) of one wizard.
    pub resend_cooldown: Duration,
    /// Codes one wizard may have sent again.
    pub max_resends: u32,
    /// Used only if this transition sends an SMS code.
    pub fresh_code: FreshCode,
    /// Used only if this transition emails a reset code.
    pub fresh_reset_code: FreshCode,
    /// The settings ask every account to have a second factor.
    pub second_factor_required: bool,
    /// A new authenticator-app secret, sealed to the account the password
    /// step is about, in case it must enrol one (drawn for that step only).
    pub fresh_totp: Option<StoredTotp>,
}

/// A side effect for the shell, performed only after the new state is saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    SendSms {
        to: PhoneNumber,
        code: OtpCode,
    },
    /// Email the reset code to the address the wizard names; `from_login`
    /// (anyone may have typed the address): only within its allowance.
    EmailResetCode {
        code: OtpCode,
        expires_at: DateTime<Utc>,
        from_login: bool,
    },
    /// Tell the address typed at login that no account uses it (so that
    /// the answer, and its cost, are those of an address that has one).
    EmailNoAccount,
    /// Store the new password (the account stays at `user.version` until
    /// then, or the step is undone), clear a forced reset, end every session.
    SetPassword {
        user: BoundUser,
        hash: PasswordHash,
    },
    /// Store the enrolled secret and the backup codes on the account
    /// (at `user.version`, which moves on). Written before the wizard
    /// moves: a crash between them leaves the factor on and the wizard
    /// stale, never tokens without the factor.
    EnableTotp {
        user: BoundUser,
        secret: StoredTotp,
        backup_codes: StoredBackupCodes,
    },
    IssueTokens {
        user: UserId,
    },
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub wizard: Wizard,
    pub effects: Vec<Effect>,
}

/// Computes the wizard that follows `event`, or why the event is refused.
/// A refusal never changes the wizard.
pub fn transition(wizard: &Wizard, event: Event, ctx: &Context) -> Result<Transition, Rejection> {
    wizard.admits(event.action(), ctx.now)?;
    wizard.still_bound_to(event.current_account())?;
    let mut fingerprint = wizard.fingerprint.clone();
    let (step, effects) = match (&wizard.step, event) {
        (
            Step::Login,
            Event::Credentials {
                account,
                fingerprint: presented,
            },
        ) => {
            let account = account.ok_or(Rejection::InvalidCredentials)?;
            fingerprint = Some(presented);
            after_password(account, ctx)?
        }
        (Step::ChooseFactor { user }, Event::ChooseFactor { factor, account }) => {
            enter(factor, *user, account, ctx)?
        }
        (Step::TotpCode { user }, Event::TotpCode { accepted, .. })
        | (Step::BackupCode { user }, Event::BackupCode { accepted, .. }) => {
            if !accepted {
                return Err(Rejection::InvalidCode);
            }
            terminate(*user)
        }
        (
            Step::EnrollTotp { user, secret },
            Event::EnrollTotp {
                accepted,
                backup_codes,
                ..
            },
        ) => {
            if !accepted {
                return Err(Rejection::InvalidCode);
            }
            // The tokens are for the account with its new factor.
            let enrolled = BoundUser {
                id: user.id,
                version: user.version + 1,
            };
            let enable = Effect::EnableTotp {
                user: *user,
                secret: secret.clone(),
                backup_codes,
            };
            let (step, issue) = terminate(enrolled);
            (step, [vec![enable], issue].concat())
        }
        (Step::SmsCode { user, challenge }, Event::SmsCode { digest, .. }) => {
            challenge.check(&digest, ctx.now)?;
            terminate(*user)
        }
        (Step::SmsCode { user, challenge }, Event::ResendSms { account }) => {
            let phone = account.phone.ok_or(Rejection::FactorUnavailable)?;
            send_sms(
                *user,
                phone,
                ctx,
                challenge.resend(ctx.now, ctx.resend_cooldown, ctx.max_resends)?,
            )
        }
        (Step::Login, Event::ForgotPassword { account }) => {
            email_reset_code(account.map(|a| a.binding()), true, wizard, ctx, 0)
        }
        (Step::ResetPassword { user }, Event::RestorePassword { .. }) => {
            email_reset_code(Some(*user), false, wizard, ctx, 0)
        }
        (
            Step::ResetCode {
                user,
                challenge,
                from_login,
            },
            Event::RestorePassword { .. },
        ) => email_reset_code(
            *user,
            *from_login,
            wizard,
            ctx,
            challenge.resend(ctx.now, ctx.resend_cooldown, ctx.max_resends)?,
        ),
        (
            Step::ResetCode {
                user, challenge, ..
            },
            Event::ResetPassword {
                digest, password, ..
            },
        ) => {
            challenge.check(&digest, ctx.now)?;
            // No code went out for an address without an account.
            let user = user.ok_or(Rejection::InvalidCode)?;
            let hash = match password {
                NewPasswordCheck::Hashed(hash) => hash,
                NewPasswordCheck::Reused => return Err(Rejection::PasswordReused),
                NewPasswordCheck::Unchecked => return Err(Rejection::InvalidCode),
            };
            // Back to the login step, for the new password: nothing of the
            // old attempt (device, account) carries over.
            fingerprint = None;
            (Step::Login, vec![Effect::SetPassword { user, hash }])
        }
        // `admits` has already refused every other pairing; stay defensive.
        (
            Step::Login
            | Step::ChooseFactor { .. }
            | Step::TotpCode { .. }
            | Step::SmsCode { .. }
            | Step::BackupCode { .. }
            | Step::EnrollTotp { .. }
            | Step::ResetPassword { .. }
            | Step::ResetCode { .. }
            | Step::Terminated { .. },
            _,
        ) => return Err(Rejection::StepNotAllowed),
    };
    Ok(Transition {
        wizard: Wizard {
            step,
            fingerprint,
            ..wizard.clone()
        },
        effects,
    })
}

fn after_password(account: Account, ctx: &Context) -> Result<(Step, Vec<Effect>), Rejection> {
    let user = account.binding();
    if account.must_reset_password {
        return Ok((Step::ResetPassword { user }, vec![]));
    }
    match account.factors().as_slice() {
        [] if ctx.second_factor_required || account.second_factor_required => {
            // Drawn for every password step that finds an account.
            let secret = ctx.fresh_totp.clone().ok_or(Rejection::FactorUnavailable)?;
            Ok((Step::EnrollTotp { user, secret }, vec![]))
        }
        [] => Ok(terminate(user)),
        [only] => enter(*only, user, account, ctx),
        [_, _, ..] => Ok((Step::ChooseFactor { user }, vec![])),
    }
}

/// The step that asks for `factor`'s code, if the account has that factor.
fn enter(
    factor: Factor,
    user: BoundUser,
    account: Account,
    ctx: &Context,
) -> Result<(Step, Vec<Effect>), Rejection> {
    if !account.factors().contains(&factor) {
        return Err(Rejection::FactorUnavailable);
    }
    match (factor, account.phone) {
        (Factor::Totp, _) => Ok((Step::TotpCode { user }, vec![])),
        (Factor::Sms, Some(phone)) => Ok(send_sms(user, phone, ctx, 0)),
        (Factor::BackupCode, _) => Ok((Step::BackupCode { user }, vec![])),
        (Factor::Sms, None) => Err(Rejection::FactorUnavailable),
    }
}

/// A new code replaces any earlier one: only the latest is ever valid.
fn send_sms(user: BoundUser, to: PhoneNumber, ctx: &Context, resends: u32) -> (Step, Vec<Effect>) {
    let challenge = CodeChallenge {
        digest: ctx.fresh_code.digest.clone(),
        sent_at: ctx.now,
        expires_at: ctx.now + ctx.sms_code_ttl,
        resends,
    };
    let effect = Effect::SendSms {
        to,
        code: ctx.fresh_code.code.clone(),
    };
    (Step::SmsCode { user, challenge }, vec![effect])
}

/// Emails a reset code (or, to an address without an account, a notice;
/// the wizard waits for a code either way). A new code replaces any
/// earlier one, and none outlives the wizard.
fn email_reset_code(
    user: Option<BoundUser>,
    from_login: bool,
    wizard: &Wizard,
    ctx: &Context,
    resends: u32,
) -> (Step, Vec<Effect>) {
    let challenge = CodeChallenge {
        digest: ctx.fresh_reset_code.digest.clone(),
        sent_at: ctx.now,
        expires_at: (ctx.now + ctx.reset_code_ttl).min(wizard.expires_at),
        resends,
    };
    let effect = match user {
        Some(_) => Effect::EmailResetCode {
            code: ctx.fresh_reset_code.code.clone(),
            expires_at: challenge.expires_at,
            from_login,
        },
        None => Effect::EmailNoAccount,
    };
    let step = Step::ResetCode {
        user,
        challenge,
        from_login,
    };
    (step, vec![effect])
}

fn terminate(user: BoundUser) -> (Step, Vec<Effect>) {
    (
        Step::Terminated { user },
        vec![Effect::IssueTokens { user: user.id }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{WizardId, WizardKey};
    use crate::wizard::Workflow;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn ctx_at(now: DateTime<Utc>) -> Context {
        Context {
            now,
            sms_code_ttl: Duration::minutes(5),
            reset_code_ttl: Duration::minutes(10),
            resend_cooldown: Duration::seconds(30),
            max_resends: 2,
            fresh_code: FreshCode {
                code: OtpCode::parse("123456").unwrap(),
                digest: SecretDigest::new([7; 32]),
            },
            fresh_reset_code: FreshCode {
                code: OtpCode::parse_reset("12345678").unwrap(),
                digest: SecretDigest::new([7; 32]),
            },
            second_factor_required: false,
            fresh_totp: Some(secret()),
        }
    }

    fn secret() -> StoredTotp {
        serde_json::from_str(r#""GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ""#).unwrap()
    }

    fn account(totp: bool, sms: bool, reset: bool) -> Account {
        Account {
            id: UserId::random(),
            version: 1,
            totp,
            phone: sms.then(|| PhoneNumber::parse("+15550001111").unwrap()),
            backup_codes: false,
            must_reset_password: reset,
            second_factor_required: false,
        }
    }

    fn fresh() -> Wizard {
        Wizard::start(
            WizardId::random(),
            &WizardKey::generate(),
            now(),
            Duration::minutes(10),
        )
    }

    fn fingerprint() -> DeviceFingerprint {
        DeviceFingerprint::parse("eyJ1c2VyX2FnZW50IjoidGVzdCJ9").unwrap()
    }

    fn creds(account: Option<Account>) -> Event {
        Event::Credentials {
            account,
            fingerprint: fingerprint(),
        }
    }

    fn login(acc: &Account) -> Transition {
        transition(&fresh(), creds(Some(acc.clone())), &ctx_at(now())).unwrap()
    }

    /// At `2fa` (`w`), the account chooses SMS.
    fn choose_sms(w: &Wizard, acc: &Account) -> Wizard {
        let event = Event::ChooseFactor {
            factor: Factor::Sms,
            account: acc.clone(),
        };
        transition(w, event, &ctx_at(now())).unwrap().wizard
    }

    #[test]
    fn password_leads_to_the_step_the_account_needs() {
        let cases = [
            ((false, false, false), Workflow::Terminate),
            ((true, false, false), Workflow::TotpCode),
            ((false, true, false), Workflow::SmsCode),
            ((true, true, false), Workflow::ChooseFactor),
            ((true, true, true), Workflow::ResetPassword),
        ];
        for ((totp, sms, reset), expected) in cases {
            let t = login(&account(totp, sms, reset));
            assert_eq!(t.wizard.fingerprint, Some(fingerprint()));
            assert_eq!(
                t.wizard.workflow(),
                expected,
                "totp={totp} sms={sms} reset={reset}"
            );
        }
    }

    #[test]
    fn tokens_only_at_terminate_and_sms_only_when_needed() {
        let plain = login(&account(false, false, false));
        assert!(matches!(
            plain.effects.as_slice(),
            [Effect::IssueTokens { .. }]
        ));
        let sms = login(&account(false, true, false));
        assert!(matches!(sms.effects.as_slice(), [Effect::SendSms { .. }]));
        assert!(login(&account(true, true, false)).effects.is_empty());
    }

    #[test]
    fn backup_codes_are_a_factor_of_their_own_beside_another() {
        let with_codes = |totp, sms| Account {
            backup_codes: true,
            ..account(totp, sms, false)
        };
        let acc = with_codes(true, false);
        assert_eq!(acc.factors(), [Factor::Totp, Factor::BackupCode]);
        let w = login(&acc).wizard;
        assert_eq!(w.workflow(), Workflow::ChooseFactor, "app or backup code");
        let chosen = transition(
            &w,
            Event::ChooseFactor {
                factor: Factor::BackupCode,
                account: acc.clone(),
            },
            &ctx_at(now()),
        )
        .unwrap()
        .wizard;
        assert_eq!(chosen.workflow(), Workflow::BackupCode);
        let code = |accepted| Event::BackupCode {
            account: acc.clone(),
            accepted,
        };
        assert_eq!(
            transition(&chosen, code(false), &ctx_at(now())).unwrap_err(),
            Rejection::InvalidCode
        );
        let done = transition(&chosen, code(true), &ctx_at(now())).unwrap();
        assert_eq!(done.effects, vec![Effect::IssueTokens { user: acc.id }]);
        // Without another factor, backup codes are no way in.
        let alone = with_codes(false, false);
        assert!(alone.factors().is_empty());
        assert_eq!(login(&alone).wizard.workflow(), Workflow::Terminate);
    }

    #[test]
    fn a_required_second_factor_is_enrolled_before_any_token() {
        let by_admin = Account {
            second_factor_required: true,
            ..account(false, false, false)
        };
        let by_policy = Context {
            second_factor_required: true,
            ..ctx_at(now())
        };
        let plain = account(false, false, false);
        let admin_w = login(&by_admin).wizard;
        let policy_t = transition(&fresh(), creds(Some(plain.clone())), &by_policy).unwrap();
        for w in [&admin_w, &policy_t.wizard] {
            assert_eq!(w.workflow(), Workflow::EnrollTotp);
            assert!(matches!(&w.step, Step::EnrollTotp { secret: s, .. } if *s == secret()));
        }
        assert!(policy_t.effects.is_empty(), "no token yet");
        // An account that has a factor signs in with it, required or not.
        let has_one = transition(
            &fresh(),
            creds(Some(account(true, false, false))),
            &by_policy,
        );
        assert_eq!(has_one.unwrap().wizard.workflow(), Workflow::TotpCode);
        let enrol = |accepted| Event::EnrollTotp {
            account: by_admin.clone(),
            accepted,
            backup_codes: StoredBackupCodes {
                generation: 9,
                digests: vec![SecretDigest::new([1; 32])],
            },
        };
        assert_eq!(
            transition(&admin_w, enrol(false), &ctx_at(now())).unwrap_err(),
            Rejection::InvalidCode
        );
        let done = transition(&admin_w, enrol(true), &ctx_at(now())).unwrap();
        let moved_on = BoundUser {
            id: by_admin.id,
            version: by_admin.version + 1,
        };
        assert_eq!(
            done.wizard.bound(),
            Some(moved_on),
            "tokens for the account as enrolled"
        );
        assert!(matches!(
            done.effects.as_slice(),
            [Effect::EnableTotp { user, secret: s, backup_codes }, Effect::IssueTokens { user: issued }]
                if *user == by_admin.binding() && *s == secret() && backup_codes.generation == 9 && *issued == by_admin.id
        ));
        // No secret drawn (never so for a found account): refused, not skipped.
        let no_secret = Context {
            fresh_totp: None,
            ..by_policy
        };
        assert_eq!(
            transition(&fresh(), creds(Some(plain)), &no_secret).unwrap_err(),
            Rejection::FactorUnavailable
        );
    }

    #[test]
    fn wrong_password_changes_nothing() {
        let w = fresh();
        let err = transition(&w, creds(None), &ctx_at(now()));
        assert_eq!(err.unwrap_err(), Rejection::InvalidCredentials);
    }

    #[test]
    fn choosing_a_factor_then_finishing() {
        let acc = account(true, true, false);
        let w = login(&acc).wizard;
        let chosen = choose_sms(&w, &acc);
        assert_eq!(chosen.workflow(), Workflow::SmsCode);
        let wrong = SecretDigest::new([8; 32]);
        let err = transition(
            &chosen,
            Event::SmsCode {
                account: acc.clone(),
                digest: wrong,
            },
            &ctx_at(now()),
        );
        assert_eq!(err.unwrap_err(), Rejection::InvalidCode);
        let right = SecretDigest::new([7; 32]);
        let done = transition(
            &chosen,
            Event::SmsCode {
                account: acc.clone(),
                digest: right,
            },
            &ctx_at(now()),
        )
        .unwrap();
        assert_eq!(done.effects, vec![Effect::IssueTokens { user: acc.id }]);
    }

    #[test]
    fn sms_code_expires() {
        let acc = account(false, true, false);
        let w = login(&acc).wizard;
        let later = ctx_at(now() + Duration::minutes(5));
        let err = transition(
            &w,
            Event::SmsCode {
                account: acc,
                digest: SecretDigest::new([7; 32]),
            },
            &later,
        );
        assert_eq!(err.unwrap_err(), Rejection::CodeExpired);
    }

    #[test]
    fn resending_waits_for_the_cooldown_and_stops_at_the_cap() {
        let acc = account(false, true, false);
        let mut w = login(&acc).wizard;
        let resend = || Event::ResendSms {
            account: acc.clone(),
        };
        let soon = transition(&w, resend(), &ctx_at(now() + Duration::seconds(10)));
        assert_eq!(
            soon.unwrap_err(),
            Rejection::ResendTooSoon {
                retry_after_secs: 20
            }
        );
        for n in 1..=2 {
            let t = transition(&w, resend(), &ctx_at(now() + Duration::seconds(30 * n))).unwrap();
            assert!(matches!(t.effects.as_slice(), [Effect::SendSms { .. }]));
            w = t.wizard;
        }
        let capped = transition(&w, resend(), &ctx_at(now() + Duration::seconds(120)));
        assert_eq!(capped.unwrap_err(), Rejection::ResendLimit);
    }

    #[test]
    fn a_known_device_must_stay_the_same() {
        let w = login(&account(true, false, false)).wizard;
        let other = DeviceFingerprint::parse("eyJ1c2VyX2FnZW50Ijoib3RoZXIifQ").unwrap();
        assert_eq!(
            w.same_device(Some(&other), false),
            Err(Rejection::DeviceMismatch)
        );
        assert_eq!(w.same_device(Some(&fingerprint()), false), Ok(()));
        assert_eq!(w.same_device(None, false), Ok(()));
        assert_eq!(w.same_device(None, true), Err(Rejection::DeviceMismatch));
        assert_eq!(w.same_device(Some(&fingerprint()), true), Ok(()));
    }

    #[test]
    fn factor_must_be_available() {
        let acc = account(true, true, false);
        let w = login(&acc).wizard;
        let without_phone = Account { phone: None, ..acc };
        let err = transition(
            &w,
            Event::ChooseFactor {
                factor: Factor::Sms,
                account: without_phone,
            },
            &ctx_at(now()),
        );
        assert_eq!(err.unwrap_err(), Rejection::FactorUnavailable);
    }

    #[test]
    fn out_of_order_completed_and_expired_requests_are_refused() {
        let w = fresh();
        let code = Event::TotpCode {
            account: account(true, false, false),
            accepted: true,
        };
        assert_eq!(
            transition(&w, code.clone(), &ctx_at(now())).unwrap_err(),
            Rejection::StepNotAllowed
        );
        let late = ctx_at(now() + Duration::minutes(10));
        let again = creds(Some(account(false, false, false)));
        assert_eq!(
            transition(&w, again.clone(), &late).unwrap_err(),
            Rejection::Expired
        );
        let done = login(&account(false, false, false)).wizard;
        assert_eq!(
            transition(&done, again, &ctx_at(now())).unwrap_err(),
            Rejection::Completed
        );
        let reset = login(&account(true, false, true)).wizard;
        assert_eq!(
            transition(&reset, code, &ctx_at(now())).unwrap_err(),
            Rejection::StepNotAllowed
        );
    }

    #[test]
    fn a_changed_or_deleted_account_stops_a_bound_wizard() {
        let acc = account(true, true, false);
        let w = login(&acc).wizard;
        assert_eq!(w.bound(), Some(acc.binding()));
        let changed = Account {
            version: acc.version + 1,
            ..acc.clone()
        };
        let chosen = choose_sms(&w, &acc);
        for (wizard, event) in [
            (
                &w,
                Event::ChooseFactor {
                    factor: Factor::Totp,
                    account: changed.clone(),
                },
            ),
            (
                &chosen,
                Event::SmsCode {
                    account: changed.clone(),
                    digest: SecretDigest::new([7; 32]),
                },
            ),
        ] {
            assert_eq!(
                transition(wizard, event, &ctx_at(now())).unwrap_err(),
                Rejection::AccountChanged
            );
        }
        assert_eq!(w.still_bound_to(None), Err(Rejection::AccountChanged));
        assert_eq!(w.still_bound_to(Some(&acc)), Ok(()));
        assert_eq!(fresh().still_bound_to(None), Ok(()), "nothing bound yet");
    }

    fn reset(
        w: &Wizard,
        acc: &Account,
        digest: [u8; 32],
        password: NewPasswordCheck,
    ) -> Result<Transition, Rejection> {
        let event = Event::ResetPassword {
            account: Some(acc.clone()),
            digest: SecretDigest::new(digest),
            password,
        };
        transition(w, event, &ctx_at(now()))
    }

    fn new_hash() -> NewPasswordCheck {
        NewPasswordCheck::Hashed(serde_json::from_str(r#""$argon2id$new""#).unwrap())
    }

    #[test]
    fn a_forced_reset_emails_a_code_and_a_reset_returns_to_login() {
        let acc = account(true, false, true);
        let w = login(&acc).wizard;
        let sent = transition(
            &w,
            Event::RestorePassword {
                account: Some(acc.clone()),
            },
            &ctx_at(now()),
        )
        .unwrap();
        assert_eq!(sent.wizard.workflow(), Workflow::ResetCode);
        assert!(matches!(
            sent.effects.as_slice(),
            [Effect::EmailResetCode { .. }]
        ));
        let w = sent.wizard;
        for (digest, password, rejection) in [
            ([8; 32], new_hash(), Rejection::InvalidCode),
            ([7; 32], NewPasswordCheck::Reused, Rejection::PasswordReused),
            ([7; 32], NewPasswordCheck::Unchecked, Rejection::InvalidCode),
        ] {
            assert_eq!(reset(&w, &acc, digest, password).unwrap_err(), rejection);
        }
        let done = reset(&w, &acc, [7; 32], new_hash()).unwrap();
        assert_eq!(done.wizard.workflow(), Workflow::Login);
        assert_eq!(
            done.wizard.fingerprint, None,
            "the next password names its device anew"
        );
        assert!(!done.wizard.names_account());
        assert!(matches!(
            done.effects.as_slice(),
            [Effect::SetPassword { user, .. }] if *user == acc.binding()
        ));
    }

    #[test]
    fn an_unknown_address_gets_a_notice_and_no_code_works() {
        let w = fresh();
        let t = transition(&w, Event::ForgotPassword { account: None }, &ctx_at(now())).unwrap();
        assert_eq!(t.wizard.workflow(), Workflow::ResetCode);
        assert!(t.wizard.names_account() && t.wizard.bound().is_none());
        assert_eq!(t.effects, vec![Effect::EmailNoAccount]);
        let acc = account(false, false, false);
        let event = Event::ResetPassword {
            account: None,
            digest: SecretDigest::new([7; 32]),
            password: new_hash(),
        };
        let err = transition(&t.wizard, event, &ctx_at(now())).unwrap_err();
        assert_eq!(err, Rejection::InvalidCode, "not even the drawn code");
        // A known address is bound at its version, and a change stops the reset.
        let known = transition(
            &w,
            Event::ForgotPassword {
                account: Some(acc.clone()),
            },
            &ctx_at(now()),
        )
        .unwrap()
        .wizard;
        assert_eq!(known.bound(), Some(acc.binding()));
        let changed = Account {
            version: acc.version + 1,
            ..acc
        };
        assert_eq!(
            reset(&known, &changed, [7; 32], new_hash()).unwrap_err(),
            Rejection::AccountChanged
        );
    }

    #[test]
    fn a_reset_code_expires_and_never_outlives_its_wizard() {
        let acc = account(false, false, false);
        let forgot = || Event::ForgotPassword {
            account: Some(acc.clone()),
        };
        let late = transition(&fresh(), forgot(), &ctx_at(now() + Duration::minutes(4)))
            .unwrap()
            .wizard;
        let Step::ResetCode { challenge, .. } = &late.step else {
            panic!("{:?}", late.step)
        };
        assert_eq!(
            challenge.expires_at, late.expires_at,
            "capped by the wizard's end"
        );
        let short = Context {
            reset_code_ttl: Duration::minutes(3),
            ..ctx_at(now())
        };
        let w = transition(&fresh(), forgot(), &short).unwrap().wizard;
        let event = Event::ResetPassword {
            account: Some(acc.clone()),
            digest: SecretDigest::new([7; 32]),
            password: new_hash(),
        };
        let after = ctx_at(now() + Duration::minutes(3));
        assert_eq!(
            transition(&w, event, &after).unwrap_err(),
            Rejection::CodeExpired
        );
    }

    #[test]
    fn wizard_round_trips_through_json() {
        let w = login(&account(false, true, false)).wizard;
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<Wizard>(&json).unwrap(), w);
        // A step stored before accounts had versions is bound at version 0.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(old["step"]["user_version"], 1);
        old["step"].as_object_mut().unwrap().remove("user_version");
        let read: Wizard = serde_json::from_value(old).unwrap();
        assert_eq!(read.bound().map(|b| b.version), Some(0));
    }
}
