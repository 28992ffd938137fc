use super::ParseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The handle of one sign-in attempt: a random (v4) UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WizardId(Uuid);

impl WizardId {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// 64 of its random bits, to name writes made on its behalf.
    pub fn as_u64(&self) -> u64 {
        self.0.as_u64_pair().0
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Uuid::try_parse(raw.trim())
            .map(Self)
            .map_err(|_| ParseError("uuid is not a valid UUID"))
    }
}

impl std::fmt::Display for WizardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A user account's stable identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(Uuid);

impl UserId {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Uuid::try_parse(raw.trim())
            .map(Self)
            .map_err(|_| ParseError("user id is not a valid UUID"))
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}
