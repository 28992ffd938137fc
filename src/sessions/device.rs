//! What a client's `User-Agent` says about its device, for the "your
//! sessions" page: browser, OS and the kind of device.
//!
//! The parsing is [woothee]'s. We chose it over the uap-core implementations
//! (`ua-parser`, `uaparser`, `user-agent-parser`) and `fast_uaparser` because:
//! - its rules are compiled in, so there is no `regexes.yaml` (about 200 KB)
//!   to ship, load and keep current at run time; `fast_uaparser` instead
//!   downloads that file in its build script, which fails without a network;
//! - it is cheap where it runs, on async workers: about 1 µs a parse and
//!   0.4 ms once per process for its few dozen small regexes (it keeps them
//!   in its own statics, so we need no `LazyLock`), where `ua-parser` needs
//!   about 200 ms to build its extractor from uap-core's ~1000 regexes and
//!   then about 6 µs a parse;
//! - it adds no other crate to the build (`regex` and `lazy_static` were
//!   already in the lockfile), where `uaparser` brings the archived
//!   `serde_yaml` we moved away from;
//! - it names a device category (pc, smartphone, crawler...), which uap-core
//!   does not, so mobile, desktop and bot need no rules of ours.
//!
//! Its cost: its last release (0.13, 2021) follows woothee's dataset 1.13.
//! Browsers have since frozen most of their user agent (Chrome's and
//! Firefox's UA reduction), so that ages slowly, but a browser newer than
//! the dataset shows as the engine it reports (usually "Chrome").
//!
//! What no parser can tell from a user agent: Windows 11 sends `Windows NT
//! 10.0`, so it shows as Windows 10; iPadOS 13 and later Safari asks for
//! desktop sites by default and sends a Mac's user agent, so it shows as a
//! macOS desktop.

use serde::{Deserialize, Serialize};
use woothee::parser::{Parser, WootheeResult};
use woothee::woothee::VALUE_UNKNOWN;

/// Longer user agents are cut to this before parsing, so that a hostile one
/// costs no more than a real one (which is a few hundred bytes).
const MAX_USER_AGENT_BYTES: usize = 512;
/// Each stored field is cut to this many characters.
const MAX_FIELD_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// e.g. "Chrome"; None when unknown.
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    /// e.g. "iOS", "Windows"
    pub os: Option<String>,
    pub os_version: Option<String>,
    #[serde(rename = "type")]
    pub kind: DeviceKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Desktop,
    Mobile,
    Tablet,
    Bot,
    Unknown,
}

impl Device {
    /// What `user_agent` says; everything unknown for text no parser recognises.
    pub fn from_user_agent(user_agent: &str) -> Device {
        let user_agent = cut(user_agent);
        match Parser::new().parse(user_agent) {
            Some(found) => Self::from_woothee(&found, user_agent),
            None => Device {
                browser: None,
                browser_version: None,
                os: None,
                os_version: None,
                kind: DeviceKind::Unknown,
            },
        }
    }

    fn from_woothee(found: &WootheeResult<'_>, user_agent: &str) -> Device {
        let (os, os_version) = os(found);
        Device {
            browser: known(found.name),
            browser_version: known(found.version),
            os,
            os_version,
            kind: kind(found, user_agent),
        }
    }
}

/// The first `MAX_USER_AGENT_BYTES` bytes, less any part of a character
/// (`str::floor_char_boundary` is newer than our MSRV).
fn cut(user_agent: &str) -> &str {
    if user_agent.len() <= MAX_USER_AGENT_BYTES {
        return user_agent;
    }
    let end = (0..=MAX_USER_AGENT_BYTES)
        .rev()
        .find(|&end| user_agent.is_char_boundary(end))
        .unwrap_or(0);
    user_agent.get(..end).unwrap_or_default()
}

/// woothee's answer as a stored field: `None` for its "UNKNOWN", and cut to
/// `MAX_FIELD_CHARS` (a version is copied from the user agent, any length).
fn known(value: &str) -> Option<String> {
    if value.is_empty() || value == VALUE_UNKNOWN {
        return None;
    }
    Some(value.chars().take(MAX_FIELD_CHARS).collect())
}

/// The Windows releases woothee names ("Windows 10"), and so our versions.
const WINDOWS_RELEASES: [&str; 11] = [
    "10", "8.1", "8", "7", "Vista", "XP", "2000", "NT 4.0", "Me", "98", "95",
];

/// woothee names the device for Apple's systems ("iPhone") and the release
/// for Windows ("Windows 10", with "NT 10.0" as its version); the page shows
/// the system and its version, as users know them.
fn os(found: &WootheeResult<'_>) -> (Option<String>, Option<String>) {
    let version = known(&found.os_version);
    match found.os {
        "iPhone" | "iPad" | "iPod" | "iOS" => (Some("iOS".to_owned()), version),
        "Mac OSX" => (Some("macOS".to_owned()), version),
        "Windows UNKNOWN Ver" => (Some("Windows".to_owned()), None),
        name => match name.strip_prefix("Windows ") {
            Some(release) if WINDOWS_RELEASES.contains(&release) => {
                (Some("Windows".to_owned()), known(release))
            }
            // Also "Windows Phone OS" and "Windows CE": other systems.
            _ => (known(name), version),
        },
    }
}

fn kind(found: &WootheeResult<'_>, user_agent: &str) -> DeviceKind {
    match found.category {
        "pc" => DeviceKind::Desktop,
        "smartphone" if is_tablet(found, user_agent) => DeviceKind::Tablet,
        // "mobilephone" is a feature phone.
        "smartphone" | "mobilephone" => DeviceKind::Mobile,
        "crawler" => DeviceKind::Bot,
        // "appliance" (game consoles, TVs), "misc" (HTTP libraries, feed
        // readers) and what woothee does not recognise.
        _ => DeviceKind::Unknown,
    }
}

/// woothee counts tablets as smartphones. An iPad names itself; Android
/// browsers mark phones with `Mobile` and tablets by its absence (Chrome's
/// and Firefox's documented convention). Apps' own user agents (Dalvik,
/// HTTP clients) follow no such convention, so they stay phones.
fn is_tablet(found: &WootheeResult<'_>, user_agent: &str) -> bool {
    match found.os {
        "iPad" => true,
        "Android" => found.browser_type == "browser" && !user_agent.contains("Mobile"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(
        browser: Option<&str>,
        browser_version: Option<&str>,
        os: Option<&str>,
        os_version: Option<&str>,
        kind: DeviceKind,
    ) -> Device {
        Device {
            browser: browser.map(str::to_owned),
            browser_version: browser_version.map(str::to_owned),
            os: os.map(str::to_owned),
            os_version: os_version.map(str::to_owned),
            kind,
        }
    }

    fn unknown() -> Device {
        device(None, None, None, None, DeviceKind::Unknown)
    }

    const CHROME_WINDOWS_10: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

    /// A user agent, and its browser, browser version, OS, OS version and kind.
    type Case = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        DeviceKind,
    );

    /// Real user agents and what the sessions page shows for each.
    const KNOWN: &[Case] = &[
        (
            CHROME_WINDOWS_10,
            Some("Chrome"),
            Some("120.0.0.0"),
            Some("Windows"),
            Some("10"),
            DeviceKind::Desktop,
        ),
        // Edge is not Chrome, though it says Chrome too.
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
            Some("Edge"),
            Some("120.0.2210.91"),
            Some("Windows"),
            Some("10"),
            DeviceKind::Desktop,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1",
            Some("Safari"),
            Some("17.1.2"),
            Some("iOS"),
            Some("17.1.2"),
            DeviceKind::Mobile,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Safari/605.1.15",
            Some("Safari"),
            Some("17.1.2"),
            Some("macOS"),
            Some("10.15.7"),
            DeviceKind::Desktop,
        ),
        (
            "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            Some("Firefox"),
            Some("121.0"),
            Some("Linux"),
            None,
            DeviceKind::Desktop,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
            Some("Chrome"),
            Some("120.0.6099.144"),
            Some("Android"),
            Some("14"),
            DeviceKind::Mobile,
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1",
            Some("Safari"),
            Some("17.1.2"),
            Some("iOS"),
            Some("17.1.2"),
            DeviceKind::Tablet,
        ),
        // Android tablets: browsers whose user agent lacks "Mobile".
        (
            "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Safari/537.36",
            Some("Chrome"),
            Some("120.0.6099.144"),
            Some("Android"),
            Some("13"),
            DeviceKind::Tablet,
        ),
        // An app's HTTP stack, not a browser: no convention to read.
        (
            "Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230805.001)",
            None,
            None,
            Some("Android"),
            Some("13"),
            DeviceKind::Mobile,
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            Some("Googlebot"),
            None,
            None,
            None,
            DeviceKind::Bot,
        ),
        (
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.129 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            Some("Googlebot"),
            None,
            None,
            None,
            DeviceKind::Bot,
        ),
    ];

    #[test]
    fn known_user_agents_read_as_their_browser_os_and_kind() {
        for (ua, browser, version, os, os_version, kind) in KNOWN {
            assert_eq!(
                Device::from_user_agent(ua),
                device(*browser, *version, *os, *os_version, *kind),
                "{ua}"
            );
        }
        // Firefox says which kind of Android device it runs on.
        let firefox = |kind: &str| {
            format!("Mozilla/5.0 (Android 14; {kind}; rv:121.0) Gecko/121.0 Firefox/121.0")
        };
        assert_eq!(
            Device::from_user_agent(&firefox("Tablet")).kind,
            DeviceKind::Tablet
        );
        assert_eq!(
            Device::from_user_agent(&firefox("Mobile")).kind,
            DeviceKind::Mobile
        );
    }

    #[test]
    fn empty_and_garbage_are_unknown() {
        for ua in [
            "",
            "-",
            "   ",
            "asdf qwer zxcv !!",
            "\u{0}\u{1}garbage\u{ff}é🦀",
        ] {
            assert_eq!(Device::from_user_agent(ua), unknown(), "{ua:?}");
        }
    }

    #[test]
    fn a_10_kb_user_agent_is_cut_before_parsing() {
        // What would make it a bot lies past the cut.
        let ua = format!("{} Googlebot/2.1", "x".repeat(10 * 1024));
        assert_eq!(Device::from_user_agent(&ua), unknown());

        // A real user agent padded to 10 KB still reads as itself.
        let padded = format!("{CHROME_WINDOWS_10} {}", "€".repeat(3500));
        assert!(padded.len() > 10 * 1024);
        assert_eq!(
            Device::from_user_agent(&padded),
            Device::from_user_agent(CHROME_WINDOWS_10)
        );
    }

    #[test]
    fn the_cut_falls_on_a_char_boundary() {
        // 3 bytes a char: 512 is inside the 171st, so 170 whole ones stay.
        let euros = "€".repeat(3500);
        assert_eq!(cut(&euros), "€".repeat(170));
        let short = "a".repeat(MAX_USER_AGENT_BYTES);
        assert_eq!(cut(&short), short);
        assert_eq!(cut(&format!("{short}b")), short);
    }

    #[test]
    fn stored_fields_are_at_most_64_chars() {
        let version = format!("{}.0", "1".repeat(200));
        let ua = CHROME_WINDOWS_10.replace("120.0.0.0", &version);
        let found = Device::from_user_agent(&ua);
        assert_eq!(found.browser.as_deref(), Some("Chrome"));
        assert_eq!(found.browser_version, Some("1".repeat(64)));
    }

    #[test]
    fn serialises_as_the_sessions_page_reads_it() {
        let ua = "Mozilla/5.0 (iPad; CPU OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1";
        let found = Device::from_user_agent(ua);
        let json = serde_json::to_value(&found).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "browser": "Safari",
                "browserVersion": "17.1.2",
                "os": "iOS",
                "osVersion": "17.1.2",
                "type": "tablet",
            })
        );
        assert_eq!(serde_json::from_value::<Device>(json).unwrap(), found);
        assert_eq!(
            serde_json::to_value(unknown()).unwrap(),
            serde_json::json!({
                "browser": null,
                "browserVersion": null,
                "os": null,
                "osVersion": null,
                "type": "unknown",
            })
        );
    }
}
