//! Runs scenarios against a live service over HTTP: fixtures through the
//! admin API, then each step with its checks.

use super::mailbox::Mailbox;
use super::scenario::{Auth, Body, Call, Check, Scenario, Step, WRONG_ADMIN_TOKEN, Want};
use super::sink::Inbox;
use super::template::{CreatedUser, Scope, last_totp_key};
use crate::clock::{Clock, whole_millis};
use crate::credentials::TotpSecret;
use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use rand::Rng as _;
use reqwest::{Method, Url};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The service under test, and how `replay` reaches it.
pub struct Target {
    pub base_url: Url,
    pub admin_token: SecretString,
    pub inbox: Inbox,
    /// What replay's mailbox received (`{{user.email_code}}`).
    pub mailbox: Mailbox,
    pub time: Time,
    pub client: reqwest::Client,
    /// Scenarios with `settings:` change the whole service: they run only
    /// where that was allowed (a server of replay's own, or on request).
    pub may_change_settings: bool,
}

/// How a scenario's time passes.
#[derive(Debug, Clone)]
pub enum Time {
    /// The wall clock: a wait sleeps.
    Real,
    /// The clock the server runs on (it runs in this process): a wait moves it.
    Shared(Clock),
}

impl Time {
    fn now(&self) -> DateTime<Utc> {
        match self {
            Time::Real => whole_millis(Utc::now()),
            Time::Shared(clock) => clock.now(),
        }
    }

    async fn pass(&self, by: Duration) {
        match self {
            Time::Real => tokio::time::sleep(by).await,
            Time::Shared(clock) => {
                clock.advance(chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX));
            }
        }
    }
}

/// What one scenario did.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub name: String,
    pub file: String,
    pub outcome: Outcome,
    /// One readable line per step.
    pub lines: Vec<String>,
    pub duration: Duration,
    pub observed: Vec<Observation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Why, with the failing request and answer.
    Failed(String),
    /// Not run, and why.
    Skipped(String),
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Passed
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }
}

/// A request as it happened: from which workflow, to which, and how it was
/// answered. The coverage test compares these with the spec, and the
/// OpenAPI test the answers with the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The spec's request name, else `METHOD path` as the scenario wrote it.
    pub request: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub status: u16,
    pub error: Option<String>,
    pub method: String,
    /// As sent, without the base URL.
    pub path: String,
    /// The answer's JSON (null when it was not JSON).
    pub answer: Value,
}

/// Runs every scenario: those that change settings or let time pass run
/// alone, after the others have run `jobs` at a time. `done` sees each
/// report as it is ready.
pub async fn run_all(
    scenarios: &[Scenario],
    target: &Target,
    jobs: usize,
    mut done: impl FnMut(&ScenarioReport),
) -> Vec<ScenarioReport> {
    let (alone, together): (Vec<_>, Vec<_>) = scenarios.iter().partition(|s| runs_alone(s));
    let mut reports = Vec::with_capacity(scenarios.len());
    let mut concurrent = futures_util::stream::iter(together)
        .map(|s| run(s, target))
        .buffer_unordered(jobs.max(1));
    while let Some(report) = concurrent.next().await {
        done(&report);
        reports.push(report);
    }
    for scenario in alone {
        let report = run(scenario, target).await;
        done(&report);
        reports.push(report);
    }
    reports
}

/// Settings are the whole service's, and a shared clock is every
/// scenario's: such scenarios must not overlap with others.
pub fn runs_alone(scenario: &Scenario) -> bool {
    scenario.settings.is_some() || scenario.steps.iter().any(|s| matches!(s, Step::Wait(_)))
}

pub async fn run(scenario: &Scenario, target: &Target) -> ScenarioReport {
    let started = Instant::now();
    let mut run = ScenarioRun {
        target,
        id: format!(
            "{:010x}",
            rand::thread_rng().r#gen::<u64>() & 0xff_ffff_ffff
        ),
        users: BTreeMap::new(),
        captured: BTreeMap::new(),
        secrets: Vec::new(),
        workflows: BTreeMap::new(),
        lines: Vec::new(),
        observed: Vec::new(),
    };
    let outcome = if scenario.settings.is_some() && !target.may_change_settings {
        Outcome::Skipped(
            "changes the service's settings: allowed with --spawn or --allow-settings-changes"
                .into(),
        )
    } else {
        run.steps_of(scenario).await
    };
    ScenarioReport {
        name: scenario.name.clone(),
        file: scenario.file.display().to_string(),
        outcome,
        lines: run.lines,
        duration: started.elapsed(),
        observed: run.observed,
    }
}

struct ScenarioRun<'a> {
    target: &'a Target,
    /// Unique per run: fixture emails and passwords carry it.
    id: String,
    users: BTreeMap<String, CreatedUser>,
    captured: BTreeMap<String, Value>,
    /// Values captured from secret fields (tokens, wizard keys): a report
    /// blanks them wherever they would show, such as a step that expects
    /// one at a field whose name says nothing.
    secrets: Vec<String>,
    /// The workflow each wizard (by uuid) was last seen at.
    workflows: BTreeMap<String, String>,
    lines: Vec<String>,
    observed: Vec<Observation>,
}

/// One request as sent and answered, for the report of a failing step.
struct Exchange {
    method: Method,
    url: Url,
    body: Option<String>,
    status: u16,
    answer: String,
    json: Option<Value>,
}

/// Request and answer fields whose values a report never shows: they
/// would put passwords, codes and live tokens in CI logs (a refresh
/// request's body is `{"refreshToken": "..."}`; answers hold tokens under
/// `token`; an enrolment's `secret`, `otpauthUrl` and `qrCode` hold a TOTP
/// secret, `backupCodes` a list). Request headers are never shown, so
/// neither is a bearer token.
const SECRET_FIELDS: [&str; 13] = [
    "password",
    "code",
    "totp_secret",
    "token",
    "wizardKey",
    "otpauth_uri",
    "refresh_token",
    "refreshToken",
    "accessToken",
    "secret",
    "otpauthUrl",
    "qrCode",
    "backupCodes",
];

/// `value` with the values of secret fields (string values only, so the
/// envelope's numeric `code` and an error's code stay readable) blanked.
fn redacted(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let hide = SECRET_FIELDS.contains(&k.as_str())
                        && (v.is_string() || is_list_of_strings(v))
                        && !is_error_code(k, v);
                    (
                        k.clone(),
                        if hide {
                            Value::from("<redacted>")
                        } else {
                            redacted(v)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

fn is_list_of_strings(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|items| items.iter().all(Value::is_string))
}

/// An error's code (`invalid_code`) is what a report is for; a six-digit
/// code is a secret.
fn is_error_code(key: &str, value: &Value) -> bool {
    key == "code"
        && value
            .as_str()
            .is_some_and(|s| s.chars().any(|c| c.is_ascii_alphabetic()))
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "    > {} {}", self.method, self.url)?;
        if let Some(body) = &self.body {
            let shown = match serde_json::from_str::<Value>(body) {
                Ok(json) => redacted(&json).to_string(),
                Err(_) if body.len() > 200 => format!(
                    "{}... ({} bytes)",
                    body.chars().take(200).collect::<String>(),
                    body.len()
                ),
                Err(_) => body.clone(),
            };
            writeln!(f, "    > {shown}")?;
        }
        writeln!(f, "    < {}", self.status)?;
        let shown = match &self.json {
            Some(json) => serde_json::to_string_pretty(&redacted(json)).unwrap_or_default(),
            None => self.answer.clone(),
        };
        for line in shown.lines() {
            writeln!(f, "    < {line}")?;
        }
        Ok(())
    }
}

impl ScenarioRun<'_> {
    async fn steps_of(&mut self, scenario: &Scenario) -> Outcome {
        let mut failure = self
            .set_up(scenario)
            .await
            .err()
            .map(|e| format!("fixtures: {e:#}"));
        let mut saved_settings = None;
        if let (None, Some(settings)) = (&failure, &scenario.settings) {
            match self.put_settings(settings).await {
                Ok(saved) => saved_settings = Some(saved),
                Err(e) => failure = Some(format!("settings: {e:#}")),
            }
        }
        if failure.is_none() {
            for (i, step) in scenario.steps.iter().enumerate() {
                if let Err(e) = self.step(i + 1, step).await {
                    failure = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        if let Some(saved) = saved_settings
            && let Err(e) = self.put_settings(&saved).await
        {
            failure.get_or_insert(format!("restoring the settings: {e:#}"));
        }
        self.tear_down().await;
        failure.map_or(Outcome::Passed, Outcome::Failed)
    }

    async fn set_up(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        for (name, fixture) in &scenario.users {
            let phone = match (fixture.phone, fixture.phone_unreachable) {
                (_, true) => Some(self.target.inbox.new_number(true)),
                (true, false) => Some(self.target.inbox.new_number(false)),
                (false, false) => None,
            };
            let body = fixture.create_body(name, &self.id, phone.as_deref());
            let exchange = self
                .send(
                    Method::POST,
                    "/api/v2/admin/users",
                    Auth::Admin,
                    &BTreeMap::new(),
                    Some(body.to_string()),
                )
                .await?;
            ensure!(
                exchange.status == 201,
                "the admin API did not create {name:?}:\n{exchange}"
            );
            let json = exchange.json.unwrap_or_default();
            let user = CreatedUser {
                id: json["id"]
                    .as_str()
                    .context("no id in the answer")?
                    .to_owned(),
                email: json["email"]
                    .as_str()
                    .context("no email in the answer")?
                    .to_owned(),
                password: fixture.password(name, &self.id),
                phone,
                totp: fixture
                    .totp_secret
                    .as_deref()
                    .map(TotpSecret::parse)
                    .transpose()?,
            };
            self.users.insert(name.clone(), user);
        }
        Ok(())
    }

    async fn tear_down(&self) {
        for user in self.users.values() {
            let path = format!("/api/v2/admin/users/{}", user.id);
            // Best effort: a fixture left behind holds nothing but test data.
            let _ = self
                .send(Method::DELETE, &path, Auth::Admin, &BTreeMap::new(), None)
                .await;
        }
    }

    /// Puts `settings` and answers the values they replaced.
    async fn put_settings(
        &self,
        settings: &serde_json::Map<String, Value>,
    ) -> anyhow::Result<serde_json::Map<String, Value>> {
        let path = "/api/v2/admin/settings";
        let none = BTreeMap::new();
        let current = self
            .send(Method::GET, path, Auth::Admin, &none, None)
            .await?;
        ensure!(current.status == 200, "reading them failed:\n{current}");
        let current = current.json.unwrap_or_default();
        let saved = settings
            .keys()
            .map(|k| {
                Ok((
                    k.clone(),
                    current
                        .get(k)
                        .with_context(|| format!("no setting {k:?}"))?
                        .clone(),
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let body = Value::Object(settings.clone()).to_string();
        let put = self
            .send(Method::PUT, path, Auth::Admin, &none, Some(body))
            .await?;
        ensure!(put.status == 200, "putting them failed:\n{put}");
        Ok(saved)
    }

    async fn step(&mut self, number: usize, step: &Step) -> anyhow::Result<()> {
        match step {
            Step::Wait(by) => {
                self.target.time.pass(*by).await;
                self.lines.push(format!(
                    "  ok    {number:>2}. wait {:.1} s",
                    by.as_secs_f64()
                ));
                Ok(())
            }
            Step::Call(call) => {
                for round in 1..=call.repeat {
                    let (line, outcome) = self.call(call).await;
                    let verdict = if outcome.is_err() { "FAIL" } else { "ok  " };
                    let rounds = if call.repeat > 1 {
                        format!(" ({round}/{})", call.repeat)
                    } else {
                        String::new()
                    };
                    self.lines
                        .push(format!("  {verdict}  {number:>2}. {line}{rounds}"));
                    outcome.with_context(|| format!("step {number}"))?;
                }
                Ok(())
            }
        }
    }

    /// One request: the line that says what happened, and whether it was what
    /// the scenario expects.
    async fn call(&mut self, call: &Call) -> (String, anyhow::Result<()>) {
        let what = format!(
            "{} {} {}",
            call.request.as_deref().unwrap_or(""),
            call.method,
            call.path_text
        );
        let what = what.trim().to_owned();
        let prepared = match self.prepare(call) {
            Ok(p) => p,
            Err(e) => return (what, Err(e)),
        };
        let exchange = match self
            .send(
                call.method.clone(),
                &prepared.path,
                call.auth,
                &prepared.headers,
                prepared.body,
            )
            .await
        {
            Ok(x) => x,
            Err(e) => return (what, Err(e)),
        };
        let json = exchange.json.clone().unwrap_or_default();
        let line = format!("{what} → {} {}", exchange.status, summary(call, &json));
        self.observe(call, &exchange, &json);
        let checked = check(call.expect.status, &prepared.checks, &exchange, &json)
            .and_then(|()| self.capture(call, &json));
        (
            line,
            checked.map_err(|e| {
                anyhow::anyhow!("{}", scrubbed(&format!("{e:#}\n{exchange}"), &self.secrets))
            }),
        )
    }

    fn prepare(&mut self, call: &Call) -> anyhow::Result<Prepared> {
        let scope = Scope {
            run: &self.id,
            users: &self.users,
            captured: &self.captured,
            inbox: &self.target.inbox,
            mailbox: &self.target.mailbox,
            now: self.target.time.now(),
        };
        let mut used = Vec::new();
        let path = scope.fill(&call.path, &mut used)?;
        let mut headers: BTreeMap<String, String> = call
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), scope.fill(v, &mut used)?)))
            .collect::<anyhow::Result<_>>()?;
        if let Some(bearer) = &call.bearer {
            let token = scope.fill(bearer, &mut used)?;
            headers.insert("Authorization".to_owned(), format!("Bearer {token}"));
        }
        let body = match &call.body {
            Body::None => None,
            Body::Json(json) => Some(scope.fill_json(json, &mut used)?.to_string()),
            Body::Raw(raw) => Some(scope.fill(raw, &mut used)?),
        };
        // Expected values are filled without recording codes: only what is
        // sent counts as sent.
        let checks = call
            .checks()
            .into_iter()
            .map(|c| {
                let want = match c.want {
                    Want::Equals(v) => Want::Equals(scope.fill_json(&v, &mut Vec::new())?),
                    Want::Present => Want::Present,
                };
                Ok(Check { path: c.path, want })
            })
            .collect::<anyhow::Result<_>>()?;
        for (user, code) in used {
            self.captured
                .insert(last_totp_key(&user), Value::from(code));
        }
        Ok(Prepared {
            path,
            headers,
            body,
            checks,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth,
        headers: &BTreeMap<String, String>,
        body: Option<String>,
    ) -> anyhow::Result<Exchange> {
        let url = self
            .target
            .base_url
            .join(path)
            .with_context(|| format!("{path:?} is no path"))?;
        // A captured value must not be able to send a request (and the admin
        // token) elsewhere.
        ensure!(
            url.origin() == self.target.base_url.origin(),
            "{url} is not on {}",
            self.target.base_url
        );
        let mut request = self.target.client.request(method.clone(), url.clone());
        match auth {
            Auth::None => {}
            Auth::Admin => request = request.bearer_auth(self.target.admin_token.expose_secret()),
            Auth::WrongAdmin => request = request.bearer_auth(WRONG_ADMIN_TOKEN),
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = &body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.clone());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let answer = response
            .text()
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        let json = serde_json::from_str(&answer).ok();
        Ok(Exchange {
            method,
            url,
            body,
            status,
            answer,
            json,
        })
    }

    fn observe(&mut self, call: &Call, exchange: &Exchange, answer: &Value) {
        let sent_uuid = exchange
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<Value>(b).ok())
            .and_then(|b| b["uuid"].as_str().map(str::to_owned));
        let from = sent_uuid.and_then(|uuid| self.workflows.get(&uuid).cloned());
        let ok = (200..300).contains(&exchange.status);
        let to = answer["workflow"]
            .as_str()
            .filter(|_| ok)
            .map(str::to_owned);
        if let (Some(uuid), Some(to)) = (answer["uuid"].as_str(), &to) {
            self.workflows.insert(uuid.to_owned(), to.clone());
        }
        self.observed.push(Observation {
            request: call
                .request
                .clone()
                .unwrap_or_else(|| format!("{} {}", call.method, call.path_text)),
            from,
            to,
            status: exchange.status,
            error: at_path(answer, call.error_path())
                .and_then(Value::as_str)
                .map(str::to_owned),
            method: exchange.method.to_string(),
            path: exchange.url.path().to_owned(),
            answer: answer.clone(),
        });
    }

    fn capture(&mut self, call: &Call, answer: &Value) -> anyhow::Result<()> {
        for (name, path) in &call.capture {
            let value = at_path(answer, path)
                .filter(|v| !v.is_null())
                .with_context(|| format!("nothing at `{path}` to capture as {name}"))?;
            // `data.backupCodes.0` is as secret as the list it is in.
            let is_secret = path
                .split('.')
                .any(|field| SECRET_FIELDS.contains(&field) && !is_error_code(field, value));
            if let Some(secret) = value.as_str().filter(|_| is_secret) {
                self.secrets.push(secret.to_owned());
            }
            self.captured.insert(name.clone(), value.clone());
        }
        Ok(())
    }
}

/// A step's request and checks, with their templates filled in.
struct Prepared {
    path: String,
    headers: BTreeMap<String, String>,
    body: Option<String>,
    checks: Vec<Check>,
}

fn check(status: u16, checks: &[Check], exchange: &Exchange, answer: &Value) -> anyhow::Result<()> {
    if exchange.status != status {
        bail!("expected status {status}, got {}", exchange.status);
    }
    if !checks.is_empty() && exchange.json.is_none() {
        bail!("expected a JSON answer");
    }
    for Check { path, want } in checks {
        let got = at_path(answer, path).unwrap_or(&Value::Null);
        match want {
            Want::Present if got.is_null() => bail!("expected something at {path}"),
            Want::Equals(expected) if got != expected => {
                bail!(
                    "expected {path} = {}, got {}",
                    redacted_leaf(path, expected),
                    redacted_leaf(path, got)
                )
            }
            _ => {}
        }
    }
    Ok(())
}

/// `text` with every secret captured so far blanked.
fn scrubbed(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "<redacted>")
        })
}

/// A value in a failure message, blanked if its field is a secret.
fn redacted_leaf(path: &str, value: &Value) -> Value {
    let field = path.rsplit('.').next().unwrap_or(path);
    redacted(&serde_json::json!({ field: value }))[field].clone()
}

/// `a.b.0.c` into a JSON value.
pub fn at_path<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(value, |v, key| match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(key),
        })
}

/// The workflow, or the error code, of an answer.
fn summary(call: &Call, answer: &Value) -> String {
    let error = at_path(answer, call.error_path()).and_then(Value::as_str);
    error
        .or(answer["workflow"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_blank_tokens_passwords_and_codes_but_not_error_codes() {
        let shown = redacted(&serde_json::json!({
            "refreshToken": "opaque",
            "data": {
                "accessToken": { "token": "eyJ...", "expiresAt": "2026-01-01T00:00:00+00:00" },
                "refreshToken": { "token": "opaque" },
                "error": { "code": "invalid_refresh_token" }
            },
            "code": 401
        }));
        assert_eq!(shown["refreshToken"], "<redacted>");
        assert_eq!(shown["data"]["accessToken"]["token"], "<redacted>");
        assert_eq!(shown["data"]["refreshToken"]["token"], "<redacted>");
        assert_eq!(
            shown["data"]["accessToken"]["expiresAt"],
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(shown["data"]["error"]["code"], "invalid_refresh_token");
        assert_eq!(shown["code"], 401);
        let enrolment = redacted(&serde_json::json!({
            "data": {
                "secret": "JBSWY3DPEHPK3PXP", "otpauthUrl": "otpauth://totp/x", "qrCode": "data:image/png;base64,x",
                "backupCodes": ["12345-67890"], "backupCodesLeft": 9, "tfaProviders": []
            }
        }));
        for field in ["secret", "otpauthUrl", "qrCode", "backupCodes"] {
            assert_eq!(enrolment["data"][field], "<redacted>", "{field}");
        }
        assert_eq!(enrolment["data"]["backupCodesLeft"], 9);
        assert_eq!(enrolment["data"]["tfaProviders"], serde_json::json!([]));
    }

    #[test]
    fn captured_secrets_are_blanked_wherever_they_show() {
        let secrets = ["eyJ.a.b".to_owned(), String::new()];
        assert_eq!(
            scrubbed("expected data.email = \"eyJ.a.b\", got \"x\"", &secrets),
            "expected data.email = \"<redacted>\", got \"x\""
        );
    }
}
