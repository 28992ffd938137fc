//! `wizard-spec/openapi.yaml` is the HTTP contract, and these tests hold it
//! to the code: it is OpenAPI 3.1 whose every `$ref` and link resolves;
//! every route of `src/http/mod.rs` is documented and every documented one
//! is routed; each wizard operation lists exactly the error codes
//! `wizard-spec/wizard.json` allows its request, each under the status
//! `ErrorKind::status()` gives it; and real answers, from real flows on a
//! live server, match the schemas and headers it documents.
//!
//! [`assert_conforms`] (and [`assert_headers_conform`]) check any answer
//! against the document, for other tests to use.

use crate::helpers::{
    ADMIN_TOKEN, Backend, FakeSms, TestApp, UserSpec, fingerprint, other_code, spawn_app,
    spawn_with, test_settings,
};
use chrono::Duration;
use serde_json::{Value, json};
use signin_wizard::credentials::{Signer, SigningAlgorithm, TotpSecret};
use signin_wizard::http::ErrorKind;
use signin_wizard::replay::mailbox::FailAt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{LazyLock, Mutex};
use strum::IntoEnumIterator;

/// The document, parsed once.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
        signin_wizard::openapi::document().expect("wizard-spec/openapi.yaml reads")
    });
    &DOCUMENT
}

/// The methods an OpenAPI path item may hold that the service could route.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every documented operation: method (upper case), path template, operation.
pub fn operations() -> Vec<(String, String, &'static Value)> {
    let paths = document()["paths"]
        .as_object()
        .expect("`paths` is an object");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                operations.push((method.to_uppercase(), path.clone(), operation));
            }
        }
    }
    operations
}

/// The documented path template that `path` (a concrete path) is an instance of.
pub fn path_template(method: &str, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    operations()
        .into_iter()
        .filter(|(m, _, _)| m.eq_ignore_ascii_case(method))
        .map(|(_, template, _)| template)
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(part, segment)| {
                    part == segment || (part.starts_with('{') && !segment.is_empty())
                })
        })
}

/// Follows local `$ref`s (dropping a `$ref` object's other keys, as
/// OpenAPI 3.1 does outside schemas).
fn resolved(mut value: &'static Value) -> &'static Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("not a local $ref: {reference}"));
        value = document()
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref: {reference}"));
    }
    value
}

fn operation(method: &str, path_template: &str) -> &'static Value {
    document()["paths"]
        .get(path_template)
        .and_then(|item| item.get(method.to_ascii_lowercase()))
        .unwrap_or_else(|| panic!("{method} {path_template} is not in wizard-spec/openapi.yaml"))
}

/// The documented answer of an operation with this status.
fn response(method: &str, path_template: &str, status: u16) -> &'static Value {
    let responses = &operation(method, path_template)["responses"];
    let response = responses.get(status.to_string()).unwrap_or_else(|| {
        let documented: Vec<&String> = responses
            .as_object()
            .into_iter()
            .flatten()
            .map(|(s, _)| s)
            .collect();
        panic!(
            "{method} {path_template} answered {status}, which wizard-spec/openapi.yaml \
             does not document (it has {documented:?})"
        )
    });
    resolved(response)
}

/// The errors of `instance` against `schema`, a schema of the document.
fn violations(schema: &Value, instance: &Value) -> Vec<String> {
    // The schema with the document's components beside it, so that its
    // `#/components/...` references resolve in the same root.
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document()["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("not a valid JSON Schema: {e}\n{schema:#}"));
    validator
        .iter_errors(instance)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect()
}

/// Panics unless `body` is what wizard-spec/openapi.yaml says `method
/// path_template` answers with `status`: the status is documented, and the
/// body matches its schema (or is `null`, for an empty body, where it
/// documents none).
pub fn assert_conforms(method: &str, path_template: &str, status: u16, body: &Value) {
    let response = response(method, path_template, status);
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        assert!(
            body.is_null(),
            "{method} {path_template} {status} documents no body, but one came: {body}"
        );
        return;
    };
    let errors = violations(schema, body);
    assert!(
        errors.is_empty(),
        "{method} {path_template} answered {status} with a body that \
         wizard-spec/openapi.yaml does not allow:\n{body:#}\n{}",
        errors.join("\n")
    );
}

/// Panics unless the answer has every header the document requires for it,
/// and every documented header it has matches its schema.
pub fn assert_headers_conform(
    method: &str,
    path_template: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
) {
    let response = response(method, path_template, status);
    let Some(declared) = response.get("headers").and_then(Value::as_object) else {
        return;
    };
    for (name, header) in declared {
        let header = resolved(header);
        let Some(value) = headers.get(name.as_str()) else {
            assert!(
                header["required"] != true,
                "{method} {path_template} {status} lacks the required header {name}"
            );
            continue;
        };
        let text = value.to_str().expect("a header of ours is ASCII");
        let schema = &header["schema"];
        let instance = match schema["type"].as_str() {
            Some("integer") => json!(text.parse::<i64>().unwrap_or_else(|_| panic!(
                "{method} {path_template} {status}: {name} is not an integer: {text}"
            ))),
            _ => json!(text),
        };
        let errors = violations(schema, &instance);
        assert!(
            errors.is_empty(),
            "{method} {path_template} {status}: header {name}: {text:?}: {}",
            errors.join("; ")
        );
    }
}

// ---------------------------------------------------------------------------
// (a) The document is OpenAPI 3.1, and everything in it resolves.

/// Every value under a key named `key`, anywhere in `value`.
fn all_under<'a>(value: &'a Value, key: &str, found: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    found.push(v);
                }
                all_under(v, key, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| all_under(v, key, found)),
        _ => {}
    }
}

/// The parameters of an operation (its path item's too): (in, name).
fn parameters_of(path: &str, operation: &'static Value) -> Vec<(String, String)> {
    document()["paths"][path]["parameters"]
        .as_array()
        .into_iter()
        .chain(operation["parameters"].as_array())
        .flatten()
        .map(|p| {
            let p = resolved(p);
            (
                p["in"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Whether `schema` has a property at the path `segments`, following
/// `$ref`s and `allOf` members at every level (`data` of a session answer is
/// in an `allOf`, a token and `meta` behind a `$ref`).
fn has_property(schema: &'static Value, segments: &[&str]) -> bool {
    let schema = resolved(schema);
    let Some((first, rest)) = segments.split_first() else {
        return true;
    };
    schema["properties"]
        .get(*first)
        .is_some_and(|property| has_property(property, rest))
        || schema["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|member| has_property(member, segments))
}

/// The top-level fields of an operation's JSON body.
fn body_fields_of(operation: &'static Value) -> BTreeSet<String> {
    operation
        .pointer("/requestBody/content/application~1json/schema")
        .map(resolved)
        .and_then(|schema| schema["properties"].as_object())
        .into_iter()
        .flatten()
        .map(|(field, _)| field.clone())
        .collect()
}

#[test]
fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "signin-wizard");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let mut refs = Vec::new();
    all_under(doc, "$ref", &mut refs);
    assert!(refs.len() > 50, "the document uses components");
    for reference in refs {
        let reference = reference.as_str().expect("a $ref is a string");
        let pointer = reference.strip_prefix('#').expect("only local $refs");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {reference}");
    }

    // Every schema compiles as JSON Schema 2020-12 (`violations` panics if
    // not), and its examples are instances of it.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        violations(schema, &Value::Null);
        for example in schema["examples"].as_array().into_iter().flatten() {
            let errors = violations(schema, example);
            assert!(errors.is_empty(), "{name}: example {example}: {errors:?}");
        }
    }

    let ids: Vec<&str> = operations()
        .iter()
        .map(|(method, path, op)| {
            op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"))
        })
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "operationIds are unique");

    // Links name real operations and only parameters and body fields they
    // have, and take values from what the source request and answer have.
    let mut links = 0;
    for (method, path, op) in operations() {
        for (status, response) in op["responses"].as_object().unwrap() {
            let response = resolved(response);
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                links += 1;
                let here = format!("{method} {path} {status} link {name}");
                let target_id = link["operationId"]
                    .as_str()
                    .expect("links name an operationId");
                let (_, target_path, target) = operations()
                    .into_iter()
                    .find(|(_, _, o)| o["operationId"] == target_id)
                    .unwrap_or_else(|| panic!("{here}: no operation {target_id}"));
                let source_check = |expression: &Value| {
                    let expression = expression.as_str().expect("expressions are strings");
                    if let Some(header) = expression.strip_prefix("$request.header.") {
                        assert!(
                            parameters_of(&path, op).contains(&("header".into(), header.into())),
                            "{here}: {expression}"
                        );
                    } else if let Some(field) = expression.strip_prefix("$request.body#/") {
                        assert!(body_fields_of(op).contains(field), "{here}: {expression}");
                    } else if let Some(pointer) = expression.strip_prefix("$response.body#") {
                        let schema = response
                            .pointer("/content/application~1json/schema")
                            .expect("a body");
                        let segments: Vec<&str> = pointer.split('/').skip(1).collect();
                        assert!(
                            has_property(schema, &segments),
                            "{here}: {expression} is not in the answer's schema"
                        );
                    } else {
                        panic!("{here}: an expression this test cannot read: {expression}");
                    }
                };
                for (qualified, expression) in link["parameters"].as_object().into_iter().flatten()
                {
                    let (location, parameter) = qualified
                        .split_once('.')
                        .expect("link parameters name their location");
                    assert!(
                        parameters_of(&target_path, target)
                            .contains(&(location.into(), parameter.into())),
                        "{here}: {target_id} has no {qualified}"
                    );
                    source_check(expression);
                }
                for (field, expression) in link["requestBody"].as_object().into_iter().flatten() {
                    assert!(
                        body_fields_of(target).contains(field),
                        "{here}: {target_id}'s body has no {field}"
                    );
                    source_check(expression);
                }
            }
        }
    }
    assert!(links >= 10, "the wizard steps and admin users are linked");
}

// ---------------------------------------------------------------------------
// (b) Every route is documented, and every documented operation is routed.

/// The routes `src/http/mod.rs` registers: (METHOD, path as written there,
/// without its scope), and the scopes' prefixes. Read from the source, so
/// that a route added there without a line here fails the test below.
fn routes_in_source() -> (Vec<(String, String)>, Vec<String>) {
    let source = include_str!("../../src/http/mod.rs");
    let literal_after = |text: &str, call: &str| -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find(call) {
            rest = &rest[at + call.len()..];
            let (literal, after) = rest
                .trim_start()
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .unwrap_or_else(|| panic!("{call} without a string literal in src/http/mod.rs"));
            let method: String = after
                .trim_start()
                .strip_prefix(',')
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix("web::"))
                .map(|r| r.chars().take_while(char::is_ascii_alphabetic).collect())
                .unwrap_or_default();
            found.push((method.to_uppercase(), literal.to_owned()));
        }
        found
    };
    let routes = literal_after(source, ".route(");
    let scopes = literal_after(source, "web::scope(")
        .into_iter()
        .map(|(_, prefix)| prefix)
        .collect();
    (routes, scopes)
}

#[test]
fn every_route_in_the_source_is_documented_and_nothing_else_is() {
    let (routes, scopes) = routes_in_source();
    assert!(
        routes.len() >= 18 && scopes.len() >= 2,
        "{routes:?} {scopes:?}"
    );
    let documented: BTreeSet<(String, String)> = operations()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let mut routed = BTreeSet::new();
    for (method, path) in &routes {
        assert!(
            METHODS.contains(&method.to_lowercase().as_str()),
            "{path}: method `{method}`"
        );
        let candidates: Vec<(String, String)> = std::iter::once(path.clone())
            .chain(scopes.iter().map(|scope| format!("{scope}{path}")))
            .map(|full| (method.clone(), full))
            .filter(|route| documented.contains(route))
            .collect();
        assert_eq!(
            candidates.len(),
            1,
            "{method} {path} (src/http/mod.rs) is documented {} times in wizard-spec/openapi.yaml",
            candidates.len()
        );
        routed.extend(candidates);
    }
    assert_eq!(routed, documented, "documented but not routed");
    assert_eq!(routes.len(), documented.len(), "a route registered twice");
}

/// What the server makes of a request: its status and error code, if any.
async fn probe(app: &TestApp, method: &str, path: &str) -> (u16, String) {
    let response = app
        .client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", app.address),
        )
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap_or_default();
    let code = body
        .pointer("/data/error/code")
        .or_else(|| body.pointer("/error/code"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    (status, code)
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method_on_its_path() {
    let app = spawn_app(Backend::Memory).await;
    let uuid = uuid::Uuid::new_v4().to_string();
    for (path, item) in document()["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", &uuid);
        for method in METHODS {
            let (status, code) = probe(&app, &method.to_uppercase(), &concrete).await;
            let unrouted = code == "route_not_found";
            assert_ne!(status, 405, "{method} {path}");
            // DELETE /api/v2/my/sessions/revoke-all is DELETE /api/v2/my/sessions/{id}.
            let elsewhere = path_template(method, &concrete).filter(|template| template != path);
            if let Some(template) = elsewhere {
                assert!(
                    !unrouted,
                    "{method} {template} is documented but not routed"
                );
            } else if item.get(method).is_some() {
                assert!(!unrouted, "{method} {path} is documented but not routed");
            } else {
                assert!(
                    unrouted && status == 404,
                    "{method} {path} is routed ({status} {code}) but not documented"
                );
            }
        }
    }
}

/// Every operation the document guards with the admin token refuses a
/// request without it, with a wrong one and with another scheme, before it
/// reads anything: a new admin route that forgot `authorize` fails here.
#[tokio::test]
async fn every_operation_that_needs_the_admin_token_refuses_requests_without_it() {
    let app = spawn_app(Backend::Memory).await;
    let user = app.create_user(UserSpec::default()).await;
    let mut guarded = 0;
    for (method, path, operation) in operations() {
        let needs_admin = operation["security"]
            .as_array()
            .is_some_and(|schemes| schemes.iter().any(|s| s.get("adminBearer").is_some()));
        if !needs_admin {
            continue;
        }
        guarded += 1;
        let url = format!("{}{}", app.address, path.replace("{id}", &user.id));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for authorization in [
            None,
            Some("Bearer not-the-admin-token-but-just-as-long"),
            Some("Basic YWRtaW46YWRtaW4="),
        ] {
            let mut request = app
                .client
                .request(method.clone(), &url)
                .json(&json!({ "max_attempts": 1 }));
            if let Some(value) = authorization {
                request = request.header("Authorization", value);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("unauthorized")),
                "{method} {path} with {authorization:?}"
            );
        }
    }
    assert!(
        guarded >= 8,
        "only {guarded} operations need the admin token"
    );
    // Nothing was changed or removed by the refused requests.
    let (_, settings) = app
        .admin(reqwest::Method::GET, "/api/v2/admin/settings", None)
        .await;
    assert_eq!(settings["max_attempts"], 5);
    assert_eq!(
        app.admin(
            reqwest::Method::GET,
            &format!("/api/v2/admin/users/{}", user.id),
            None
        )
        .await
        .0,
        200
    );
}

// ---------------------------------------------------------------------------
// (c) Error codes: each operation's, from wizard.json, under their statuses.

/// The error codes an answer's schema allows: the `enum`s written on
/// `data.error.code` (wizard envelopes) or `error.code` (admin answers),
/// through `$ref`, `allOf`, `oneOf` and `anyOf`. The base schemas' own
/// `ErrorCode` (every code) sits behind a `$ref` on that path, so it is
/// not read.
fn codes_in(schema: &'static Value, codes: &mut BTreeSet<String>) {
    let schema = resolved(schema);
    for key in ["allOf", "oneOf", "anyOf"] {
        for member in schema[key].as_array().into_iter().flatten() {
            codes_in(member, codes);
        }
    }
    for path in [
        "/properties/data/properties/error/properties/code/enum",
        "/properties/error/properties/code/enum",
    ] {
        for code in schema
            .pointer(path)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            codes.insert(code.as_str().expect("codes are strings").to_owned());
        }
    }
}

/// An operation's error codes by documented status.
fn codes_by_status(operation: &'static Value) -> BTreeMap<u16, BTreeSet<String>> {
    let mut by_status = BTreeMap::new();
    for (status, response) in operation["responses"].as_object().unwrap() {
        let status: u16 = status.parse().expect("statuses are numbers");
        let mut codes = BTreeSet::new();
        if let Some(schema) = resolved(response).pointer("/content/application~1json/schema") {
            codes_in(schema, &mut codes);
        }
        by_status.insert(status, codes);
    }
    by_status
}

fn listed_codes(method: &str, path: &str, operation: &Value) -> BTreeSet<String> {
    operation["x-error-codes"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has no x-error-codes"))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// Whether a guard's or shell error's `applies_to` covers `request` (`None`:
/// the spec endpoint, an `/api/v2/my/*` route that is no request of the machine).
fn applies(applies_to: &Value, request: Option<&str>) -> bool {
    match applies_to {
        Value::Array(names) => request.is_some_and(|r| names.iter().any(|n| n == r)),
        Value::String(s) if s == "every /api/v2/my/* request" => true,
        Value::String(s) if s == "every request but start" => request.is_some_and(|r| r != "start"),
        other => panic!("wizard.json: an applies_to this test cannot read: {other}"),
    }
}

/// What wizard.json allows `request` to answer: the guards and shell errors
/// that apply to it, and the rejections that name it.
fn allowed_by_wizard_spec(request: Option<&str>) -> BTreeSet<String> {
    let spec: Value = serde_json::from_str(signin_wizard::spec::JSON).unwrap();
    let error = |e: &Value| e["error"].as_str().unwrap().to_owned();
    let mut allowed = BTreeSet::new();
    for e in spec["guards"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["shell_errors"].as_array().unwrap())
    {
        let applies_to = e
            .get("applies_to")
            .unwrap_or_else(|| panic!("wizard.json: {e} has no applies_to"));
        if applies(applies_to, request) {
            allowed.insert(error(e));
        }
    }
    for r in spec["rejections"].as_array().unwrap() {
        if request.is_some_and(|request| {
            r["request"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == request)
        }) {
            allowed.insert(error(r));
        }
    }
    allowed
}

#[test]
fn each_wizard_operation_answers_exactly_the_error_codes_wizard_json_allows_its_request() {
    let spec = signin_wizard::spec::Spec::load().unwrap();
    let mut wizard_operations = 0;
    for (method, path, operation) in operations() {
        if !path.starts_with("/api/v2/my/") || session_endpoint(&method, &path).is_some() {
            continue;
        }
        wizard_operations += 1;
        let request = spec
            .requests
            .iter()
            .find(|r| r.method == method && r.path == path)
            .map(|r| r.name.as_str());
        assert!(
            request.is_some() || path == "/api/v2/my/signin/wizard/spec",
            "{method} {path} is no request of wizard.json, nor one of its sessions.endpoints"
        );
        assert_eq!(
            listed_codes(&method, &path, operation),
            allowed_by_wizard_spec(request),
            "{method} {path} ({request:?}): x-error-codes (left) and wizard.json (right) disagree"
        );
    }
    assert_eq!(
        wizard_operations,
        spec.requests.len() + 1,
        "every request, and the spec"
    );
}

/// The entry of wizard.json's `sessions.endpoints` for this operation.
fn session_endpoint(method: &str, path: &str) -> Option<Value> {
    let spec: Value = serde_json::from_str(signin_wizard::spec::JSON).unwrap();
    spec["sessions"]["endpoints"]
        .as_array()
        .expect("wizard.json has sessions.endpoints")
        .iter()
        .find(|e| e["method"] == method && e["path"] == path)
        .cloned()
}

/// The session endpoints are no requests of the wizard: wizard.json lists
/// their codes in `sessions.endpoints`, which must be exactly each
/// operation's, and (under `/api/v2/my/`) include the shell errors of every
/// such request.
#[test]
fn each_session_operation_answers_exactly_the_error_codes_wizard_json_lists_for_it() {
    let spec: Value = serde_json::from_str(signin_wizard::spec::JSON).unwrap();
    let endpoints = spec["sessions"]["endpoints"].as_array().unwrap();
    for endpoint in endpoints {
        let (method, path) = (
            endpoint["method"].as_str().unwrap(),
            endpoint["path"].as_str().unwrap(),
        );
        let codes: BTreeSet<String> = endpoint["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("wizard.json: {method} {path} has no errors"))
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            listed_codes(method, path, operation(method, path)),
            codes,
            "{method} {path}: x-error-codes (left) and wizard.json's sessions.endpoints (right) disagree"
        );
        if path.starts_with("/api/v2/my/") {
            let every = allowed_by_wizard_spec(None);
            assert!(
                codes.is_superset(&every),
                "{method} {path}: wizard.json says every /api/v2/my/* request may answer {every:?}"
            );
        }
    }
    let documented = operations()
        .into_iter()
        .filter(|(method, path, _)| session_endpoint(method, path).is_some())
        .count();
    assert_eq!(
        documented,
        endpoints.len(),
        "every session endpoint is documented"
    );
}

#[test]
fn every_error_code_is_documented_under_its_status_and_listed_by_its_operation() {
    let status_of: BTreeMap<&str, u16> = ErrorKind::iter()
        .map(|kind| (kind.code(), kind.status().as_u16()))
        .collect();
    let mut everywhere = BTreeSet::new();
    for (method, path, operation) in operations() {
        let listed = listed_codes(&method, &path, operation);
        let mut documented = BTreeSet::new();
        for (status, codes) in codes_by_status(operation) {
            for code in &codes {
                let expected = status_of
                    .get(code.as_str())
                    .unwrap_or_else(|| panic!("{method} {path} {status}: no error code `{code}`"));
                assert_eq!(
                    *expected, status,
                    "{method} {path}: `{code}` is documented under {status}, but answers {expected}"
                );
            }
            // Every error answer says which codes it carries (/healthz's 503 is no error envelope).
            assert!(
                status < 400 || !codes.is_empty() || listed.is_empty(),
                "{method} {path} {status} names no error code"
            );
            documented.extend(codes);
        }
        assert_eq!(
            listed, documented,
            "{method} {path}: x-error-codes (left) and the codes of its answers (right) disagree"
        );
        everywhere.extend(listed);
    }
    let all: BTreeSet<String> = status_of.keys().map(|c| (*c).to_owned()).collect();
    assert_eq!(
        everywhere, all,
        "every ErrorKind is answered by some operation"
    );
    let schema: BTreeSet<String> = document()["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        schema, all,
        "components.schemas.ErrorCode lists every ErrorKind"
    );
}

// ---------------------------------------------------------------------------
// (d) Real answers conform: flows on a live server, every answer checked.

/// An answer, already checked against the document.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    /// The error code, of a wizard envelope or an admin answer.
    fn error(&self) -> &str {
        self.body
            .pointer("/data/error/code")
            .or_else(|| self.body.pointer("/error/code"))
            .and_then(Value::as_str)
            .unwrap_or("<none>")
    }

    fn expect(self, status: u16, error: Option<&str>) -> Self {
        assert_eq!(
            (self.status, error.unwrap_or("<none>")),
            (status, self.error()),
            "{}",
            self.body
        );
        self
    }

    fn str(&self, pointer: &str) -> String {
        self.body
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {pointer} in {}", self.body))
            .to_owned()
    }
}

/// A live server whose every answer is checked against the document as it
/// arrives, remembering which operations answered.
struct Checked {
    app: TestApp,
    answered: Mutex<BTreeSet<(String, String)>>,
}

impl Checked {
    fn new(app: TestApp) -> Self {
        Self {
            app,
            answered: Mutex::new(BTreeSet::new()),
        }
    }

    /// Sends a request, checks the answer's status, headers and body, and returns it.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Answer {
        let template = path_template(method, path)
            .unwrap_or_else(|| panic!("{method} {path} is not in wizard-spec/openapi.yaml"));
        let mut request = self.app.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.app.address),
        );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = match text.as_str() {
            "" => Value::Null,
            text => serde_json::from_str(text)
                .unwrap_or_else(|_| panic!("{method} {path}: not JSON ({status}): {text}")),
        };
        assert_conforms(method, &template, status, &body);
        assert_headers_conform(method, &template, status, &headers);
        self.answered
            .lock()
            .unwrap()
            .insert((method.to_owned(), template));
        Answer { status, body }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], None).await
    }

    async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
        self.send("POST", path, headers, Some(body.to_string()))
            .await
    }

    /// A signed-in client's request: `authorization` is `Bearer <access token>`.
    async fn bearer(
        &self,
        method: &str,
        path: &str,
        authorization: &str,
        body: Option<&str>,
    ) -> Answer {
        let headers = [("Authorization", authorization)];
        self.send(method, path, &headers, body.map(str::to_owned))
            .await
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        self.send(
            method,
            path,
            &[("Authorization", &bearer)],
            body.map(|b| b.to_string()),
        )
        .await
    }

    /// A user created through the admin API: (id, email, password).
    async fn user(
        &self,
        totp: Option<&TotpSecret>,
        phone: Option<&str>,
    ) -> (String, String, String) {
        let email = format!("oas-{}@example.test", uuid::Uuid::new_v4().simple());
        let password = format!("pw-{}", uuid::Uuid::new_v4());
        let created = self
            .admin(
                "POST",
                "/api/v2/admin/users",
                Some(json!({
                    "email": email,
                    "password": password,
                    "totp_secret": totp.map(TotpSecret::expose_base32),
                    "phone": phone,
                })),
            )
            .await
            .expect(201, None);
        (created.str("/id"), email, password)
    }

    /// A new wizard: (uuid, key).
    async fn start(&self) -> (String, String) {
        let started = self.get("/api/v2/my/signin/wizard").await.expect(200, None);
        (started.str("/uuid"), started.str("/meta/wizardKey"))
    }

    async fn credentials(&self, uuid: &str, key: &str, email: &str, password: &str) -> Answer {
        let body = json!({
            "uuid": uuid,
            "email": email,
            "password": password,
            "device_fingerprint": fingerprint("oas/1.0"),
        });
        self.post("/api/v2/my/signin", body, &[("X-Wizard-Key", key)])
            .await
    }

    /// A new wizard (uuid, key) past the password, at `workflow`.
    async fn past_password(&self, email: &str, password: &str, workflow: &str) -> (String, String) {
        let (uuid, key) = self.start().await;
        let reply = self
            .credentials(&uuid, &key, email, password)
            .await
            .expect(200, None);
        assert_eq!(reply.str("/workflow"), workflow);
        (uuid, key)
    }

    /// A later step, sent with the wizard's key.
    async fn step(&self, path: &str, uuid: &str, key: &str, fields: Value) -> Answer {
        let mut body = json!({ "uuid": uuid });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().cloned().unwrap_or_default());
        self.post(path, body, &[("X-Wizard-Key", key)]).await
    }

    fn totp_now(&self, secret: &TotpSecret) -> String {
        secret.code_at(self.app.clock.now()).unwrap()
    }
}

const PHONE_SMS: &str = "+15550100201";
const PHONE_BOTH: &str = "+15550100202";
const PHONE_LIMIT: &str = "+15550100203";
const PHONE_CHANGED: &str = "+15550100204";
const PHONE_EXPIRED: &str = "+15550100205";
const PHONE_SELF: &str = "+15550100206";
const PHONE_REQUIRED: &str = "+15550100207";

#[tokio::test]
async fn real_answers_conform_to_the_document() {
    let server = Checked::new(spawn_app(Backend::Memory).await);
    let s = &server;

    // Public: the document itself, served as it is checked in.
    let served = s.get("/api/openapi.json").await.expect(200, None);
    assert_eq!(
        &served.body,
        document(),
        "GET /api/openapi.json is the checked-in document"
    );
    s.get("/.well-known/jwks.json").await.expect(200, None);
    s.get("/healthz").await.expect(200, None);
    s.get("/api/v2/my/signin/wizard/spec")
        .await
        .expect(200, None);

    admin_flows(s).await;
    key_flows(s).await;
    session_flows(s).await;
    password_flows(s).await;

    // TOTP, with the key and the device named in the header; then the completed wizard.
    let secret = TotpSecret::generate();
    let (_, email, password) = s.user(Some(&secret), None).await;
    let (uuid, key) = s.past_password(&email, &password, "2fa_google_auth").await;
    let device = fingerprint("oas/1.0");
    let code = s.totp_now(&secret);
    let body = json!({ "uuid": uuid, "code": code });
    let headers = [
        ("X-Wizard-Key", key.as_str()),
        ("X-Device-Fingerprint", device.as_str()),
    ];
    s.post("/api/v2/my/2fa/google", body.clone(), &headers)
        .await
        .expect(202, None);
    s.post("/api/v2/my/2fa/google", body, &headers)
        .await
        .expect(409, Some("wizard_completed"));

    // An account that must have a second factor enrols an app (a wrong code
    // first), then signs in with a backup code (a wrong one first).
    let (user_id, email, password) = s.user(None, None).await;
    s.admin(
        "PATCH",
        &format!("/api/v2/admin/users/{user_id}"),
        Some(json!({ "second_factor_required": true })),
    )
    .await
    .expect(200, None);
    let (uuid, key) = s.start().await;
    let enrolment = s
        .credentials(&uuid, &key, &email, &password)
        .await
        .expect(200, None);
    assert_eq!(enrolment.str("/workflow"), "2fa_google_auth_enroll");
    let secret = TotpSecret::parse(&enrolment.str("/data/secret")).unwrap();
    let enroll = "/api/v2/my/2fa/google/enroll";
    let wrong = other_code(&s.totp_now(&secret));
    s.step(enroll, &uuid, &key, json!({ "code": wrong }))
        .await
        .expect(401, Some("invalid_code"));
    let enrolled = s
        .step(enroll, &uuid, &key, json!({ "code": s.totp_now(&secret) }))
        .await
        .expect(202, None);
    let backup = enrolled.str("/data/backupCodes/0");
    let (uuid, key) = s.past_password(&email, &password, "2fa").await;
    s.step(
        "/api/v2/my/signin/2fa",
        &uuid,
        &key,
        json!({ "type": "backup_code" }),
    )
    .await
    .expect(200, None);
    let backup_code = "/api/v2/my/2fa/backup_code";
    s.step(backup_code, &uuid, &key, json!({ "code": "00000-00000" }))
        .await
        .expect(401, Some("invalid_code"));
    s.step(backup_code, &uuid, &key, json!({ "code": backup }))
        .await
        .expect(202, None);

    // SMS: too soon, a wrong code, a resend, the right code.
    let (_, email, password) = s.user(None, Some(PHONE_SMS)).await;
    let (uuid, key) = s.past_password(&email, &password, "2fa_sms_auth").await;
    let resend = "/api/v2/my/2fa/sms/resend";
    s.step(resend, &uuid, &key, json!({}))
        .await
        .expect(429, Some("resend_too_soon"));
    let code = s.app.sms.last_code_for(PHONE_SMS).unwrap();
    s.step(
        "/api/v2/my/2fa/sms",
        &uuid,
        &key,
        json!({ "code": other_code(&code) }),
    )
    .await
    .expect(401, Some("invalid_code"));
    s.app.advance_clock(Duration::seconds(31));
    s.step(resend, &uuid, &key, json!({}))
        .await
        .expect(200, None);
    let code = s.app.sms.last_code_for(PHONE_SMS).unwrap();
    s.step("/api/v2/my/2fa/sms", &uuid, &key, json!({ "code": code }))
        .await
        .expect(202, None);

    // Both factors: choose one; another device, a wrong key, a step out of order.
    let secret = TotpSecret::generate();
    let (user_id, email, password) = s.user(Some(&secret), Some(PHONE_BOTH)).await;
    let (uuid, key) = s.past_password(&email, &password, "2fa").await;
    let choose = "/api/v2/my/signin/2fa";
    let elsewhere = json!({ "type": "google", "device_fingerprint": fingerprint("elsewhere/1.0") });
    s.step(choose, &uuid, &key, elsewhere)
        .await
        .expect(403, Some("device_mismatch"));
    s.step(
        choose,
        &uuid,
        "AAAAAAAAAAAAAAAAAAAAAA",
        json!({ "type": "google" }),
    )
    .await
    .expect(404, Some("wizard_not_found"));
    s.step(
        "/api/v2/my/2fa/google",
        &uuid,
        &key,
        json!({ "code": "123456" }),
    )
    .await
    .expect(409, Some("step_not_allowed"));
    s.step(choose, &uuid, &key, json!({ "type": "google" }))
        .await
        .expect(200, None);
    s.step(
        "/api/v2/my/2fa/google",
        &uuid,
        &key,
        json!({ "code": s.totp_now(&secret) }),
    )
    .await
    .expect(202, None);
    // The same account, choosing SMS, then changed by an operator.
    let (uuid, key) = s.start().await;
    s.credentials(&uuid, &key, &email, &password)
        .await
        .expect(200, None);
    s.step(choose, &uuid, &key, json!({ "type": "sms" }))
        .await
        .expect(200, None);
    let path = format!("/api/v2/admin/users/{user_id}");
    s.admin("PATCH", &path, Some(json!({ "phone": PHONE_CHANGED })))
        .await
        .expect(200, None);
    s.step(resend, &uuid, &key, json!({}))
        .await
        .expect(410, Some("account_changed"));

    // Bodies the wizard cannot read.
    let (uuid, key) = s.start().await;
    let signin = "/api/v2/my/signin";
    s.send("POST", signin, &[], Some("[1, 2]".into()))
        .await
        .expect(400, Some("invalid_request"));
    let unreadable_device = json!({
        "uuid": uuid, "email": email, "password": "x", "device_fingerprint": "not base64!"
    });
    s.post(signin, unreadable_device, &[])
        .await
        .expect(400, Some("invalid_device_fingerprint"));
    s.send(
        "POST",
        signin,
        &[],
        Some(format!("{{\"pad\": \"{}\"}}", "x".repeat(17 * 1024))),
    )
    .await
    .expect(413, Some("payload_too_large"));
    s.credentials(&uuid::Uuid::new_v4().to_string(), &key, &email, &password)
        .await
        .expect(404, Some("wizard_not_found"));

    // Wrong passwords until the account is blocked.
    let (_, email, _) = s.user(None, None).await;
    for _ in 0..5 {
        s.credentials(&uuid, &key, &email, "wrong password")
            .await
            .expect(401, Some("invalid_credentials"));
    }
    s.credentials(&uuid, &key, &email, "wrong password")
        .await
        .expect(429, Some("too_many_attempts"));

    // Wrong codes until the wizard is closed.
    let secret = TotpSecret::generate();
    let (_, email, password) = s.user(Some(&secret), None).await;
    let (uuid, key) = s.start().await;
    s.credentials(&uuid, &key, &email, &password)
        .await
        .expect(200, None);
    let wrong = other_code(&s.totp_now(&secret));
    for _ in 0..5 {
        s.step(
            "/api/v2/my/2fa/google",
            &uuid,
            &key,
            json!({ "code": wrong }),
        )
        .await
        .expect(401, Some("invalid_code"));
    }
    s.step(
        "/api/v2/my/2fa/google",
        &uuid,
        &key,
        json!({ "code": wrong }),
    )
    .await
    .expect(410, Some("wizard_closed"));

    // Resends until none are left.
    let (_, email, password) = s.user(None, Some(PHONE_LIMIT)).await;
    let (uuid, key) = s.start().await;
    s.credentials(&uuid, &key, &email, &password)
        .await
        .expect(200, None);
    for _ in 0..3 {
        s.app.advance_clock(Duration::seconds(31));
        s.step(resend, &uuid, &key, json!({}))
            .await
            .expect(200, None);
    }
    s.app.advance_clock(Duration::seconds(31));
    s.step(resend, &uuid, &key, json!({}))
        .await
        .expect(429, Some("resend_limit_reached"));

    // Time runs out: for an SMS code, then for a wizard.
    let (_, email, password) = s.user(None, Some(PHONE_EXPIRED)).await;
    let (uuid, key) = s.start().await;
    let (late, late_key) = s.start().await;
    s.credentials(&uuid, &key, &email, &password)
        .await
        .expect(200, None);
    let code = s.app.sms.last_code_for(PHONE_EXPIRED).unwrap();
    s.app.advance_clock(Duration::seconds(301));
    s.step("/api/v2/my/2fa/sms", &uuid, &key, json!({ "code": code }))
        .await
        .expect(410, Some("code_expired"));
    s.app.advance_clock(Duration::seconds(300));
    s.credentials(&late, &late_key, &email, &password)
        .await
        .expect(410, Some("wizard_expired"));

    // Last: it moves the clock on by minutes.
    factor_flows(s).await;

    let answered = server.answered.lock().unwrap().clone();
    for (method, path, _) in operations() {
        assert!(
            answered.contains(&(method.clone(), path.clone())),
            "{method} {path}: no real answer was checked"
        );
    }
}

/// A signed-in user's own second factors (`/api/v2/my/account/2fa`): every
/// operation, its successes, the client's mistakes and wrong proofs, a
/// failed SMS, an expired code, resends and, last, a blocked account.
async fn factor_flows(s: &Checked) {
    let path = |tail: &str| format!("/api/v2/my/account/2fa{tail}");
    let (status, setup, enable, disable) = (
        path(""),
        path("/google/setup"),
        path("/google/enable"),
        path("/google/disable"),
    );
    let (renew, add, confirm, remove) = (
        path("/backup-codes"),
        path("/sms"),
        path("/sms/confirm"),
        path("/sms/disable"),
    );
    let sign_in = |email: String, password: String| async move {
        let (uuid, key) = s.start().await;
        let signed_in = s
            .credentials(&uuid, &key, &email, &password)
            .await
            .expect(202, None);
        format!("Bearer {}", signed_in.str("/data/accessToken/token"))
    };
    let body = |value: Value| value.to_string();
    let padded = format!("{{\"pad\": \"{}\"}}", "x".repeat(17 * 1024));

    // An authenticator app: set up, enabled, backup codes renewed, disabled.
    let (_, email, password) = s.user(None, None).await;
    let me = &sign_in(email, password.clone()).await;
    let with_password = body(json!({ "password": password }));
    s.bearer("GET", &status, me, None).await.expect(200, None);
    s.get(&status).await.expect(401, Some("invalid_token"));
    let wrong = body(json!({ "password": "not it" }));
    s.bearer("POST", &setup, me, Some(&wrong))
        .await
        .expect(401, Some("invalid_credentials"));
    s.bearer("POST", &setup, me, Some("{}"))
        .await
        .expect(400, Some("invalid_request"));
    s.bearer("POST", &setup, me, Some(&padded))
        .await
        .expect(413, Some("payload_too_large"));
    let code = |code: &str| body(json!({ "code": code }));
    s.bearer("POST", &enable, me, Some(&code("123456")))
        .await
        .expect(409, Some("no_pending_setup"));
    let set_up = s
        .bearer("POST", &setup, me, Some(&with_password))
        .await
        .expect(200, None);
    let secret = TotpSecret::parse(&set_up.str("/data/secret")).unwrap();
    let now = s.totp_now(&secret);
    s.bearer("POST", &enable, me, Some(&code(&other_code(&now))))
        .await
        .expect(401, Some("invalid_code"));
    s.bearer("POST", &enable, me, Some(&code(&now)))
        .await
        .expect(200, None);
    s.bearer("POST", &setup, me, Some(&with_password))
        .await
        .expect(409, Some("factor_already_enabled"));
    // With an app, the password alone proves nothing: a code does.
    s.bearer("POST", &renew, me, Some(&with_password))
        .await
        .expect(400, Some("invalid_request"));
    let first = set_up.str("/data/backupCodes/0");
    let renewed = s
        .bearer("POST", &renew, me, Some(&code(&first)))
        .await
        .expect(200, None);
    s.bearer("POST", &renew, me, Some(&code("00000-00000")))
        .await
        .expect(401, Some("invalid_code"));
    let backup = renewed.str("/data/backupCodes/0");
    s.bearer("POST", &disable, me, Some(&code(&backup)))
        .await
        .expect(200, None);
    s.bearer("POST", &disable, me, Some(&code(&backup)))
        .await
        .expect(409, Some("factor_unavailable"));
    s.bearer("POST", &renew, me, Some(&with_password))
        .await
        .expect(409, Some("factor_unavailable"));

    // An account that must have a second factor keeps its last one.
    let email = format!("oas-{}@example.test", uuid::Uuid::new_v4().simple());
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    let required = json!({
        "email": email, "password": password, "phone": PHONE_REQUIRED,
        "second_factor_required": true,
    });
    s.admin("POST", "/api/v2/admin/users", Some(required))
        .await
        .expect(201, None);
    let (uuid, key) = s.past_password(&email, &password, "2fa_sms_auth").await;
    let texted = s.app.sms.last_code_for(PHONE_REQUIRED).unwrap();
    let signed_in = s
        .step("/api/v2/my/2fa/sms", &uuid, &key, json!({ "code": texted }))
        .await
        .expect(202, None);
    let me = &format!("Bearer {}", signed_in.str("/data/accessToken/token"));
    let with_password = body(json!({ "password": password }));
    s.bearer("POST", &remove, me, Some(&with_password))
        .await
        .expect(409, Some("factor_required"));

    // A phone: a failed SMS, sent, resent too soon, confirmed, removed.
    let (_, email, password) = s.user(None, None).await;
    let me = &sign_in(email, password.clone()).await;
    let with_password = body(json!({ "password": password }));
    let phone = |number: &str| body(json!({ "phone": number, "password": password }));
    s.bearer("POST", &add, me, Some(&phone("12345")))
        .await
        .expect(400, Some("invalid_request"));
    s.bearer(
        "POST",
        &add,
        me,
        Some(&body(json!({ "phone": PHONE_SELF, "password": "not it" }))),
    )
    .await
    .expect(401, Some("invalid_credentials"));
    s.app.sms.set_failing(true);
    s.bearer("POST", &add, me, Some(&phone(PHONE_SELF)))
        .await
        .expect(502, Some("sms_delivery_failed"));
    s.app.sms.set_failing(false);
    s.bearer("POST", &confirm, me, Some(&code("123456")))
        .await
        .expect(409, Some("no_pending_setup"));
    s.bearer("POST", &add, me, Some(&phone(PHONE_SELF)))
        .await
        .expect(200, None);
    s.bearer("POST", &add, me, Some(&phone(PHONE_SELF)))
        .await
        .expect(429, Some("resend_too_soon"));
    let texted = s.app.sms.last_code_for(PHONE_SELF).unwrap();
    s.bearer("POST", &confirm, me, Some(&code(&other_code(&texted))))
        .await
        .expect(401, Some("invalid_code"));
    s.bearer("POST", &confirm, me, Some(&code(&texted)))
        .await
        .expect(200, None);
    s.bearer("POST", &add, me, Some(&phone(PHONE_SELF)))
        .await
        .expect(409, Some("factor_already_enabled"));
    s.bearer("POST", &remove, me, Some(&with_password))
        .await
        .expect(200, None);
    s.bearer("POST", &remove, me, Some(&with_password))
        .await
        .expect(409, Some("factor_unavailable"));

    // A code that expired, then resends until none are left.
    s.bearer("POST", &add, me, Some(&phone(PHONE_SELF)))
        .await
        .expect(200, None);
    let texted = s.app.sms.last_code_for(PHONE_SELF).unwrap();
    let ttl = i64::from(s.app.settings.sms_code_ttl_secs);
    s.app.advance_clock(Duration::seconds(ttl + 1));
    s.bearer("POST", &confirm, me, Some(&code(&texted)))
        .await
        .expect(410, Some("code_expired"));
    for _ in 0..3 {
        s.app.advance_clock(Duration::seconds(31));
        s.bearer("POST", &add, me, Some(&phone(PHONE_SELF)))
            .await
            .expect(200, None);
    }
    s.app.advance_clock(Duration::seconds(31));
    s.bearer("POST", &add, me, Some(&phone(PHONE_SELF)))
        .await
        .expect(429, Some("resend_limit_reached"));

    // Wrong passwords until the account is blocked, as in sign-in.
    let wrong = body(json!({ "password": "not it" }));
    for _ in 0..5 {
        s.bearer("POST", &setup, me, Some(&wrong))
            .await
            .expect(401, Some("invalid_credentials"));
    }
    s.bearer("POST", &setup, me, Some(&with_password))
        .await
        .expect(429, Some("too_many_attempts"));
}

/// Every session operation, the user's and the admin's: successes, the
/// client's mistakes, and the answers an ended session gets.
/// Restore and reset, from an operator's forced reset and from the login screen.
async fn password_flows(s: &Checked) {
    let (user_id, email, password) = s.user(None, None).await;
    s.admin(
        "PATCH",
        &format!("/api/v2/admin/users/{user_id}"),
        Some(json!({ "force_password_reset": true })),
    )
    .await
    .expect(200, None);
    let (uuid, key) = s
        .past_password(&email, &password, "reset_password_email")
        .await;
    let restore = "/api/v2/my/signin/password/restore";
    let reset = "/api/v2/my/signin/password/reset";
    s.step(restore, &uuid, &key, json!({ "email": email }))
        .await
        .expect(409, Some("step_not_allowed"));
    s.app.mail.fail_at(Some(FailAt::Recipient));
    s.step(restore, &uuid, &key, json!({}))
        .await
        .expect(502, Some("email_delivery_failed"));
    s.app.mail.fail_at(None);
    s.step(restore, &uuid, &key, json!({}))
        .await
        .expect(200, None);
    s.step(restore, &uuid, &key, json!({}))
        .await
        .expect(429, Some("resend_too_soon"));
    let code = s.app.email_code_to(&email);
    let new_password = "a long and fresh passphrase 9";
    let fields = |code: &str, password: &str, again: &str| json!({ "code": code, "password": password, "password_confirmation": again });
    for (body, status, error) in [
        (
            fields(&other_code(&code), new_password, new_password),
            401,
            "invalid_code",
        ),
        (
            fields(&code, "password1", "password1"),
            422,
            "invalid_password",
        ),
        (
            fields(&code, new_password, "something else"),
            422,
            "password_mismatch",
        ),
        (fields(&code, &password, &password), 422, "password_reused"),
    ] {
        s.step(reset, &uuid, &key, body)
            .await
            .expect(status, Some(error));
    }
    // The code works once.
    for (status, error) in [(200, None), (409, Some("step_not_allowed"))] {
        let body = fields(&code, new_password, new_password);
        s.step(reset, &uuid, &key, body).await.expect(status, error);
    }
    // From the login screen, for an address without an account: the same answers.
    let (uuid, key) = s.start().await;
    let nobody = json!({ "email": "nobody-oas@example.test" });
    s.step(restore, &uuid, &key, nobody).await.expect(200, None);
    s.step(
        reset,
        &uuid,
        &key,
        fields("12345678", new_password, new_password),
    )
    .await
    .expect(401, Some("invalid_code"));
}

async fn session_flows(s: &Checked) {
    let (user_id, email, password) = s.user(None, None).await;
    // A new session: its `Authorization` value and its refresh token.
    let sign_in = || async {
        let (uuid, key) = s.start().await;
        let signed_in = s
            .credentials(&uuid, &key, &email, &password)
            .await
            .expect(202, None);
        (
            format!("Bearer {}", signed_in.str("/data/accessToken/token")),
            signed_in.str("/data/refreshToken/token"),
        )
    };
    let refresh = |token: &str| {
        let body = json!({ "refreshToken": token });
        async move { s.post("/api/v2/my/refresh", body, &[]).await }
    };
    let padded = format!("{{\"pad\": \"{}\"}}", "x".repeat(17 * 1024));
    let (me, sessions, signout) = ("/api/v2/my/me", "/api/v2/my/sessions", "/api/v2/my/signout");
    let revoke_all = "/api/v2/my/sessions/revoke-all";

    let (first, first_refresh) = sign_in().await;
    let first_id = s
        .bearer("GET", me, &first, None)
        .await
        .expect(200, None)
        .str("/data/session/id");
    s.bearer("GET", sessions, &first, None)
        .await
        .expect(200, None);
    s.get(me).await.expect(401, Some("invalid_token"));
    s.bearer("GET", sessions, "Bearer not-a-token", None)
        .await
        .expect(401, Some("invalid_token"));

    // Refresh: a new pair, then the replaced token within the race window,
    // a token nobody issued, and bodies it cannot read.
    let refreshed = refresh(&first_refresh).await.expect(200, None);
    assert_ne!(refreshed.str("/data/refreshToken/token"), first_refresh);
    refresh(&first_refresh)
        .await
        .expect(409, Some("concurrent_request"));
    refresh(&"A".repeat(112))
        .await
        .expect(401, Some("invalid_refresh_token"));
    let unknown_field = json!({ "refreshToken": first_refresh, "scope": "all" });
    s.post("/api/v2/my/refresh", unknown_field, &[])
        .await
        .expect(400, Some("invalid_request"));
    s.send("POST", "/api/v2/my/refresh", &[], Some(padded.clone()))
        .await
        .expect(413, Some("payload_too_large"));

    // A second session ends the first, then every other one, then itself.
    let (second, _) = sign_in().await;
    let first_session = format!("{sessions}/{first_id}");
    s.bearer("DELETE", &first_session, &second, None)
        .await
        .expect(200, None);
    s.bearer("DELETE", &first_session, &second, None)
        .await
        .expect(404, Some("session_not_found"));
    s.bearer("GET", me, &first, None)
        .await
        .expect(401, Some("invalid_token"));
    let keep = Some(r#"{"keepCurrent": true}"#);
    s.bearer("POST", revoke_all, &second, keep)
        .await
        .expect(200, None);
    s.bearer("POST", revoke_all, &second, Some(r#"{"keep": true}"#))
        .await
        .expect(400, Some("invalid_request"));
    s.bearer("POST", revoke_all, &second, Some(&padded))
        .await
        .expect(413, Some("payload_too_large"));
    s.bearer("POST", signout, &second, None)
        .await
        .expect(200, None);
    s.bearer("POST", signout, &second, None)
        .await
        .expect(401, Some("invalid_token"));
    s.bearer("POST", revoke_all, &second, None)
        .await
        .expect(401, Some("invalid_token"));

    // The admin's view: one session, then all of them.
    let (third, _) = sign_in().await;
    let third_id = s
        .bearer("GET", me, &third, None)
        .await
        .expect(200, None)
        .str("/data/session/id");
    let users_sessions = format!("/api/v2/admin/users/{user_id}/sessions");
    s.admin("GET", &users_sessions, None)
        .await
        .expect(200, None);
    let one = format!("{users_sessions}/{third_id}");
    s.admin("DELETE", &one, None).await.expect(204, None);
    s.admin("DELETE", &one, None)
        .await
        .expect(404, Some("session_not_found"));
    let unknown = format!("/api/v2/admin/users/{}/sessions", uuid::Uuid::new_v4());
    s.admin("GET", &unknown, None)
        .await
        .expect(404, Some("user_not_found"));
    s.admin("DELETE", &format!("{unknown}/{third_id}"), None)
        .await
        .expect(404, Some("user_not_found"));
    sign_in().await;
    s.admin("DELETE", &users_sessions, None)
        .await
        .expect(200, None);
    s.admin("DELETE", &unknown, None)
        .await
        .expect(404, Some("user_not_found"));

    // A blocked account refreshes nothing, and says for how long.
    let (_, fresh) = sign_in().await;
    let (uuid, key) = s.start().await;
    for _ in 0..5 {
        s.credentials(&uuid, &key, &email, "wrong password")
            .await
            .expect(401, Some("invalid_credentials"));
    }
    refresh(&fresh).await.expect(429, Some("too_many_attempts"));
    s.admin(
        "POST",
        &format!("/api/v2/admin/users/{user_id}/unlock"),
        None,
    )
    .await
    .expect(204, None);
}

/// Every admin operation, its successes and the client's mistakes.
async fn admin_flows(s: &Checked) {
    let users = "/api/v2/admin/users";
    let email = format!("oas-admin-{}@example.test", uuid::Uuid::new_v4().simple());
    let enrolled = json!({
        "email": email,
        "password": "long enough",
        "generate_totp": true,
        "phone": "+1 (555) 010-0299",
    });
    let created = s
        .admin("POST", users, Some(enrolled))
        .await
        .expect(201, None);
    assert!(created.str("/otpauth_uri").starts_with("otpauth://totp/"));
    let user = format!("{users}/{}", created.str("/id"));
    s.send(
        "POST",
        users,
        &[],
        Some(json!({ "email": email, "password": "long enough" }).to_string()),
    )
    .await
    .expect(401, Some("unauthorized"));
    s.admin(
        "POST",
        users,
        Some(json!({ "email": email, "password": "long enough" })),
    )
    .await
    .expect(409, Some("email_taken"));
    s.admin(
        "POST",
        users,
        Some(json!({ "email": "x@example.test", "password": "short" })),
    )
    .await
    .expect(422, Some("invalid_field"));
    s.admin(
        "POST",
        users,
        Some(json!({ "email": "x@example.test", "password": "long enough", "admin": true })),
    )
    .await
    .expect(400, Some("invalid_request"));
    oversized_admin_post(s, users).await;

    s.admin("GET", &user, None).await.expect(200, None);
    let unknown = format!("{users}/{}", uuid::Uuid::new_v4());
    s.admin("GET", &unknown, None)
        .await
        .expect(404, Some("user_not_found"));
    s.admin("GET", &format!("{users}/not-a-uuid"), None)
        .await
        .expect(404, Some("user_not_found"));
    let patched = s
        .admin(
            "PATCH",
            &user,
            Some(json!({ "phone": null, "totp_secret": null, "force_password_reset": true })),
        )
        .await
        .expect(200, None);
    assert_eq!(
        (&patched.body["phone"], &patched.body["totp_enabled"]),
        (&Value::Null, &json!(false))
    );
    s.admin("PATCH", &user, Some(json!({ "phone": "555" })))
        .await
        .expect(422, Some("invalid_field"));
    s.admin("PATCH", &unknown, Some(json!({})))
        .await
        .expect(404, Some("user_not_found"));
    let other = format!("oas-other-{}@example.test", uuid::Uuid::new_v4().simple());
    s.admin(
        "POST",
        users,
        Some(json!({ "email": other, "password": "long enough" })),
    )
    .await
    .expect(201, None);
    s.admin("PATCH", &user, Some(json!({ "email": other })))
        .await
        .expect(409, Some("email_taken"));
    s.admin("POST", &format!("{user}/unlock"), None)
        .await
        .expect(204, None);
    s.admin("POST", &format!("{unknown}/unlock"), None)
        .await
        .expect(404, Some("user_not_found"));
    s.admin("DELETE", &user, None).await.expect(204, None);
    s.admin("DELETE", &user, None)
        .await
        .expect(404, Some("user_not_found"));

    let settings = "/api/v2/admin/settings";
    s.admin("GET", settings, None).await.expect(200, None);
    s.admin("PUT", settings, Some(json!({ "block_secs": 600 })))
        .await
        .expect(200, None);
    s.admin("PUT", settings, Some(json!({ "block_secs": 0 })))
        .await
        .expect(422, Some("invalid_field"));
    s.admin("PUT", settings, Some(json!({ "recaptcha_enabled": true })))
        .await
        .expect(422, Some("invalid_field"));
    s.admin("PUT", settings, Some(json!({ "lockout": 1 })))
        .await
        .expect(400, Some("invalid_request"));
    s.admin("GET", "/api/v2/admin/store", None)
        .await
        .expect(200, None);
}

/// The signing keys: listed, rotated (a key of each algorithm, each in the
/// JWKS at once), and what rotation refuses. Each test app has a keyring of
/// its own, so rotating here changes no other test's tokens.
async fn key_flows(s: &Checked) {
    let (keys, rotate) = ("/api/v2/admin/keys", "/api/v2/admin/keys/rotate");
    let listed = s.admin("GET", keys, None).await.expect(200, None);
    assert_eq!(
        listed.body["keys"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );
    // Each rotation replaces the key still waiting to sign: the JWKS holds
    // the signing key and the newest, of each algorithm in turn.
    for algorithm in ["RS256", "ES256", "EdDSA"] {
        let rotated = s
            .admin("POST", rotate, Some(json!({ "algorithm": algorithm })))
            .await
            .expect(200, None);
        let newest = rotated.body["keys"].as_array().unwrap().last().cloned();
        assert_eq!(newest.unwrap()["algorithm"], algorithm, "{}", rotated.body);
        let jwks = s.get("/.well-known/jwks.json").await.expect(200, None);
        assert_eq!(
            jwks.body["keys"].as_array().unwrap().len(),
            2,
            "{}",
            jwks.body
        );
    }
    s.admin("POST", rotate, None).await.expect(200, None);
    s.admin("POST", rotate, Some(json!({ "algorithm": "HS256" })))
        .await
        .expect(422, Some("invalid_field"));
    s.admin("POST", rotate, Some(json!({ "alg": "ES256" })))
        .await
        .expect(400, Some("invalid_request"));
    s.send("POST", rotate, &[], None)
        .await
        .expect(401, Some("unauthorized"));
    oversized_admin_post(s, rotate).await;
}

/// An operator's key file pins the signing key: it alone is listed, and
/// rotation answers `keys_pinned`, as documented.
#[tokio::test]
async fn pinned_key_answers_conform() {
    let path = std::env::temp_dir().join(format!("signin-wizard-oas-{}.pem", uuid::Uuid::new_v4()));
    let pem = Signer::generate(SigningAlgorithm::RS256).unwrap();
    std::fs::write(&path, secrecy::ExposeSecret::expose_secret(&pem)).unwrap();
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Memory, &sms);
    settings.jwt_private_key_file = Some(path.clone());
    let app = spawn_with(settings, sms).await;
    let _ = std::fs::remove_file(&path);
    let s = &Checked::new(app);
    let listed = s
        .admin("GET", "/api/v2/admin/keys", None)
        .await
        .expect(200, None);
    assert_eq!(
        listed.body["keys"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );
    s.admin("POST", "/api/v2/admin/keys/rotate", None)
        .await
        .expect(409, Some("keys_pinned"));
    s.get("/.well-known/jwks.json").await.expect(200, None);
}

/// The per-IP limits of both APIs, as documented.
#[tokio::test]
async fn rate_limited_answers_conform() {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Memory, &sms);
    settings.ip_limit_per_minute = 1;
    settings.admin_ip_limit_per_minute = 1;
    let s = &Checked::new(spawn_with(settings, sms).await);
    s.get("/api/v2/my/signin/wizard").await.expect(200, None);
    s.get("/api/v2/my/signin/wizard")
        .await
        .expect(429, Some("rate_limited"));
    s.get("/api/v2/my/signin/wizard/spec")
        .await
        .expect(429, Some("rate_limited"));
    let body = json!({ "uuid": uuid::Uuid::new_v4(), "code": "123456" });
    s.post("/api/v2/my/2fa/google", body, &[])
        .await
        .expect(429, Some("rate_limited"));
    s.admin("GET", "/api/v2/admin/settings", None)
        .await
        .expect(200, None);
    s.admin("GET", "/api/v2/admin/store", None)
        .await
        .expect(429, Some("rate_limited"));
}

/// Without a token on Redis the admin API is off: every route of it answers
/// `route_not_found`, in the wizard's envelope, as documented.
#[tokio::test]
async fn admin_routes_answer_as_documented_while_the_api_is_off() {
    let sms = FakeSms::spawn().await;
    let mut settings = test_settings(Backend::Redis, &sms);
    settings.admin_token = None;
    let s = &Checked::new(spawn_with(settings, sms).await);
    let id = uuid::Uuid::new_v4();
    for (method, path, _) in operations() {
        if path.starts_with("/api/v2/admin/") {
            let concrete = path.replace("{id}", &id.to_string());
            s.admin(&method, &concrete, None)
                .await
                .expect(404, Some("route_not_found"));
        }
    }
}

/// An admin POST whose body is over the limit: 413, before anything is read.
async fn oversized_admin_post(s: &Checked, path: &str) {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    s.send(
        "POST",
        path,
        &[("Authorization", &bearer)],
        Some(format!("{{\"pad\": \"{}\"}}", "x".repeat(17 * 1024))),
    )
    .await
    .expect(413, Some("payload_too_large"));
}
