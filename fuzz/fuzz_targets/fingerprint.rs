//! The device fingerprint decoder on arbitrary input, and on arbitrary JSON
//! wrapped in valid base64: never a panic, and an accepted fingerprint
//! always names a non-empty user agent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signin_wizard::domain::DeviceFingerprint;

fuzz_target!(|bytes: &[u8]| {
    let as_text = String::from_utf8_lossy(bytes);
    let as_base64 = base64_of(bytes);
    for candidate in [as_text.as_ref(), as_base64.as_str()] {
        if let Ok(fingerprint) = DeviceFingerprint::parse(candidate) {
            assert!(!fingerprint.user_agent().trim().is_empty());
        }
    }
});

fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    bytes
        .chunks(3)
        .flat_map(|chunk| {
            let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            (0..=chunk.len()).map(move |i| ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char)
        })
        .collect()
}
