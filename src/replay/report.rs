//! What a replay prints, and its JUnit XML.

use super::runner::{Outcome, ScenarioReport};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

/// A scenario's block of the console output: its name, one line per step,
/// then, if it failed, why (with the failing request and answer).
pub fn console(report: &ScenarioReport) -> String {
    let verdict = match report.outcome {
        Outcome::Passed => "PASS",
        Outcome::Failed(_) => "FAIL",
        Outcome::Skipped(_) => "SKIP",
    };
    let mut out = format!(
        "{verdict} {} ({}, {} ms)\n",
        report.name,
        report.file,
        report.duration.as_millis()
    );
    for line in &report.lines {
        out.push_str(line);
        out.push('\n');
    }
    if let Outcome::Failed(why) | Outcome::Skipped(why) = &report.outcome {
        for line in why.lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `N passed, N failed`, and how many were skipped if any were.
pub fn totals(reports: &[ScenarioReport]) -> String {
    let count = |f: fn(&ScenarioReport) -> bool| reports.iter().filter(|r| f(r)).count();
    let line = format!(
        "{} passed, {} failed",
        count(ScenarioReport::passed),
        count(ScenarioReport::failed)
    );
    match reports.len() - count(ScenarioReport::passed) - count(ScenarioReport::failed) {
        0 => line,
        skipped => format!("{line} ({skipped} skipped)"),
    }
}

/// One test suite, one test case per scenario (classname: its file).
pub fn junit(reports: &[ScenarioReport]) -> anyhow::Result<String> {
    let mut suite = TestSuite::new("replay");
    for report in reports {
        let status = match &report.outcome {
            Outcome::Passed => TestCaseStatus::success(),
            Outcome::Failed(failure) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let first = failure.lines().next().unwrap_or_default().to_owned();
                status.set_message(first).set_description(failure.clone());
                status
            }
            Outcome::Skipped(why) => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(why.clone());
                status
            }
        };
        let mut case = TestCase::new(report.name.clone(), status);
        case.set_classname(report.file.clone())
            .set_time(report.duration)
            .set_system_out(report.lines.join("\n"));
        suite.add_test_case(case);
    }
    let mut junit = Report::new("signin-wizard replay");
    junit.add_test_suite(suite);
    Ok(junit.to_string()?)
}
