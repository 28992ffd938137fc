//! `replay export --format hurl`: each scenario as a `.hurl` file that the
//! stock `hurl` CLI runs, for QA teams that keep their own tool. What Hurl
//! cannot work out itself comes in as variables (`base_url`, `admin_token`,
//! `run`, `sms_sink`, one `totp_<user>` per TOTP fixture, one `totp_<name>`
//! per secret captured as `name` and used through `totp_of`); phone numbers
//! and SMS codes come from `signin-wizard replay sink`.

use super::scenario::{Auth, Body, Call, Check, Scenario, Step, WRONG_ADMIN_TOKEN, Want};
use super::template::{Expr, Piece, Template, UserField, fingerprint, map_json, wrong_code};
use anyhow::Context as _;
use serde_json::Value;
use std::fmt::Write as _;

/// The `.hurl` text of `scenario`.
pub fn export(scenario: &Scenario) -> anyhow::Result<String> {
    let mut out = Export {
        scenario,
        text: String::new(),
        delay_ms: None,
    };
    out.header()?;
    // Unique per file: Hurl runs files in parallel with the same variables.
    let run = format!("{}-{{{{run}}}}", scenario.name);
    for (name, fixture) in &scenario.users {
        writeln!(out.text, "# fixture {name}")?;
        let phone = if fixture.phone || fixture.phone_unreachable {
            let query = if fixture.phone_unreachable {
                "?unreachable=true"
            } else {
                ""
            };
            writeln!(out.text, "GET {{{{sms_sink}}}}/numbers/new{query}")?;
            writeln!(
                out.text,
                "HTTP 200\n[Captures]\n{name}_phone: jsonpath \"$.number\"\n"
            )?;
            Some(format!("{{{{{name}_phone}}}}"))
        } else {
            None
        };
        let body = fixture.create_body(name, &run, phone.as_deref());
        out.admin_request(
            "POST",
            "/api/v2/admin/users",
            Some(&serde_json::to_string_pretty(&body)?),
        )?;
        writeln!(
            out.text,
            "HTTP 201\n[Captures]\n{name}_id: jsonpath \"$.id\"\n"
        )?;
    }
    if let Some(settings) = &scenario.settings {
        writeln!(
            out.text,
            "# the settings this scenario needs (restored at its end)"
        )?;
        out.admin_request("GET", "/api/v2/admin/settings", None)?;
        writeln!(out.text, "HTTP 200\n[Captures]")?;
        for key in settings.keys() {
            writeln!(out.text, "saved_{key}: jsonpath \"$.{key}\"")?;
        }
        writeln!(out.text)?;
        out.admin_request(
            "PUT",
            "/api/v2/admin/settings",
            Some(&serde_json::to_string_pretty(settings)?),
        )?;
        writeln!(out.text, "HTTP 200\n")?;
    }
    for (i, step) in scenario.steps.iter().enumerate() {
        match step {
            Step::Wait(by) => {
                let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
                out.delay_ms = Some(out.delay_ms.unwrap_or(0).saturating_add(ms));
            }
            Step::Call(call) => out
                .call(i + 1, call)
                .with_context(|| format!("step {}", i + 1))?,
        }
    }
    if let Some(settings) = &scenario.settings {
        writeln!(out.text, "# restore the settings")?;
        let restore = settings
            .keys()
            .map(|k| format!("  \"{k}\": {{{{saved_{k}}}}}"))
            .collect::<Vec<_>>()
            .join(",\n");
        out.admin_request(
            "PUT",
            "/api/v2/admin/settings",
            Some(&format!("{{\n{restore}\n}}")),
        )?;
        writeln!(out.text, "HTTP 200\n")?;
    }
    for name in scenario.users.keys() {
        writeln!(out.text, "# remove fixture {name}")?;
        out.admin_request(
            "DELETE",
            &format!("/api/v2/admin/users/{{{{{name}_id}}}}"),
            None,
        )?;
        writeln!(out.text, "HTTP 204\n")?;
    }
    Ok(out.text)
}

struct Export<'s> {
    scenario: &'s Scenario,
    text: String,
    /// A wait before the next request becomes its `delay`.
    delay_ms: Option<u64>,
}

impl Export<'_> {
    fn header(&mut self) -> anyhow::Result<()> {
        let s = self.scenario;
        writeln!(self.text, "# {}", s.name)?;
        for line in s.description.lines() {
            writeln!(self.text, "# {line}")?;
        }
        let file = s.file.file_name().unwrap_or_default().to_string_lossy();
        writeln!(
            self.text,
            "#\n# Exported by `signin-wizard replay export --format hurl` from {file}."
        )?;
        if s.settings.is_some() {
            writeln!(
                self.text,
                "# It changes the service's settings for everyone: run it on a dedicated instance."
            )?;
        }
        writeln!(
            self.text,
            "# SMS_SINK is what `signin-wizard replay sink` prints."
        )?;
        writeln!(
            self.text,
            "# hurl --test \\\n#   --variable base_url=http://127.0.0.1:8080 --secret admin_token=$WIZARD_ADMIN_TOKEN \\"
        )?;
        writeln!(
            self.text,
            "#   --variable run=$(date +%s) --variable sms_sink=$SMS_SINK \\"
        )?;
        for (name, fixture) in &s.users {
            if let Some(secret) = &fixture.totp_secret {
                // Quoted: Hurl would read 012345 as the number 12345.
                writeln!(
                    self.text,
                    "#   --variable \"totp_{name}=\\\"$(oathtool --totp -b {secret})\\\"\" \\"
                )?;
            }
        }
        writeln!(self.text, "#   {}.hurl", s.name)?;
        let captured_secrets = totp_of_names(s);
        if !captured_secrets.is_empty() {
            writeln!(
                self.text,
                "# Codes of secrets the service hands out during the run are variables too: Hurl cannot"
            )?;
            writeln!(
                self.text,
                "# compute them, so a run stops at the step that sends one unless it is given:"
            )?;
            for name in captured_secrets {
                writeln!(
                    self.text,
                    "#   totp_{name}: the code of the secret captured as {name}"
                )?;
            }
        }
        writeln!(self.text)?;
        Ok(())
    }

    fn call(&mut self, number: usize, call: &Call) -> anyhow::Result<()> {
        for user in call.sms_users() {
            writeln!(self.text, "# the last SMS code sent to {user}")?;
            writeln!(
                self.text,
                "GET {{{{sms_sink}}}}/sms/last\n[Query]\nto: {{{{{user}_phone}}}}"
            )?;
            writeln!(
                self.text,
                "HTTP 200\n[Captures]\nsms_{user}: jsonpath \"$.code\"\n"
            )?;
        }
        writeln!(
            self.text,
            "# step {number}: {}",
            call.request.as_deref().unwrap_or("request")
        )?;
        self.line(call.method.as_str(), &call.path, call.auth)?;
        if let Some(bearer) = &call.bearer {
            writeln!(self.text, "Authorization: Bearer {}", self.text_of(bearer))?;
        }
        for (name, value) in &call.headers {
            writeln!(self.text, "{name}: {}", self.text_of(value))?;
        }
        if let Body::Raw(_) = call.body {
            writeln!(self.text, "Content-Type: application/json")?;
        }
        self.options((call.repeat > 1).then_some(call.repeat))?;
        match &call.body {
            Body::None => {}
            Body::Json(json) => {
                let json = map_json(json, &mut |t| Ok(Value::String(self.text_of(t))))?;
                writeln!(self.text, "{}", serde_json::to_string_pretty(&json)?)?;
            }
            Body::Raw(raw) => writeln!(self.text, "```\n{}\n```", self.text_of(raw))?,
        }
        writeln!(self.text, "HTTP {}", call.expect.status)?;
        if !call.capture.is_empty() {
            writeln!(self.text, "[Captures]")?;
            for (name, path) in &call.capture {
                writeln!(self.text, "{name}: jsonpath \"{}\"", json_path(path))?;
            }
        }
        let mut asserts = Vec::new();
        for Check { path, want } in call.checks() {
            match want {
                Want::Present => asserts.push(format!("jsonpath \"{}\" exists", json_path(&path))),
                Want::Equals(value) => self.equals(&path, &value, &mut asserts)?,
            }
        }
        if !asserts.is_empty() {
            writeln!(self.text, "[Asserts]\n{}", asserts.join("\n"))?;
        }
        writeln!(self.text)?;
        Ok(())
    }

    /// Hurl compares scalars: a whole array or object becomes its count and
    /// an assertion per member.
    fn equals(&self, path: &str, value: &Value, out: &mut Vec<String>) -> anyhow::Result<()> {
        let at = json_path(path);
        match value {
            Value::Array(items) => {
                out.push(format!("jsonpath \"{at}\" count == {}", items.len()));
                for (i, v) in items.iter().enumerate() {
                    self.equals(&format!("{path}.{i}"), v, out)?;
                }
            }
            Value::Object(fields) => {
                if fields.is_empty() {
                    out.push(format!("jsonpath \"{at}\" count == 0"));
                }
                for (k, v) in fields {
                    self.equals(&format!("{path}.{k}"), v, out)?;
                }
            }
            Value::String(s) => out.push(format!(
                "jsonpath \"{at}\" == {}",
                quoted(&self.text_of(&Template::parse(s)?))
            )),
            scalar => out.push(format!("jsonpath \"{at}\" == {scalar}")),
        }
        Ok(())
    }

    /// An admin API request whose body is already in Hurl's terms.
    fn admin_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<()> {
        self.line(method, &Template::parse(path)?, Auth::Admin)?;
        self.options(None)?;
        if let Some(body) = body {
            writeln!(self.text, "{body}")?;
        }
        Ok(())
    }

    /// `[Options]`: a wait before this request, and its repetitions.
    fn options(&mut self, repeat: Option<u32>) -> anyhow::Result<()> {
        let delay = self.delay_ms.take();
        if delay.is_some() || repeat.is_some() {
            writeln!(self.text, "[Options]")?;
        }
        if let Some(ms) = delay {
            writeln!(self.text, "delay: {ms}")?;
        }
        if let Some(n) = repeat {
            writeln!(self.text, "repeat: {n}")?;
        }
        Ok(())
    }

    fn line(&mut self, method: &str, path: &Template, auth: Auth) -> anyhow::Result<()> {
        writeln!(self.text, "{method} {{{{base_url}}}}{}", self.text_of(path))?;
        match auth {
            Auth::None => {}
            Auth::Admin => writeln!(self.text, "Authorization: Bearer {{{{admin_token}}}}")?,
            Auth::WrongAdmin => writeln!(self.text, "Authorization: Bearer {WRONG_ADMIN_TOKEN}")?,
        }
        Ok(())
    }

    /// A template in Hurl's terms.
    fn text_of(&self, template: &Template) -> String {
        let mut out = String::new();
        for piece in template.pieces() {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Expr(expr) => out.push_str(&self.expression(expr)),
            }
        }
        out
    }

    fn expression(&self, expr: &Expr) -> String {
        let var = |name: String| format!("{{{{{name}}}}}");
        match expr {
            Expr::Run => format!("{}-{}", self.scenario.name, var("run".into())),
            Expr::Fingerprint => fingerprint("replay/hurl"),
            Expr::OtherFingerprint => fingerprint("replay-other/hurl"),
            Expr::Filler(bytes) => "x".repeat(*bytes),
            Expr::Captured(name) => var(name.clone()),
            // Hurl cannot compute a code: left to a variable, like a
            // fixture's; a wrong one fixed, like a fixture's.
            Expr::TotpOf {
                capture,
                wrong: false,
            } => var(format!("totp_{capture}")),
            Expr::TotpOf { wrong: true, .. } => wrong_code(&[]),
            Expr::User { name, field } => match field {
                UserField::Id => var(format!("{name}_id")),
                UserField::Email => format!(
                    "{name}-{}-{}@replay.test",
                    self.scenario.name,
                    var("run".into())
                ),
                UserField::Password => self.scenario.users[name].password(
                    name,
                    &format!("{}-{}", self.scenario.name, var("run".into())),
                ),
                UserField::Phone => var(format!("{name}_phone")),
                UserField::Totp | UserField::LastTotp => var(format!("totp_{name}")),
                UserField::Sms => var(format!("sms_{name}")),
                // Hurl cannot read replay's mailbox: left to a variable the
                // run must give, or it stops there.
                UserField::EmailCode => var(format!("email_code_{name}")),
                // Hurl cannot compute a code: fixed, with about one chance in
                // 300,000 of being valid at that moment.
                UserField::TotpWrong | UserField::SmsWrong => wrong_code(&[]),
            },
        }
    }
}

/// The captures whose TOTP codes the scenario sends (`totp_of:NAME`), in
/// the order first used.
fn totp_of_names(scenario: &Scenario) -> Vec<String> {
    let mut names = Vec::new();
    for step in &scenario.steps {
        let Step::Call(call) = step else { continue };
        for template in call.templates() {
            for piece in template.pieces() {
                if let Piece::Expr(Expr::TotpOf {
                    capture,
                    wrong: false,
                }) = piece
                    && !names.contains(capture)
                {
                    names.push(capture.clone());
                }
            }
        }
    }
    names
}

/// `a.0.b` as the JSONPath `$.a[0].b`.
fn json_path(dotted: &str) -> String {
    dotted.split('.').fold("$".to_owned(), |mut acc, key| {
        if key.parse::<usize>().is_ok() {
            let _ = write!(acc, "[{key}]");
        } else {
            let _ = write!(acc, ".{key}");
        }
        acc
    })
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;
    use std::path::Path;

    #[test]
    fn a_captured_secrets_code_is_a_variable_the_header_names() {
        let scenario = super::super::scenario::parse(
            "name: enrol\nusers:\n  dora: { second_factor_required: true }\nsteps:\n  - request: credentials\n    body: { uuid: x }\n    expect: { status: 200 }\n    capture: { secret: data.secret }\n  - request: enroll_totp\n    body: { uuid: x, code: '{{totp_of:secret}}' }\n    expect: { status: 202 }\n",
            Path::new("enrol.yaml"),
            &Spec::load().unwrap(),
        )
        .unwrap();
        let text = export(&scenario).unwrap();
        assert!(text.contains("\"code\": \"{{totp_secret}}\""), "{text}");
        assert!(
            text.contains("#   totp_secret: the code of the secret captured as secret\n"),
            "{text}"
        );
        assert!(text.contains("\"second_factor_required\": true"), "{text}");
    }
}
