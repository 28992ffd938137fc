//! The scenario format (`wizard-spec/scenarios/*.yaml`), parsed at the door:
//! a scenario that names an unknown request, fixture or capture, sends the
//! admin token outside the admin API, or mixes step kinds never runs.

use super::template::{Expr, Piece, Template, UserField, last_totp_key, strings_in};
use crate::spec::Spec;
use anyhow::{Context as _, bail, ensure};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One replayable workflow: fixtures, then steps.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    /// By fixture name, in name order.
    pub users: BTreeMap<String, UserFixture>,
    /// Settings put for the run of this scenario (and restored after). They
    /// are the whole service's: such a scenario runs alone, and only where
    /// changing them is allowed.
    pub settings: Option<serde_json::Map<String, Value>>,
    pub steps: Vec<Step>,
}

/// A user created through the admin API before the steps, with an email
/// (and phone) unique to the run; its password too, unless given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFixture {
    pub password: Option<String>,
    /// Base32; fixed in the file so that an exported Hurl run can be given
    /// the code (`oathtool --totp -b SECRET`).
    pub totp_secret: Option<String>,
    /// A phone number, made up for the run, in the range replay's SMS sink
    /// receives.
    #[serde(default)]
    pub phone: bool,
    /// A phone in the range the sink refuses (the service then answers
    /// `sms_delivery_failed`).
    #[serde(default)]
    pub phone_unreachable: bool,
    #[serde(default)]
    pub force_password_reset: bool,
    /// The account must have a second factor: without one, its sign-in
    /// enrols an authenticator app.
    #[serde(default)]
    pub second_factor_required: bool,
}

impl UserFixture {
    fn has_phone(&self) -> bool {
        self.phone || self.phone_unreachable
    }

    /// The admin API body that creates it. `run` makes it unique.
    pub fn create_body(&self, name: &str, run: &str, phone: Option<&str>) -> Value {
        serde_json::json!({
            "email": format!("{name}-{run}@replay.test"),
            "password": self.password(name, run),
            "totp_secret": self.totp_secret,
            "phone": phone,
            "force_password_reset": self.force_password_reset,
            "second_factor_required": self.second_factor_required,
        })
    }

    pub fn password(&self, name: &str, run: &str) -> String {
        self.password
            .clone()
            .unwrap_or_else(|| format!("replay-{run}-{name}"))
    }
}

#[derive(Debug, Clone)]
pub enum Step {
    Call(Box<Call>),
    /// Time passes: slept, or moved on the server's clock when `replay`
    /// runs the server itself.
    Wait(Duration),
}

/// One HTTP request and what its answer must be.
#[derive(Debug, Clone)]
pub struct Call {
    /// The spec's request name, when the step is one of the wizard's.
    pub request: Option<String>,
    pub method: reqwest::Method,
    /// Starts with a single `/`; templates may not change where it goes.
    pub path: Template,
    /// The path as written, for reports.
    pub path_text: String,
    pub auth: Auth,
    /// An access token sent as `Authorization: Bearer` (the session
    /// endpoints), usually a capture: `bearer: "{{access}}"`.
    pub bearer: Option<Template>,
    pub headers: BTreeMap<String, Template>,
    pub body: Body,
    pub expect: Expect,
    /// Name → dotted path into the answer's JSON (`uuid`, `meta.wizardKey`).
    pub capture: BTreeMap<String, String>,
    /// Sends the same request this many times, each expecting the same.
    pub repeat: u32,
}

/// Most repetitions of one step.
const MAX_REPEAT: u32 = 100;
/// Longest wait, in seconds.
const MAX_WAIT_SECS: f64 = 86_400.0;
const ADMIN_API: &str = "/api/v2/admin/";

impl Call {
    fn admin_api(&self) -> bool {
        self.path_text.starts_with(ADMIN_API)
    }

    /// Every check of the answer but its status, in order.
    pub fn checks(&self) -> Vec<Check> {
        let e = &self.expect;
        let mut checks = Vec::new();
        if self.request.is_some() {
            // An envelope's `code` is its HTTP status.
            checks.push(Check::equals("code", Value::from(e.status)));
        }
        if let Some(w) = &e.workflow {
            checks.push(Check::equals("workflow", Value::from(w.as_str())));
        }
        if let Some(d) = e.done {
            checks.push(Check::equals("done", Value::from(d)));
        }
        if let Some(code) = &e.error {
            checks.push(Check::equals(self.error_path(), Value::from(code.as_str())));
        }
        checks.extend(e.present.iter().map(|p| Check {
            path: p.clone(),
            want: Want::Present,
        }));
        checks.extend(e.json.iter().map(|(p, v)| Check::equals(p, v.clone())));
        checks
    }

    /// Where the answer holds its error code: the admin API answers
    /// `{error}`, everything else the envelope.
    pub fn error_path(&self) -> &'static str {
        if self.admin_api() {
            "error.code"
        } else {
            "data.error.code"
        }
    }

    /// The fixture users whose last SMS code the request sends.
    pub fn sms_users(&self) -> Vec<String> {
        let mut users = Vec::new();
        for template in self.templates() {
            for piece in template.pieces() {
                if let Piece::Expr(Expr::User {
                    name,
                    field: UserField::Sms,
                }) = piece
                    && !users.contains(name)
                {
                    users.push(name.clone());
                }
            }
        }
        users
    }

    /// Every template the request sends (path, headers, body); those of a
    /// JSON body were checked when the scenario was loaded.
    pub(super) fn templates(&self) -> Vec<Template> {
        let mut templates = vec![self.path.clone()];
        templates.extend(self.bearer.clone());
        templates.extend(self.headers.values().cloned());
        match &self.body {
            Body::None => {}
            Body::Raw(raw) => templates.push(raw.clone()),
            Body::Json(json) => {
                let mut strings = Vec::new();
                strings_in(json, &mut strings);
                templates.extend(strings.into_iter().filter_map(|s| Template::parse(s).ok()));
            }
        }
        templates
    }
}

/// One thing an answer must hold at a dotted path.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub path: String,
    pub want: Want,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// Exactly this JSON (strings may hold templates).
    Equals(Value),
    /// Anything but null.
    Present,
}

impl Check {
    fn equals(path: &str, value: Value) -> Self {
        Self {
            path: path.to_owned(),
            want: Want::Equals(value),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    None,
    /// The admin bearer token given to `replay` (admin API paths only).
    Admin,
    /// A bearer token that is not the admin's.
    WrongAdmin,
}

/// What `Auth::WrongAdmin` sends.
pub const WRONG_ADMIN_TOKEN: &str = "not-the-admin-token-but-just-as-long";

#[derive(Debug, Clone)]
pub enum Body {
    None,
    /// Sent as JSON after filling every string's templates.
    Json(Value),
    /// Sent as it is, with `Content-Type: application/json` (broken bodies).
    Raw(Template),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
    pub workflow: Option<String>,
    pub done: Option<bool>,
    /// The error code: `data.error.code` of an envelope, `error.code` of an
    /// admin API answer.
    pub error: Option<String>,
    /// Dotted path → the JSON value it must hold.
    #[serde(default)]
    pub json: BTreeMap<String, Value>,
    /// Dotted paths that must hold something (tokens, keys).
    #[serde(default)]
    pub present: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    users: BTreeMap<String, UserFixture>,
    settings: Option<serde_json::Map<String, Value>>,
    steps: Vec<RawStep>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    request: Option<String>,
    method: Option<String>,
    path: Option<String>,
    auth: Option<Auth>,
    bearer: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<Value>,
    raw_body: Option<String>,
    expect: Option<Expect>,
    #[serde(default)]
    capture: BTreeMap<String, String>,
    repeat: Option<u32>,
    /// Seconds.
    wait: Option<f64>,
}

/// Every `*.yaml` under each path (a file or a folder), sorted by path.
pub fn load_all(paths: &[PathBuf], spec: &Spec) -> anyhow::Result<Vec<Scenario>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries =
                std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?;
            for entry in entries {
                let file = entry?.path();
                if file.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    files.push(file);
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    let scenarios = files
        .iter()
        .map(|file| load(file, spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        !scenarios.is_empty(),
        "no scenario files (*.yaml) in {paths:?}"
    );
    let mut names = BTreeSet::new();
    for s in &scenarios {
        ensure!(
            names.insert(&s.name),
            "two scenarios are named {:?}",
            s.name
        );
    }
    Ok(scenarios)
}

pub fn load(file: &Path, spec: &Spec) -> anyhow::Result<Scenario> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    parse(&text, file, spec).with_context(|| format!("in {}", file.display()))
}

pub fn parse(text: &str, file: &Path, spec: &Spec) -> anyhow::Result<Scenario> {
    let raw: RawScenario = serde_yaml_ng::from_str(text)?;
    ensure!(
        !raw.name.is_empty()
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "name: letters, digits, - and _ only (it names the exported file)"
    );
    let mut known = Known {
        users: &raw.users,
        captured: BTreeSet::new(),
    };
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (i, step) in raw.steps.into_iter().enumerate() {
        let step = step_from(step, spec).with_context(|| format!("step {}", i + 1))?;
        if let Step::Call(call) = &step {
            known
                .check(call)
                .with_context(|| format!("step {}", i + 1))?;
        }
        steps.push(step);
    }
    ensure!(
        steps.iter().any(|s| matches!(s, Step::Call(_))),
        "a scenario needs at least one request"
    );
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        file: file.to_owned(),
        users: raw.users,
        settings: raw.settings,
        steps,
    })
}

fn step_from(raw: RawStep, spec: &Spec) -> anyhow::Result<Step> {
    if let Some(secs) = raw.wait {
        let only_wait = RawStep { wait: None, ..raw };
        ensure!(only_wait.is_empty(), "a wait step does nothing else");
        ensure!(
            (0.0..=MAX_WAIT_SECS).contains(&secs),
            "wait: 0 to {MAX_WAIT_SECS} seconds"
        );
        return Ok(Step::Wait(Duration::from_secs_f64(secs)));
    }
    let (method, path_text) = match (&raw.request, raw.method, raw.path) {
        (Some(name), None, None) => {
            let request = spec
                .requests
                .iter()
                .find(|r| &r.name == name)
                .with_context(|| format!("the spec has no request {name:?}"))?;
            (request.method.clone(), request.path.clone())
        }
        (None, Some(method), Some(path)) => (method.to_ascii_uppercase(), path),
        _ => bail!("give either `request` (a name from wizard-spec/) or `method` and `path`"),
    };
    let method =
        reqwest::Method::from_bytes(method.as_bytes()).context("method: not an HTTP method")?;
    ensure!(
        path_text.starts_with('/')
            && !path_text.starts_with("//")
            && !path_text.contains(['@', '\\', '#']),
        "path: must be an absolute path on the server (one leading /, no @, \\ or #)"
    );
    let path = Template::parse(&path_text).context("path")?;
    ensure!(
        matches!(path.pieces().first(), Some(Piece::Text(t)) if t.len() > 1),
        "path: must start with a fixed segment, not a template"
    );
    let auth = raw.auth.unwrap_or(Auth::None);
    ensure!(
        auth != Auth::Admin || path_text.starts_with(ADMIN_API),
        "auth: admin sends the admin token, so only to {ADMIN_API}"
    );
    let bearer = match raw.bearer {
        None => None,
        Some(_) if auth != Auth::None => bail!("give `auth` or `bearer`, not both"),
        Some(_) if path_text.starts_with(ADMIN_API) => {
            bail!("bearer: an access token, so not to {ADMIN_API} (use `auth`)")
        }
        Some(token) => Some(Template::parse(&token).context("bearer")?),
    };
    let headers = raw
        .headers
        .iter()
        .map(|(name, value)| {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("header {name:?}"))?;
            ensure!(
                !name.eq_ignore_ascii_case("authorization"),
                "set the Authorization header with `auth` or `bearer`"
            );
            Ok((
                name.clone(),
                Template::parse(value).with_context(|| format!("header {name}"))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let body = match (raw.body, raw.raw_body) {
        (Some(_), Some(_)) => bail!("give `body` or `raw_body`, not both"),
        (Some(json), None) => Body::Json(json),
        (None, Some(raw)) => Body::Raw(Template::parse(&raw).context("raw_body")?),
        (None, None) => Body::None,
    };
    let expect = raw
        .expect
        .context("every request step says what to `expect`")?;
    let repeat = raw.repeat.unwrap_or(1);
    ensure!(
        (1..=MAX_REPEAT).contains(&repeat),
        "repeat: 1 to {MAX_REPEAT}"
    );
    Ok(Step::Call(Box::new(Call {
        request: raw.request,
        method,
        path,
        path_text,
        auth,
        bearer,
        headers,
        body,
        expect,
        capture: raw.capture,
        repeat,
    })))
}

impl RawStep {
    fn is_empty(&self) -> bool {
        let RawStep {
            request,
            method,
            path,
            auth,
            bearer,
            headers,
            body,
            raw_body,
            expect,
            capture,
            repeat,
            wait,
        } = self;
        request.is_none()
            && method.is_none()
            && path.is_none()
            && auth.is_none()
            && bearer.is_none()
            && headers.is_empty()
            && body.is_none()
            && raw_body.is_none()
            && expect.is_none()
            && capture.is_empty()
            && repeat.is_none()
            && wait.is_none()
    }
}

/// What the templates of a scenario may name so far.
struct Known<'a> {
    users: &'a BTreeMap<String, UserFixture>,
    captured: BTreeSet<String>,
}

impl Known<'_> {
    /// Every template of `call` names something that will exist when it runs.
    fn check(&mut self, call: &Call) -> anyhow::Result<()> {
        let mut strings = Vec::new();
        if let Body::Json(json) = &call.body {
            strings_in(json, &mut strings);
        }
        let checks = call.checks();
        for check in &checks {
            if let Want::Equals(value) = &check.want {
                strings_in(value, &mut strings);
            }
        }
        let mut templates = vec![call.path.clone()];
        templates.extend(call.bearer.clone());
        templates.extend(call.headers.values().cloned());
        if let Body::Raw(raw) = &call.body {
            templates.push(raw.clone());
        }
        for s in strings {
            templates.push(Template::parse(s)?);
        }
        let mut sent_totp = Vec::new();
        for template in &templates {
            for piece in template.pieces() {
                let Piece::Expr(expr) = piece else { continue };
                match expr {
                    Expr::Captured(name) => {
                        ensure!(
                            self.captured.contains(name),
                            "`{{{{{name}}}}}`: no earlier step captures {name:?}"
                        )
                    }
                    Expr::TotpOf { capture, .. } => {
                        ensure!(
                            self.captured.contains(capture),
                            "`totp_of:{capture}`: no earlier step captures {capture:?}"
                        );
                        // Both would be the Hurl variable `totp_<name>`.
                        ensure!(
                            self.users
                                .get(capture)
                                .is_none_or(|u| u.totp_secret.is_none()),
                            "`totp_of:{capture}`: {capture} is also a fixture with a totp_secret; capture the secret under another name"
                        );
                    }
                    Expr::User { name, field } => {
                        let user = self
                            .users
                            .get(name)
                            .with_context(|| format!("no fixture user {name:?}"))?;
                        match field {
                            UserField::Totp | UserField::TotpWrong => {
                                ensure!(user.totp_secret.is_some(), "{name} has no totp_secret");
                                sent_totp.push(name.clone());
                            }
                            UserField::LastTotp => ensure!(
                                self.captured.contains(&last_totp_key(name)),
                                "{name}.last_totp: no earlier step sends {name}.totp"
                            ),
                            UserField::Phone | UserField::Sms | UserField::SmsWrong => {
                                ensure!(user.has_phone(), "{name} has no phone")
                            }
                            UserField::Id
                            | UserField::Email
                            | UserField::Password
                            | UserField::EmailCode => {}
                        }
                    }
                    Expr::Run | Expr::Fingerprint | Expr::OtherFingerprint | Expr::Filler(_) => {}
                }
            }
        }
        self.captured
            .extend(sent_totp.iter().map(|u| last_totp_key(u)));
        self.captured.extend(call.capture.keys().cloned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(steps: &str) -> anyhow::Result<Scenario> {
        let text = format!(
            "name: t\nusers:\n  alice: {{ totp_secret: JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP }}\n  bob: {{}}\nsteps:\n{steps}"
        );
        parse(&text, Path::new("t.yaml"), &Spec::load().unwrap())
    }

    #[test]
    fn a_good_scenario_parses() {
        let s = parsed(
            "  - request: start\n    expect: { status: 200 }\n    capture: { uuid: uuid }\n  - request: totp_code\n    body: { uuid: '{{uuid}}', code: '{{alice.totp}}' }\n    expect: { status: 202 }\n  - wait: 1\n  - request: totp_code\n    body: { uuid: '{{uuid}}', code: '{{alice.last_totp}}' }\n    expect: { status: 401 }\n",
        )
        .unwrap();
        assert_eq!(s.steps.len(), 4);
        let s = parsed(
            "  - request: credentials\n    body: { uuid: x }\n    expect: { status: 202 }\n    capture: { access: data.accessToken.token }\n  - method: GET\n    path: /api/v2/my/me\n    bearer: '{{access}}'\n    expect: { status: 200 }\n",
        )
        .unwrap();
        let Step::Call(me) = &s.steps[1] else {
            panic!("a request")
        };
        assert_eq!(me.bearer, Some(Template::parse("{{access}}").unwrap()));
        let s = parsed(
            "  - request: credentials\n    body: { uuid: x }\n    expect: { status: 200 }\n    capture: { secret: data.secret }\n  - request: enroll_totp\n    body: { uuid: x, code: '{{totp_of:secret}}' }\n    expect: { status: 202 }\n",
        )
        .unwrap();
        let Step::Call(enrol) = &s.steps[1] else {
            panic!("a request")
        };
        let Body::Json(body) = &enrol.body else {
            panic!("a JSON body")
        };
        assert_eq!(body["code"], "{{totp_of:secret}}");
    }

    #[test]
    fn a_fixture_may_be_required_to_have_a_second_factor() {
        let s = parse(
            "name: t\nusers:\n  dora: { second_factor_required: true }\n  eve: {}\nsteps:\n  - request: start\n    expect: { status: 200 }\n",
            Path::new("t.yaml"),
            &Spec::load().unwrap(),
        )
        .unwrap();
        let body = |name: &str| s.users[name].create_body(name, "r1", None);
        assert_eq!(body("dora")["second_factor_required"], true);
        assert_eq!(body("eve")["second_factor_required"], false);
    }

    #[test]
    fn bad_scenarios_are_refused_before_anything_runs() {
        let bad = [
            (
                "  - request: nope\n    expect: { status: 200 }\n",
                "no request",
            ),
            (
                "  - method: GET\n    path: '@evil.test/x'\n    expect: { status: 200 }\n",
                "absolute path",
            ),
            (
                "  - method: GET\n    path: '//evil.test/x'\n    expect: { status: 200 }\n",
                "absolute path",
            ),
            (
                "  - method: GET\n    path: '{{uuid}}/x'\n    expect: { status: 200 }\n",
                "absolute path",
            ),
            (
                "  - method: GET\n    path: '/{{uuid}}'\n    expect: { status: 200 }\n",
                "fixed segment",
            ),
            (
                "  - method: GET\n    path: /api/v2/my/x\n    auth: admin\n    expect: { status: 200 }\n",
                "admin",
            ),
            (
                "  - method: 'GE T'\n    path: /x\n    expect: { status: 200 }\n",
                "method",
            ),
            (
                "  - request: start\n    headers: { 'bad header': x }\n    expect: { status: 200 }\n",
                "header",
            ),
            (
                "  - request: start\n    headers: { Authorization: x }\n    expect: { status: 200 }\n",
                "auth",
            ),
            (
                "  - method: GET\n    path: /api/v2/my/me\n    bearer: '{{access}}'\n    expect: { status: 200 }\n",
                "captures",
            ),
            (
                "  - method: GET\n    path: /api/v2/admin/users\n    bearer: x\n    expect: { status: 200 }\n",
                "not to",
            ),
            (
                "  - method: GET\n    path: /api/v2/my/me\n    auth: wrong_admin\n    bearer: x\n    expect: { status: 200 }\n",
                "not both",
            ),
            (
                "  - request: start\n    body: { x: '{{carol.email}}' }\n    expect: { status: 200 }\n",
                "no fixture user",
            ),
            (
                "  - request: start\n    body: { x: '{{bob.totp}}' }\n    expect: { status: 200 }\n",
                "no totp_secret",
            ),
            (
                "  - request: start\n    body: { x: '{{bob.sms}}' }\n    expect: { status: 200 }\n",
                "no phone",
            ),
            (
                "  - request: start\n    body: { x: '{{uuid}}' }\n    expect: { status: 200 }\n",
                "captures",
            ),
            (
                "  - request: start\n    body: { x: '{{alice.last_totp}}' }\n    expect: { status: 200 }\n",
                "last_totp",
            ),
            (
                "  - request: start\n    body: { x: '{{alice.nothing}}' }\n    expect: { status: 200 }\n",
                "has no",
            ),
            (
                "  - request: start\n    expect: { status: 200, json: { a: '{{uuid}}' } }\n",
                "captures",
            ),
            (
                "  - request: start\n    body: { code: '{{totp_of:secret}}' }\n    expect: { status: 200 }\n    capture: { secret: data.secret }\n",
                "no earlier step captures",
            ),
            (
                "  - request: start\n    expect: { status: 200 }\n    capture: { alice: data.secret }\n  - request: start\n    body: { code: '{{totp_of:alice}}' }\n    expect: { status: 200 }\n",
                "also a fixture",
            ),
            ("  - request: start\n", "expect"),
            (
                "  - request: start\n    repeat: 0\n    expect: { status: 200 }\n",
                "repeat",
            ),
            (
                "  - request: start\n    repeat: 1000\n    expect: { status: 200 }\n",
                "repeat",
            ),
            (
                "  - wait: 1e10\n  - request: start\n    expect: { status: 200 }\n",
                "wait",
            ),
            (
                "  - wait: 1\n    capture: { a: b }\n  - request: start\n    expect: { status: 200 }\n",
                "nothing else",
            ),
            ("  - wait: 1\n", "at least one request"),
            (
                "  - request: start\n    expect: { status: 200, nope: 1 }\n",
                "unknown field",
            ),
        ];
        for (steps, why) in bad {
            let err = format!("{:#}", parsed(steps).expect_err(steps));
            assert!(err.contains(why), "{steps}: {err} (wanted {why:?})");
        }
    }
}
