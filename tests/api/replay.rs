//! The shipped QA scenarios are part of the acceptance suite: every one is
//! replayed over HTTP against in-process servers on both stores, every
//! answer matches wizard-spec/openapi.yaml, together they reach every
//! transition and rejection of the spec, and their Hurl export is what Hurl
//! reads (and, where it is installed, runs).

use crate::helpers::{ADMIN_TOKEN, Backend, FakeSms, TestApp, spawn_with, test_settings};
use crate::openapi;
use serde_json::Value;
use signin_wizard::replay::mailbox::{MailSink, MailSinkOptions, MailTls, Recipients};
use signin_wizard::replay::scenario::{self, Step};
use signin_wizard::replay::sink::SinkOptions;
use signin_wizard::replay::{
    self, Observation, ScenarioReport, SmsSink, Target, Time, hurl, report,
};
use signin_wizard::spec::{self, Spec};
use std::path::PathBuf;

/// Error codes no scenario can bring about against a healthy server, and
/// the test that brings each about instead. (`concurrent_request` is not
/// among them: a refresh token sent again right after it was replaced
/// answers it, in `sessions.yaml`; a wizard's lost race is
/// tests/api/concurrency.rs's.)
const NOT_REPLAYABLE: [(&str, &str); 8] = [
    ("captcha_failed", "tests/api/captcha.rs"),
    ("captcha_unavailable", "tests/api/captcha.rs"),
    ("overloaded", "tests/api/concurrency.rs"),
    ("store_unavailable", "tests/api/redis_faults.rs"),
    ("internal_error", "tests/api/redis_faults.rs"),
    // choose_factor is reached only by an account with both factors, and
    // any change to the account answers account_changed first.
    ("factor_unavailable", "src/wizard/machine.rs"),
    // Only a server started with an operator's key file answers it.
    ("keys_pinned", "tests/api/keys.rs"),
    // Only a server without email delivery answers it.
    (
        "password_recovery_unavailable",
        "tests/api/password_reset.rs",
    ),
];

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn shipped() -> Vec<scenario::Scenario> {
    scenario::load_all(&[repo(replay::SHIPPED)], &Spec::load().unwrap()).unwrap()
}

async fn sink(serve_reads: bool) -> SmsSink {
    SmsSink::start(SinkOptions {
        address: "127.0.0.1:0".parse().unwrap(),
        token: None,
        serve_reads,
        public: false,
    })
    .await
    .unwrap()
}

/// A server whose SMS go to `sink` and whose email to a mailbox of
/// replay's, and the target that reaches it (on the server's own clock, so
/// waits cost nothing).
async fn replay_target(backend: Backend, sink: &SmsSink) -> (TestApp, Target) {
    let unused = FakeSms::spawn().await;
    let mut settings = test_settings(backend, &unused);
    settings.sms_webhook_url = Some(sink.webhook_url().parse().unwrap());
    let mail = MailSink::start(MailSinkOptions::loopback(
        MailTls::Plain,
        Recipients::Replay,
    ))
    .await
    .unwrap();
    settings.smtp_url = Some(mail.smtp_url().parse().unwrap());
    let app = spawn_with(settings, unused).await;
    let target = Target {
        base_url: app.address.parse().unwrap(),
        admin_token: ADMIN_TOKEN.to_owned().into(),
        inbox: sink.inbox.clone(),
        mailbox: mail.mailbox,
        time: Time::Shared(app.clock.clone()),
        client: reqwest::Client::new(),
        may_change_settings: true,
    };
    (app, target)
}

async fn replay_all(backend: Backend) -> Vec<ScenarioReport> {
    let scenarios = shipped();
    let sink = sink(false).await;
    let (_app, target) = replay_target(backend, &sink).await;
    let reports = replay::run_all(&scenarios, &target, 4, |_| {}).await;
    let not_passed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(report::console)
        .collect();
    assert!(
        not_passed.is_empty(),
        "{backend:?}:\n{}",
        not_passed.join("\n")
    );
    assert_eq!(reports.len(), scenarios.len());
    reports
}

#[tokio::test]
async fn every_shipped_scenario_passes_on_both_stores_and_every_answer_is_documented() {
    let mut observed: Vec<Observation> = Vec::new();
    for backend in [Backend::Memory, Backend::Redis] {
        observed.extend(
            replay_all(backend)
                .await
                .into_iter()
                .flat_map(|r| r.observed),
        );
    }
    for o in &observed {
        match openapi::path_template(&o.method, &o.path) {
            Some(template) => openapi::assert_conforms(&o.method, &template, o.status, &o.answer),
            // The document lists what the service serves; the rest is 404.
            None => assert_eq!(
                (o.status, o.error.as_deref()),
                (404, Some("route_not_found")),
                "{o:?}"
            ),
        }
    }
    assert_covers_the_spec(&observed);
}

/// Every transition is taken with its status, and every rejection of the
/// spec is answered, from one of its states to one of its requests, with
/// its code and status; every other error code too, but the excused ones.
fn assert_covers_the_spec(observed: &[Observation]) {
    let spec = Spec::load().unwrap();
    let state = |step: &str| spec.states.iter().find(|s| s.step == step).unwrap();

    let mut missing = Vec::new();
    for t in &spec.transitions {
        let from = t.from.as_deref().map(|f| state(f).workflow.clone());
        let to = state(&t.to);
        let status = if to.terminal { 202 } else { 200 };
        let taken = observed.iter().any(|o| {
            o.request == t.request
                && o.from == from
                && o.to.as_deref() == Some(&to.workflow)
                && o.status == status
        });
        if !taken {
            missing.push(format!(
                "transition {:?} --{}--> {} ({status})",
                t.from, t.request, t.to
            ));
        }
    }

    let raw: Value = serde_json::from_str(spec::JSON).unwrap();
    let excused = |code: &str| NOT_REPLAYABLE.iter().any(|(c, _)| *c == code);
    for rejection in raw["rejections"].as_array().unwrap() {
        let code = rejection["error"].as_str().unwrap();
        let status = rejection["status"].as_u64().unwrap();
        let names = |field: &str| -> Vec<String> {
            rejection[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        let (froms, requests) = (names("from"), names("request"));
        let answered = observed.iter().any(|o| {
            o.error.as_deref() == Some(code)
                && u64::from(o.status) == status
                && requests.contains(&o.request)
                && froms
                    .iter()
                    .any(|f| o.from.as_deref() == Some(&state(f).workflow))
        });
        if !answered && !excused(code) {
            missing.push(format!(
                "rejection {code} ({status}) from {froms:?} to {requests:?}"
            ));
        }
    }
    for answer in spec.shell_errors.iter().chain(&spec.other_errors) {
        let answered = observed
            .iter()
            .any(|o| o.error.as_deref() == Some(&answer.error) && o.status == answer.status);
        if !answered && !excused(&answer.error) {
            missing.push(format!("{} ({})", answer.error, answer.status));
        }
    }
    assert!(missing.is_empty(), "no scenario covers: {missing:#?}");

    for (code, test) in NOT_REPLAYABLE {
        assert!(
            !observed.iter().any(|o| o.error.as_deref() == Some(code)),
            "{code} is excused, yet a scenario answers it"
        );
        let source = std::fs::read_to_string(repo(test)).unwrap();
        assert!(
            source.contains(code) || source.contains(&camel(code)),
            "{test} does not test {code}"
        );
    }
}

/// `factor_unavailable` as the code's enum names it (`FactorUnavailable`).
fn camel(code: &str) -> String {
    code.split('_')
        .map(|w| w[..1].to_uppercase() + &w[1..])
        .collect()
}

#[test]
fn every_scenario_exports_to_a_file_hurl_reads_with_an_entry_per_request_and_an_assert_per_check() {
    for scenario in shipped() {
        let text = hurl::export(&scenario).unwrap();
        let file = hurl_core::parser::parse_hurl_file(&text).unwrap_or_else(|e| {
            panic!(
                "{}: hurl cannot parse the export: {e:?}\n{text}",
                scenario.name
            )
        });
        let calls: Vec<_> = scenario
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Call(call) => Some(call),
                Step::Wait(_) => None,
            })
            .collect();
        let phones = scenario
            .users
            .values()
            .filter(|u| u.phone || u.phone_unreachable)
            .count();
        let expected_entries = calls.len()
            + 2 * scenario.users.len()
            + phones
            + if scenario.settings.is_some() { 3 } else { 0 }
            + calls.iter().map(|c| c.sms_users().len()).sum::<usize>();
        assert_eq!(
            file.entries.len(),
            expected_entries,
            "{}:\n{text}",
            scenario.name
        );
        for call in calls {
            let fixed = call.path_text.split("{{").next().unwrap_or_default();
            let entry = file
                .entries
                .iter()
                .find(|e| {
                    e.request.method.to_string() == call.method.as_str()
                        && e.request.url.to_string().contains(fixed)
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{}: no entry for {} {}",
                        scenario.name, call.method, call.path_text
                    )
                });
            assert!(
                entry.response.is_some(),
                "{}: {} has no expected response",
                scenario.name,
                call.path_text
            );
        }
        for call in scenario.steps.iter().filter_map(|s| match s {
            Step::Call(call) => Some(call),
            Step::Wait(_) => None,
        }) {
            for check in call.checks() {
                let jsonpath = check.path.split('.').fold("$".to_owned(), |acc, key| {
                    match key.parse::<usize>() {
                        Ok(i) => format!("{acc}[{i}]"),
                        Err(_) => format!("{acc}.{key}"),
                    }
                });
                assert!(
                    text.contains(&format!("jsonpath \"{jsonpath}\"")),
                    "{}: no assert on {jsonpath}\n{text}",
                    scenario.name
                );
            }
        }
    }
}

/// With the `hurl` CLI installed, every export that waits at most a few
/// seconds runs green against a live server, all of them at once (as
/// `hurl --test` runs files in parallel).
#[tokio::test]
async fn hurl_runs_the_exports_when_it_is_installed() {
    let Ok(version) = std::process::Command::new("hurl").arg("--version").output() else {
        eprintln!("hurl is not installed: only the parse test ran");
        return;
    };
    assert!(version.status.success());
    let sink = sink(true).await;
    let (app, _target) = replay_target(Backend::Memory, &sink).await;
    let dir = std::env::temp_dir().join(format!("replay-hurl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = std::process::Command::new("hurl");
    command
        .args(["--test", "--jobs", "8"])
        .args(["--variable", &format!("base_url={}", app.address)])
        .args(["--secret", &format!("admin_token={ADMIN_TOKEN}")])
        .args(["--variable", &format!("run={}", rand::random::<u32>())])
        .args(["--variable", &format!("sms_sink={}", sink.base_url())]);
    let mut files = 0;
    for scenario in shipped() {
        let waits: f64 = scenario
            .steps
            .iter()
            .map(|s| match s {
                Step::Wait(d) => d.as_secs_f64(),
                Step::Call(_) => 0.0,
            })
            .sum();
        // Settings scenarios change the whole server: none ran here at once.
        if waits > 5.0 || scenario.settings.is_some() {
            continue;
        }
        let file = dir.join(format!("{}.hurl", scenario.name));
        std::fs::write(&file, hurl::export(&scenario).unwrap()).unwrap();
        for (name, fixture) in &scenario.users {
            if let Some(secret) = &fixture.totp_secret {
                let code = signin_wizard::credentials::TotpSecret::parse(secret)
                    .unwrap()
                    .code_at(app.clock.now())
                    .unwrap();
                // Quoted: Hurl would read 012345 as the number 12345.
                command.args(["--variable", &format!("totp_{name}=\"{code}\"")]);
            }
        }
        command.arg(&file);
        files += 1;
    }
    assert!(files >= 15, "only {files} exports ran");
    // The server runs on this runtime: hurl is waited for off it.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The command line's contract: a line per step, `N passed, N failed`, the
/// request and answer of a failing step (secrets blanked), JUnit XML, and
/// the exit status.
#[test]
fn the_replay_command_reports_in_lines_junit_and_its_exit_status() {
    let dir = std::env::temp_dir().join(format!("replay-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let failing = dir.join("failing.yaml");
    std::fs::write(
        &failing,
        "name: expects-the-wrong-status\nusers:\n  ann: {}\nsteps:\n  - request: start\n    expect: { status: 200 }\n    capture: { uuid: uuid }\n  - request: credentials\n    body: { uuid: '{{uuid}}', email: '{{ann.email}}', password: '{{ann.password}}', device_fingerprint: '{{fingerprint}}' }\n    expect: { status: 401 }\n",
    )
    .unwrap();
    let junit = dir.join("report.xml");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_signin-wizard"));
    // The developer's own settings must not change what the server does.
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("WIZARD_")) {
        command.env_remove(name);
    }
    let output = command
        .args(["replay", "--spawn", "--junit"])
        .arg(&junit)
        .arg(repo("wizard-spec/scenarios/password-only.yaml"))
        .arg(&failing)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("PASS password-only"), "{stdout}");
    assert!(
        stdout.contains("  ok     2. credentials POST /api/v2/my/signin → 202 Terminate"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL expects-the-wrong-status"), "{stdout}");
    assert!(stdout.contains("expected status 401, got 202"), "{stdout}");
    assert!(
        stdout.contains("> POST http://127.0.0.1:"),
        "the failing request is shown: {stdout}"
    );
    assert!(
        stdout.contains("\"workflow\": \"Terminate\""),
        "the answer is shown: {stdout}"
    );
    for secret in ["\"password\":\"replay-", "\"token\": \"ey"] {
        assert!(
            !stdout.contains(secret),
            "a password or token is shown: {stdout}"
        );
    }
    assert!(stdout.contains("\"token\": \"<redacted>\""), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("1 passed, 1 failed"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"tests="2""#) && xml.contains(r#"failures="1""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="expects-the-wrong-status""#),
        "{xml}"
    );
    assert!(
        !xml.contains("&quot;token&quot;: &quot;ey"),
        "a token is in the JUnit XML: {xml}"
    );
}
