//! Any bytes as a wizard step's body: parsing must answer Ok or a client
//! error, never panic, and every field must go through its domain parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signin_wizard::domain::{DeviceFingerprint, Email, OtpCode, PhoneNumber, WizardKey};
use signin_wizard::http::StepBody;

fuzz_target!(|bytes: &[u8]| {
    let Ok(mut body) = StepBody::parse(bytes) else {
        return;
    };
    let Ok(serde_json::Value::Object(fields)) = body.take::<serde_json::Value>() else {
        return;
    };
    for value in fields.values() {
        if let Some(text) = value.as_str() {
            let _ = Email::parse(text);
            let _ = OtpCode::parse(text);
            let _ = PhoneNumber::parse(text);
            let _ = DeviceFingerprint::parse(text);
            let _ = WizardKey::parse(text);
        }
    }
});
