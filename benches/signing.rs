//! What a token costs: the service's access token, signed and verified with
//! each algorithm it offers, and what jsonwebtoken's own `encode` spends on
//! an RS256 signature (it parses the key on every call).
//!
//!     cargo bench --bench signing

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret as _;
use signin_wizard::credentials::{Keyring, Signer, SigningAlgorithm, TokenIssuer, TokenSettings};
use signin_wizard::domain::{SessionId, UserId};
use std::hint::black_box;

fn settings() -> TokenSettings {
    TokenSettings {
        issuer: "https://issuer.test".into(),
        audience: "portal".into(),
        access_ttl: chrono::Duration::minutes(15),
    }
}

fn the_service(c: &mut Criterion) {
    for algorithm in [
        SigningAlgorithm::RS256,
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
    ] {
        let keyring = Keyring::generate(algorithm, Utc::now()).unwrap();
        let issuer = TokenIssuer::new(keyring, settings()).unwrap();
        let (user, session) = (UserId::random(), SessionId::random());
        let ends = Utc::now() + chrono::Duration::days(30);
        let issue = || issuer.issue_access(black_box(user), session, Utc::now(), ends);
        c.bench_function(
            &format!("service: issue an access token ({algorithm})"),
            |b| b.iter(|| issue().unwrap()),
        );
        let access = issue().unwrap().token.expose_secret().to_owned();
        c.bench_function(
            &format!("service: verify an access token ({algorithm})"),
            |b| {
                b.iter(|| {
                    issuer
                        .verify_access(black_box(&access), Utc::now())
                        .unwrap()
                })
            },
        );
    }
}

fn jsonwebtoken_encode(c: &mut Criterion) {
    let claims = serde_json::json!({ "sub": "user", "iss": "https://issuer.test", "aud": "portal", "exp": 2_000_000_000 });
    let pem = Signer::generate(SigningAlgorithm::RS256).unwrap();
    let key = EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes()).unwrap();
    let header = Header::new(Algorithm::RS256);
    c.bench_function(
        "jsonwebtoken::encode, RS256 (parses the key each time)",
        |b| b.iter(|| jsonwebtoken::encode(black_box(&header), black_box(&claims), &key).unwrap()),
    );
}

criterion_group!(benches, the_service, jsonwebtoken_encode);
criterion_main!(benches);
