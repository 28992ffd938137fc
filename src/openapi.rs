//! `wizard-spec/openapi.yaml`, the HTTP contract: served as JSON at
//! `GET /api/openapi.json`, held to the code by `tests/api/openapi.rs`.

use std::sync::LazyLock;

/// The document as checked in, byte for byte.
pub const YAML: &str = include_str!("../wizard-spec/openapi.yaml");

/// The document as JSON, converted once (a test proves it converts).
static JSON: LazyLock<Result<String, String>> = LazyLock::new(|| {
    document()
        .and_then(|value| Ok(serde_json::to_string(&value)?))
        .map_err(|e| format!("{e:#}"))
});

/// The document as a JSON value.
pub fn document() -> anyhow::Result<serde_json::Value> {
    Ok(serde_yaml_ng::from_str(YAML)?)
}

/// The document as JSON text, as served.
pub fn json() -> Result<&'static str, &'static str> {
    JSON.as_deref().map_err(String::as_str)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_converts_to_json() {
        let json = super::json().unwrap();
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["openapi"], "3.1.0");
    }
}
