use super::error::{ApiError, ErrorKind};
use crate::domain::WizardId;
use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Request bodies are small JSON objects; anything larger is refused unread.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Reads at most [`MAX_BODY_BYTES`] of a JSON object body.
pub async fn read_object(mut payload: web::Payload) -> Result<Map<String, Value>, ApiError> {
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

/// Like [`read_object`], with no body at all read as `{}` (for requests
/// whose fields are all optional).
pub async fn read_optional_object(payload: web::Payload) -> Result<Map<String, Value>, ApiError> {
    let bytes = payload.to_bytes_limited(MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
        )
    });
    match bytes {
        Ok(Ok(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        Ok(Ok(bytes)) => parse_object(&bytes),
        Ok(Err(_)) => Err(ApiError::new(
            ErrorKind::InvalidRequest,
            "the request body could not be read",
        )),
        Err(e) => Err(e),
    }
}

/// A JSON object, or why the bytes are not one (where, never what).
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = match e.classify() {
            serde_json::error::Category::Data => "the body must be a JSON object".to_owned(),
            _ => format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        };
        ApiError::new(ErrorKind::InvalidRequest, message)
    })
}

/// Why a body's fields could not be read. The words name the field but
/// never repeat the value that was sent: it may be a password, and these
/// messages are shown to clients and written to logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not the shape asked for: a field missing, or one that is not allowed.
    Shape(String),
    /// A field that is there, with a value of the wrong type or outside what it accepts.
    Field { field: String, message: String },
}

impl BodyError {
    pub fn message(&self) -> &str {
        match self {
            BodyError::Shape(message) | BodyError::Field { message, .. } => message,
        }
    }
}

/// The fields as `T`.
pub fn fields_as<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, BodyError> {
    serde_path_to_error::deserialize(Value::Object(fields))
        .map_err(|e| describe(&e.path().to_string(), e.inner()))
}

/// Puts serde's complaint in our words. serde writes "invalid type: string
/// \"<the value>\", expected <what we wanted>": only the last part is ours.
fn describe(path: &str, error: &serde_json::Error) -> BodyError {
    let text = error.to_string();
    if text.starts_with("missing field ") {
        return BodyError::Shape(text);
    }
    if text.starts_with("unknown field ") {
        let field = text.split(", expected").next().unwrap_or("unknown field");
        return BodyError::Shape(format!("{field} is not allowed"));
    }
    if path == "." {
        return BodyError::Shape("the body has the wrong shape".to_owned());
    }
    let message = match text.rsplit_once(", expected ") {
        Some((_, expected)) => format!("`{path}` must be {expected}"),
        None => format!("`{path}` has a value that is not accepted"),
    };
    BodyError::Field {
        field: path.to_owned(),
        message,
    }
}

/// A wizard step's body. The `uuid` is read first, so that every later
/// complaint about the body can be answered in the context of its wizard.
pub struct StepBody {
    pub id: WizardId,
    fields: Map<String, Value>,
}

impl StepBody {
    pub async fn read(payload: web::Payload) -> Result<Self, ApiError> {
        Self::from_object(read_object(payload).await?)
    }

    /// Parses a whole body (what the fuzz target drives).
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        Self::from_object(parse_object(bytes)?)
    }

    fn from_object(mut fields: Map<String, Value>) -> Result<Self, ApiError> {
        let id = match fields.remove("uuid") {
            Some(Value::String(raw)) => WizardId::parse(&raw).map_err(ApiError::invalid)?,
            Some(_) => {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    "`uuid` must be a string",
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

    /// Takes out the optional field `name`, before the rest is read with [`StepBody::take`].
    pub fn take_field<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ApiError> {
        let mut only = Map::new();
        if let Some(value) = self.fields.remove(name) {
            only.insert(name.to_owned(), value);
        }
        fields_as::<std::collections::BTreeMap<String, Option<T>>>(only)
            .map(|mut map| map.remove(name).flatten())
            .map_err(invalid)
    }

    /// The remaining fields as `T` (unknown fields are ignored); call once.
    pub fn take<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        fields_as(std::mem::take(&mut self.fields)).map_err(invalid)
    }
}

fn invalid(e: BodyError) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, e.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        password: String,
        count: Option<u32>,
        #[serde(rename = "type")]
        kind: Option<Kind>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Google,
        Sms,
    }

    fn error(body: Value) -> BodyError {
        let Value::Object(fields) = body else {
            panic!("an object")
        };
        fields_as::<Login>(fields).unwrap_err()
    }

    #[test]
    fn errors_name_the_field_but_never_repeat_the_value() {
        let secret = "hunter2-secret";
        for (body, field) in [
            (serde_json::json!({ "password": 12_345_678 }), "password"),
            (serde_json::json!({ "password": [secret] }), "password"),
            (
                serde_json::json!({ "password": { secret: secret } }),
                "password",
            ),
            (
                serde_json::json!({ "password": "x", "count": secret }),
                "count",
            ),
            (serde_json::json!({ "password": "x", "count": -5 }), "count"),
            (
                serde_json::json!({ "password": "x", "type": secret }),
                "type",
            ),
        ] {
            let e = error(body.clone());
            let BodyError::Field {
                field: named,
                message,
            } = &e
            else {
                panic!("{body}: {e:?}")
            };
            assert_eq!(named, field);
            assert!(
                message.starts_with(&format!("`{field}` must be")),
                "{message}"
            );
            assert!(
                !message.contains(secret)
                    && !message.contains("12345678")
                    && !message.contains("-5"),
                "{message}"
            );
        }
        assert_eq!(
            error(serde_json::json!({})),
            BodyError::Shape("missing field `password`".into())
        );
        assert!(matches!(
            error(serde_json::json!({ "password": "x", "extra": secret })),
            BodyError::Shape(m) if m == "unknown field `extra` is not allowed"
        ));
        let top = parse_object(format!("\"{secret}\"").as_bytes()).unwrap_err();
        assert!(!top.message.contains(secret), "{}", top.message);
    }
}
