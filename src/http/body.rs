use super::error::{ApiError, ErrorKind};
use crate::domain::WizardId;
use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// Request bodies are small JSON objects; anything larger is refused unread.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Reads at most [`MAX_BODY_BYTES`] of a JSON object body.
pub async fn read_object(
    mut payload: web::Payload,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(
                ErrorKind::InvalidRequest,
                "the request body could not be read",
            )
        })?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    parse_object(&bytes)
}

/// A JSON object, or why the bytes are not one.
pub fn parse_object(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("the body must be a JSON object: {e}"),
        )
    })
}

/// A wizard step's body. The `uuid` is read first, so that every later
/// complaint about the body can be answered in the context of its wizard.
pub struct StepBody {
    pub id: WizardId,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl StepBody {
    pub async fn read(payload: web::Payload) -> Result<Self, ApiError> {
        Self::from_object(read_object(payload).await?)
    }

    /// Parses a whole body (what the fuzz target drives).
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        Self::from_object(parse_object(bytes)?)
    }

    fn from_object(
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, ApiError> {
        let id = match fields.remove("uuid") {
            Some(serde_json::Value::String(raw)) => {
                WizardId::parse(&raw).map_err(ApiError::invalid)?
            }
            Some(_) => {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    "uuid must be a string",
                ));
            }
            None => {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    "missing field `uuid`",
                ));
            }
        };
        Ok(Self { id, fields })
    }

    /// The remaining fields as `T` (unknown fields are ignored); call once.
    pub fn take<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        T::deserialize(serde_json::Value::Object(std::mem::take(&mut self.fields)))
            .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e.to_string()))
    }
}
