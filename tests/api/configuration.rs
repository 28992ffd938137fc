//! Start-up settings that carry secrets, through the real binary: set but
//! empty (or too weak) is refused with a clear message, and no output ever
//! repeats a credential.

use crate::helpers::free_port;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Run {
    /// `None` when it was still running (serving) after the grace period.
    exited: Option<bool>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `envs` (and nothing else of ours from the
/// environment) for at most ten seconds.
fn run(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signin-wizard"));
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("WIZARD_")) {
        command.env_remove(key);
    }
    command
        .args(args)
        .env("WIZARD_BIND", "127.0.0.1:0")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.success());
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    Run {
        exited,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn an_empty_or_short_admin_token_stops_the_service_from_starting() {
    for token in ["", "   ", "short-admin-token-31-characters"] {
        let run = run(&[], &[("WIZARD_ADMIN_TOKEN", token)]);
        assert_eq!(
            run.exited,
            Some(false),
            "{token:?} must not start: {}",
            run.stdout
        );
        assert!(
            run.stderr.contains("WIZARD_ADMIN_TOKEN") && run.stderr.contains("32 characters"),
            "{}",
            run.stderr
        );
        if !token.trim().is_empty() {
            assert!(
                !run.stderr.contains(token),
                "the token is echoed: {}",
                run.stderr
            );
        }
    }
    // A long enough token serves (until the test stops it).
    let run = run(
        &[],
        &[(
            "WIZARD_ADMIN_TOKEN",
            "a-long-enough-admin-token-for-the-test",
        )],
    );
    assert_eq!(run.exited, None, "{}", run.stderr);
    assert!(
        !run.stdout.contains("a-long-enough-admin-token"),
        "{}",
        run.stdout
    );
}

#[test]
fn every_other_secret_or_credential_setting_refuses_an_empty_value() {
    for variable in [
        "WIZARD_RECAPTCHA_SECRET",
        "WIZARD_RECAPTCHA_SITE_KEY",
        "WIZARD_RECAPTCHA_VERIFY_URL",
        "WIZARD_RECAPTCHA_HOSTNAMES",
        "WIZARD_SMS_WEBHOOK_URL",
        "WIZARD_REDIS_URL",
        "WIZARD_JWT_PRIVATE_KEY_FILE",
        "WIZARD_JWT_ISSUER",
        "WIZARD_JWT_AUDIENCE",
    ] {
        let run = run(&[], &[(variable, "")]);
        assert_eq!(run.exited, Some(false), "{variable}= must not start");
        assert!(
            run.stderr.contains(variable) && run.stderr.contains("empty"),
            "{variable}: {}",
            run.stderr
        );
    }
}

#[test]
fn help_never_shows_credentials_from_the_environment() {
    let secrets = [
        ("WIZARD_REDIS_URL", "redis://:hunter-one@127.0.0.1:6399/0"),
        (
            "WIZARD_SMS_WEBHOOK_URL",
            "https://acct:hunter-two@sms.test/send?key=hunter-three",
        ),
        ("WIZARD_RECAPTCHA_SECRET", "hunter-four"),
        (
            "WIZARD_RECAPTCHA_VERIFY_URL",
            "https://user:hunter-five@verify.test/",
        ),
        (
            "WIZARD_ADMIN_TOKEN",
            "hunter-six-admin-token-long-enough-000",
        ),
    ];
    for args in [&["serve", "--help"][..], &["user", "add", "--help"][..]] {
        let run = run(args, &secrets);
        assert_eq!(run.exited, Some(true), "{}", run.stderr);
        assert!(run.stdout.contains("WIZARD_REDIS_URL"));
        assert!(!run.stdout.contains("hunter"), "{}", run.stdout);
    }
}

#[test]
fn a_redis_password_with_at_signs_never_reaches_the_output() {
    let url = format!("redis://:hunter@2@127.0.0.1:{}/0", free_port());
    let run = run(&[], &[("WIZARD_REDIS_URL", &url)]);
    assert_eq!(run.exited, Some(false));
    assert!(
        run.stderr
            .contains("cannot reach Redis at redis://:***@127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("hunter") && !run.stderr.contains("2@"),
        "{}",
        run.stderr
    );
}
