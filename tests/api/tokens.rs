//! Tokens as another party sees them: fetched from a live server, checked
//! with a different cryptography library (ring) than the one that signs
//! (AWS-LC), from the published JWKS alone.

use crate::helpers::{Backend, FakeSms, UserSpec, spawn_with, test_settings};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use signin_wizard::credentials::SigningAlgorithm;

fn part(token: &str, index: usize) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.split('.').nth(index).unwrap())
        .unwrap()
}

/// Verifies `token` with ring from the JWKS alone; its claims.
pub fn verify_with_ring(token: &str, jwks: &Value) -> Value {
    use ring::signature::{self, UnparsedPublicKey};
    let header: Value = serde_json::from_slice(&part(token, 0)).unwrap();
    assert_eq!(header["typ"], "at+jwt");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is published");
    assert_eq!(
        key["alg"], header["alg"],
        "the key names the token's algorithm"
    );
    assert_eq!(key["use"], "sig");
    let b64 = |field: &str| {
        URL_SAFE_NO_PAD
            .decode(key[field].as_str().unwrap())
            .unwrap()
    };
    let signed = token.rsplit_once('.').unwrap().0.as_bytes().to_vec();
    let signature = part(token, 2);
    let verify = |message: &[u8]| -> bool {
        match header["alg"].as_str().unwrap() {
            "RS256" => {
                assert_eq!(key["kty"], "RSA");
                signature::RsaPublicKeyComponents {
                    n: b64("n"),
                    e: b64("e"),
                }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, &signature)
                .is_ok()
            }
            "ES256" => {
                assert_eq!((&key["kty"], &key["crv"]), (&"EC".into(), &"P-256".into()));
                let point = [vec![4], b64("x"), b64("y")].concat();
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, &signature)
                    .is_ok()
            }
            "EdDSA" => {
                assert_eq!(
                    (&key["kty"], &key["crv"]),
                    (&"OKP".into(), &"Ed25519".into())
                );
                UnparsedPublicKey::new(&signature::ED25519, b64("x"))
                    .verify(message, &signature)
                    .is_ok()
            }
            other => panic!("unexpected algorithm {other}"),
        }
    };
    assert!(
        verify(&signed),
        "ring verifies the {} signature",
        header["alg"]
    );
    let mut tampered = signed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(!verify(&tampered), "a changed token does not verify");
    serde_json::from_slice(&part(token, 1)).unwrap()
}

#[tokio::test]
async fn access_tokens_of_every_algorithm_verify_with_ring_against_the_published_jwks() {
    for algorithm in [
        SigningAlgorithm::RS256,
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
    ] {
        let sms = FakeSms::spawn().await;
        let mut settings = test_settings(Backend::Memory, &sms);
        settings.jwt_algorithm = algorithm;
        let app = spawn_with(settings, sms).await;
        let user = app.create_user(UserSpec::default()).await;
        let tokens = app.sign_in_as(&user, "test-agent/1.0").await;
        let jwks = app.get("/.well-known/jwks.json").await.body;
        let header: Value = serde_json::from_slice(&part(&tokens.access, 0)).unwrap();
        assert_eq!(header["alg"], algorithm.to_string());
        let claims = verify_with_ring(&tokens.access, &jwks);
        assert_eq!(claims["sub"], user.id.as_str());
        assert_eq!(claims["iss"], app.settings.jwt_issuer.as_str());
        assert_eq!(claims["aud"], app.settings.jwt_audience.as_str());
        assert_eq!(claims["token_use"], "access");
        assert_eq!(claims["client_id"], app.settings.jwt_audience.as_str());
        for claim in ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"] {
            assert!(
                claims.get(claim).is_some(),
                "RFC 9068 §2.2 requires {claim}"
            );
        }
        let now = chrono::Utc::now().timestamp();
        let (nbf, exp) = (
            claims["nbf"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert!(nbf <= now + 5 && now < exp, "{claims}");
        // And the service's own endpoints take it.
        let me = app.get_with_bearer("/api/v2/my/me", &tokens.access).await;
        assert_eq!(
            me.status,
            reqwest::StatusCode::OK,
            "{algorithm}: {}",
            me.body
        );
    }
}
