//! What a token costs: the service's own token pair and access-token check
//! (RS256), and one signature with each algorithm AWS-LC offers for JWTs.
//!
//!     cargo bench --bench signing

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret as _;
use signin_wizard::credentials::{Keyring, TokenIssuer, TokenSettings};
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
    let issuer = TokenIssuer::new(&Keyring::generate().unwrap(), settings()).unwrap();
    let (user, session) = (UserId::random(), SessionId::random());
    let ends = Utc::now() + chrono::Duration::days(30);
    let issue = || issuer.issue_access(black_box(user), session, Utc::now(), ends);
    c.bench_function("service: issue an access token (RS256)", |b| {
        b.iter(|| issue().unwrap())
    });
    let access = issue().unwrap().token;
    c.bench_function("service: verify an access token (RS256)", |b| {
        b.iter(|| {
            issuer
                .verify_access(black_box(&access), Utc::now())
                .unwrap()
        })
    });
}

fn one_signature_each(c: &mut Criterion) {
    let claims = serde_json::json!({ "sub": "user", "iss": "https://issuer.test", "aud": "portal", "exp": 2_000_000_000 });
    // The service's own key: RSA-2048, PKCS#8 PEM.
    let keyring = Keyring::generate().unwrap();
    let rsa_pem = keyring.signing_key_pem().expose_secret().as_bytes();
    let p256 = aws_lc_rs::signature::EcdsaKeyPair::generate(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
    )
    .unwrap();
    let ed25519 = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
    let keys = [
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(rsa_pem).unwrap(),
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_der(p256.to_pkcs8v1().unwrap().as_ref()),
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(ed25519.to_pkcs8().unwrap().as_ref()),
        ),
    ];
    let mut group = c.benchmark_group("sign one JWT");
    for (algorithm, key) in &keys {
        let header = Header::new(*algorithm);
        group.bench_function(format!("{algorithm:?}"), |b| {
            b.iter(|| jsonwebtoken::encode(black_box(&header), black_box(&claims), key).unwrap())
        });
    }
    group.finish();

    // The same RSA signature from a key parsed once: what jsonwebtoken's
    // backend spends re-reading the key on every call.
    let der = pem::parse(rsa_pem).unwrap();
    let parsed = aws_lc_rs::rsa::KeyPair::from_pkcs8(der.contents()).unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let message = [7u8; 300];
    let mut signature = vec![0; parsed.public_modulus_len()];
    c.bench_function("RS256 signature alone, key parsed once (AWS-LC)", |b| {
        b.iter(|| {
            parsed
                .sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &rng,
                    black_box(&message),
                    &mut signature,
                )
                .unwrap()
        })
    });
}

criterion_group!(benches, the_service, one_signature_each);
criterion_main!(benches);
