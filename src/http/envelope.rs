pub use crate::clock::rfc3339;
use crate::domain::WizardId;
use crate::spec::{self, NextRequest};
use crate::wizard::{Wizard, Workflow};
use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The one response shape of every wizard endpoint, success or error.
/// `code` always equals the HTTP status.
#[derive(Debug, Serialize)]
pub struct Envelope<D: Serialize> {
    pub code: u16,
    pub data: D,
    pub done: bool,
    pub uuid: Option<WizardId>,
    pub workflow: Workflow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
}

/// Extras beyond the B2Core contract.
#[derive(Debug, Serialize)]
pub struct Meta {
    /// When the wizard stops accepting steps.
    #[serde(rename = "expiresAt")]
    pub expires_at: String,
    /// Only when a wizard starts: send it back as `X-Wizard-Key`.
    #[serde(rename = "wizardKey", skip_serializing_if = "Option::is_none")]
    pub wizard_key: Option<String>,
    /// The requests the wizard accepts at its step (from `wizard-spec/`),
    /// so that clients need not hard-code the graph.
    pub next: Vec<NextRequest>,
}

impl Meta {
    pub fn new(workflow: Workflow, expires_at: DateTime<Utc>) -> Self {
        Meta {
            expires_at: rfc3339(expires_at),
            wizard_key: None,
            next: spec::next_requests(workflow),
        }
    }
}

impl<D: Serialize> Envelope<D> {
    /// 200 for an intermediate step, 202 once the wizard reached `Terminate`.
    pub fn for_wizard(wizard: &Wizard, data: D) -> Self {
        let done = wizard.workflow() == Workflow::Terminate;
        let status = if done {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        Self {
            code: status.as_u16(),
            data,
            done,
            uuid: Some(wizard.id),
            workflow: wizard.workflow(),
            meta: Some(Meta::new(wizard.workflow(), wizard.expires_at)),
        }
    }

    /// An answer about a signed-in session (no wizard: the sign-in is done).
    pub fn signed_in(data: D) -> Self {
        Self {
            code: StatusCode::OK.as_u16(),
            data,
            done: true,
            uuid: None,
            workflow: Workflow::Terminate,
            meta: None,
        }
    }

    pub fn respond(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status)
            .insert_header(("Cache-Control", "no-store"))
            .json(self)
    }
}
