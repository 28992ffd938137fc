//! `signin-wizard replay`: the QA scenarios of `wizard-spec/scenarios/`, run
//! against any instance over HTTP, or exported for Hurl.

pub mod hurl;
pub mod mailbox;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sink;
pub mod template;

pub use mailbox::{MailSink, Mailbox};
pub use runner::{Observation, Outcome, ScenarioReport, Target, Time, run_all};
pub use scenario::Scenario;
pub use sink::{Inbox, SmsSink};

/// Where the shipped scenarios live, from the repository's root.
pub const SHIPPED: &str = "wizard-spec/scenarios";
