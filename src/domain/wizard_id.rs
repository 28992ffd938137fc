use super::ParseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A random (v4) UUID naming one kind of thing, parsed strictly.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $refused:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                Uuid::try_parse(raw.trim())
                    .map(Self)
                    .map_err(|_| ParseError($refused))
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A user account's stable identifier.
    UserId,
    "user id is not a valid UUID"
);

uuid_id!(
    /// One signed-in session (the `sid` claim of its access tokens).
    SessionId,
    "session id is not a valid UUID"
);

uuid_id!(
    /// The handle of one sign-in attempt.
    WizardId,
    "uuid is not a valid UUID"
);

impl WizardId {
    /// 64 of its random bits, to name writes made on its behalf.
    pub fn as_u64(&self) -> u64 {
        self.0.as_u64_pair().0
    }
}
