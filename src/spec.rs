//! `wizard-spec/wizard.json`, the machine as data: served to clients,
//! drawn as a diagram, and held to the code by `tests/api/spec.rs`.

use crate::wizard::Workflow;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// The spec as checked in, byte for byte.
pub const JSON: &str = include_str!("../wizard-spec/wizard.json");

/// The parts of the spec the service and its tests read.
#[derive(Debug, Deserialize)]
pub struct Spec {
    pub states: Vec<State>,
    pub requests: Vec<Request>,
    pub transitions: Vec<Transition>,
    pub rejections: Vec<ErrorAnswer>,
    pub shell_errors: Vec<ErrorAnswer>,
    pub other_errors: Vec<ErrorAnswer>,
    pub effects: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct State {
    pub step: String,
    pub workflow: String,
    pub accepts: Vec<String>,
    pub terminal: bool,
    pub note: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Request {
    pub name: String,
    pub method: String,
    pub path: String,
}

#[derive(Debug, Deserialize)]
pub struct Transition {
    pub from: Option<String>,
    pub request: String,
    pub to: String,
    pub label: String,
    pub effects: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
    pub status: u16,
}

/// A request a client may send next, as `meta.next` lists it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct NextRequest {
    pub request: &'static str,
    pub method: &'static str,
    pub path: &'static str,
}

/// The checked-in spec, read once (a test proves it reads).
static SPEC: LazyLock<Option<Spec>> = LazyLock::new(|| Spec::load().ok());

/// What a wizard at `workflow` accepts, from the spec: clients need not
/// hard-code the graph.
pub fn next_requests(workflow: Workflow) -> Vec<NextRequest> {
    let Some(spec) = SPEC.as_ref() else {
        return Vec::new();
    };
    let accepts = spec
        .states
        .iter()
        .find(|s| s.workflow == workflow.as_str())
        .map_or(&[][..], |s| &s.accepts[..]);
    accepts
        .iter()
        .filter_map(|name| spec.requests.iter().find(|r| &r.name == name))
        .map(|r| NextRequest {
            request: &r.name,
            method: &r.method,
            path: &r.path,
        })
        .collect()
}

impl Spec {
    pub fn load() -> anyhow::Result<Spec> {
        Ok(serde_json::from_str(JSON)?)
    }

    /// A Mermaid state diagram of the transitions (rejections change
    /// nothing, so they are not drawn).
    pub fn mermaid(&self) -> String {
        let mut out = String::from("stateDiagram-v2\n");
        for t in &self.transitions {
            let from = t.from.as_deref().unwrap_or("[*]");
            let shown: Vec<&str> = t
                .effects
                .iter()
                .filter_map(|e| match e.as_str() {
                    "send_sms" => Some("SendSms"),
                    "issue_tokens" => Some("IssueTokens"),
                    "email_reset_code" => Some("EmailCode"),
                    "email_no_account" => Some("EmailNotice"),
                    "set_password" => Some("SetPassword"),
                    "enable_totp" => Some("EnableTotp"),
                    _ => None,
                })
                .collect();
            let effects = match shown.as_slice() {
                [] => String::new(),
                shown => format!(" ({})", shown.join(", ")),
            };
            out += &format!("    {from} --> {}: {}{effects}\n", t.to, t.label);
        }
        for state in &self.states {
            if state.terminal {
                out += &format!("    {} --> [*]\n", state.step);
            }
            if let Some(note) = &state.note {
                out += &format!("    note right of {}: {note}\n", state.step);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_spec_reads_and_draws() {
        let spec = Spec::load().unwrap();
        let diagram = spec.mermaid();
        assert!(diagram.starts_with("stateDiagram-v2\n    [*] --> login: GET /signin/wizard\n"));
        assert!(
            diagram.contains("    totp_code --> terminated: valid, unused TOTP (IssueTokens)\n")
        );
        assert!(diagram.contains("    terminated --> [*]\n"));
    }
}
