//! `wizard-spec/wizard.json` is the truth: these tests fail when the spec
//! and the code disagree, in either direction (a state, request, error code
//! or route in one and not the other), and when the embedded diagrams are
//! not what `signin-wizard spec mermaid` prints.

use crate::helpers::{Backend, spawn_app};
use chrono::{Duration, Utc};
use reqwest::StatusCode;
use signin_wizard::credentials::{StoredTotp, TotpSecret};
use signin_wizard::domain::{UserId, WizardId, WizardKey};
use signin_wizard::http::ErrorKind;
use signin_wizard::spec::{self, Spec};
use signin_wizard::wizard::{
    Action, BoundUser, CodeChallenge, Rejection, SecretDigest, Step, Wizard, Workflow,
};
use std::collections::BTreeSet;
use strum::IntoEnumIterator;

fn spec() -> Spec {
    Spec::load().expect("wizard-spec/wizard.json reads")
}

/// A step of each workflow (a new workflow must be added here, and to the spec).
fn step_of(workflow: Workflow) -> Step {
    let user = BoundUser {
        id: UserId::random(),
        version: 1,
    };
    let challenge = CodeChallenge {
        digest: SecretDigest::new([0; 32]),
        sent_at: Utc::now(),
        expires_at: Utc::now(),
        resends: 0,
    };
    match workflow {
        Workflow::Login => Step::Login,
        Workflow::ChooseFactor => Step::ChooseFactor { user },
        Workflow::TotpCode => Step::TotpCode { user },
        Workflow::SmsCode => Step::SmsCode { user, challenge },
        Workflow::ResetPassword => Step::ResetPassword { user },
        Workflow::ResetCode => Step::ResetCode {
            user: Some(user),
            challenge,
            from_login: true,
        },
        Workflow::BackupCode => Step::BackupCode { user },
        Workflow::EnrollTotp => Step::EnrollTotp {
            user,
            secret: StoredTotp::Clear(TotpSecret::generate()),
        },
        Workflow::Terminate => Step::Terminated { user },
    }
}

/// The spec's name for each request the machine knows.
fn request_name(action: Action) -> &'static str {
    match action {
        Action::Credentials => "credentials",
        Action::ChooseFactor => "choose_factor",
        Action::TotpCode => "totp_code",
        Action::SmsCode => "sms_code",
        Action::ResendSms => "resend_sms",
        Action::BackupCode => "backup_code",
        Action::EnrollTotp => "enroll_totp",
        // One route: with the email typed at login, without it later.
        Action::ForgotPassword | Action::RestorePassword => "restore_password",
        Action::ResetPassword => "reset_password",
    }
}

#[test]
fn every_state_is_in_the_spec_with_its_workflow_and_the_requests_it_accepts() {
    let spec = spec();
    let now = Utc::now();
    let mut in_code = BTreeSet::new();
    for workflow in Workflow::iter() {
        let wizard = Wizard {
            step: step_of(workflow),
            ..Wizard::start(
                WizardId::random(),
                &WizardKey::generate(),
                now,
                Duration::minutes(10),
            )
        };
        let name = serde_json::to_value(&wizard.step).unwrap()["step"]
            .as_str()
            .unwrap()
            .to_owned();
        let accepts: BTreeSet<&str> = Action::iter()
            .filter(|a| wizard.admits(*a, now).is_ok())
            .map(request_name)
            .collect();
        in_code.insert((name, workflow.as_str().to_owned(), accepts));
    }
    let in_spec: BTreeSet<_> = spec
        .states
        .iter()
        .map(|s| {
            let accepts = s
                .accepts
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<_>>();
            (s.step.clone(), s.workflow.clone(), accepts)
        })
        .collect();
    assert_eq!(in_code, in_spec);
}

#[test]
fn every_request_is_in_the_spec_and_every_spec_request_is_the_machines() {
    let in_code: BTreeSet<&str> = std::iter::once("start")
        .chain(Action::iter().map(request_name))
        .collect();
    let spec = spec();
    let in_spec: BTreeSet<&str> = spec.requests.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(in_code, in_spec);
}

#[test]
fn every_error_code_and_status_is_in_the_spec_and_nothing_else_is() {
    let in_code: BTreeSet<(&str, u16)> = ErrorKind::iter()
        .map(|kind| (kind.code(), kind.status().as_u16()))
        .collect();
    let spec = spec();
    let in_spec: BTreeSet<(&str, u16)> = spec
        .rejections
        .iter()
        .chain(&spec.shell_errors)
        .chain(&spec.other_errors)
        .map(|e| (e.error.as_str(), e.status))
        .collect();
    assert_eq!(in_code, in_spec);

    // And every rejection of the machine is among the spec's rejections.
    let rejections: BTreeSet<&str> = spec.rejections.iter().map(|e| e.error.as_str()).collect();
    for rejection in Rejection::iter() {
        let code = ErrorKind::from(rejection).code();
        assert!(
            rejections.contains(code),
            "{rejection:?} ({code}) is not a rejection in the spec"
        );
    }
}

#[test]
fn transitions_name_known_states_requests_and_effects() {
    let spec = spec();
    let state = |name: &str| spec.states.iter().find(|s| s.step == name);
    for t in &spec.transitions {
        let to = state(&t.to).unwrap_or_else(|| panic!("unknown state {}", t.to));
        assert!(!to.step.is_empty());
        match &t.from {
            Some(from) => {
                let from = state(from).unwrap_or_else(|| panic!("unknown state {from}"));
                assert!(
                    from.accepts.contains(&t.request),
                    "{} does not accept {}",
                    from.step,
                    t.request
                );
            }
            None => assert_eq!(t.request, "start"),
        }
        for effect in &t.effects {
            assert!(spec.effects.contains_key(effect), "unknown effect {effect}");
        }
    }
}

#[tokio::test]
async fn every_spec_request_is_routed_and_the_spec_is_served() {
    let app = spawn_app(Backend::Memory).await;
    for request in spec().requests {
        let url = format!("{}{}", app.address, request.path);
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap();
        let response = app
            .client
            .request(method, url)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED
                && body["data"]["error"]["code"] != "route_not_found",
            "{} {}: {status} {body}",
            request.method,
            request.path
        );
    }
    let served = app.get("/api/v2/my/signin/wizard/spec").await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(
        served.body,
        serde_json::from_str::<serde_json::Value>(spec::JSON).unwrap()
    );
}

#[test]
fn the_embedded_diagrams_are_what_spec_mermaid_prints() {
    let fenced = format!("```mermaid\n{}```", spec().mermaid());
    for document in ["README.md", "wizard-spec/README.md"] {
        let text = std::fs::read_to_string(document).unwrap();
        assert!(
            text.contains(&fenced),
            "{document} does not embed the output of `signin-wizard spec mermaid`:\n{fenced}"
        );
    }
}

/// `meta.next` lists what the wizard accepts at its step, from the spec,
/// on successes and on errors alike.
#[tokio::test]
async fn every_envelope_says_what_may_come_next() {
    let app = spawn_app(Backend::Memory).await;
    let user = app
        .create_user(crate::helpers::UserSpec {
            totp: true,
            phone: Some("+15550100777"),
            ..Default::default()
        })
        .await;
    let next = |reply: &crate::helpers::Reply| -> Vec<(String, String, String)> {
        reply.body["meta"]["next"]
            .as_array()
            .unwrap_or_else(|| panic!("no meta.next: {}", reply.body))
            .iter()
            .map(|n| {
                let field = |k: &str| n[k].as_str().unwrap().to_owned();
                (field("request"), field("method"), field("path"))
            })
            .collect()
    };
    let spec = spec();
    let expected = |names: &[&str]| -> Vec<(String, String, String)> {
        names
            .iter()
            .map(|name| {
                let r = spec.requests.iter().find(|r| r.name == *name).unwrap();
                (r.name.clone(), r.method.clone(), r.path.clone())
            })
            .collect()
    };

    let started = app.get("/api/v2/my/signin/wizard").await;
    let at_login = expected(&["credentials", "restore_password"]);
    assert_eq!(next(&started), at_login);
    let uuid = started.body["uuid"].as_str().unwrap().to_owned();
    let wrong = app.signin(&uuid, &user.email, "wrong").await;
    assert_eq!(next(&wrong), at_login, "errors too");
    let reply = app.signin(&uuid, &user.email, &user.password).await;
    assert_eq!(next(&reply), expected(&["choose_factor"]));
    let reply = app.choose(&uuid, "sms").await;
    assert_eq!(next(&reply), expected(&["sms_code", "resend_sms"]));
    let reply = app.sms_code(&uuid, &app.sms_code_of(&user)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(next(&reply), expected(&[]));
}

/// The numbers wizard-spec/ states about sessions and keys are the code's.
#[test]
fn the_spec_states_the_session_and_key_constants_the_code_uses() {
    use signin_wizard::sessions::{MAX_SESSIONS, RACE_WINDOW};
    use signin_wizard::signing_keys::PUBLISH_AHEAD;
    let spec: serde_json::Value = serde_json::from_str(spec::JSON).unwrap();
    let at = |pointer: &str| {
        spec.pointer(pointer)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or_else(|| panic!("wizard.json has no number at {pointer}"))
    };
    assert_eq!(
        at("/sessions/lifetimes/race_window_secs/value"),
        RACE_WINDOW.num_seconds()
    );
    assert_eq!(
        at("/sessions/max_sessions_per_user"),
        i64::from(MAX_SESSIONS)
    );
    assert_eq!(at("/keys/publish_ahead_secs"), PUBLISH_AHEAD.num_seconds());
    let settings = signin_wizard::config::Settings::from_env().unwrap();
    assert_eq!(
        at("/sessions/lifetimes/absolute/default"),
        i64::from(settings.session_lifetime_secs)
    );
    assert_eq!(
        at("/sessions/lifetimes/idle/default"),
        i64::from(settings.refresh_token_ttl_secs)
    );
}
