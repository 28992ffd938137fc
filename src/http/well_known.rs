use super::error::{ApiError, ErrorKind};
use crate::clock::Clock;
use crate::credentials::TokenIssuer;
use crate::store::Records;
use crate::store::Store;
use actix_web::{HttpResponse, ResponseError, web};
use std::sync::Arc;

/// The public keys a verifier may need now (see `signing_keys`): cached
/// for less than a rotated-in key is published before it signs (with room
/// for instances that reload late and clocks that differ).
pub async fn jwks(tokens: web::Data<Arc<TokenIssuer>>, clock: web::Data<Clock>) -> HttpResponse {
    let max_age =
        (crate::signing_keys::PUBLISH_AHEAD - chrono::Duration::seconds(30)).num_seconds();
    HttpResponse::Ok()
        .insert_header(("Cache-Control", format!("public, max-age={max_age}")))
        .json(tokens.jwks(clock.now()))
}

/// The state machine as data (`wizard-spec/wizard.json`), for clients that
/// render or check the graph at run time.
pub async fn spec() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "public, max-age=300"))
        .body(crate::spec::JSON)
}

/// The HTTP contract (`wizard-spec/openapi.yaml`) as JSON, for API tools.
pub async fn openapi() -> HttpResponse {
    match crate::openapi::json() {
        Ok(json) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("Cache-Control", "public, max-age=300"))
            .body(json),
        Err(e) => {
            tracing::error!(error = %e, "the built-in OpenAPI document does not read");
            ApiError::new(ErrorKind::Internal, "something went wrong on our side").error_response()
        }
    }
}

/// Liveness and store reachability: 200 when the store answers, else 503.
pub async fn health(store: web::Data<Arc<dyn Store>>) -> HttpResponse {
    let backend = store.backend();
    // The smallest shared record; the keyring would drag the private key along.
    match store.policy().await {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({ "status": "ok", "store": backend })),
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unavailable");
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({ "status": "store_unavailable", "store": backend }))
        }
    }
}
