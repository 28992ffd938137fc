//! Tokens as another party sees them: fetched from a live server, checked
//! with a different cryptography library (ring) than the one that signs
//! (AWS-LC), from the published JWKS alone.

use crate::helpers::{Backend, UserSpec, spawn_app};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

fn part(token: &str, index: usize) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.split('.').nth(index).unwrap())
        .unwrap()
}

#[tokio::test]
async fn an_access_token_verifies_with_ring_against_the_published_jwks() {
    let app = spawn_app(Backend::Memory).await;
    let user = app.create_user(UserSpec::default()).await;
    let uuid = app.start().await;
    let reply = app.signin(&uuid, &user.email, &user.password).await;
    let token = reply.body["data"]["accessToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let jwks = app.get("/.well-known/jwks.json").await.body;

    let header: Value = serde_json::from_slice(&part(&token, 0)).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is published");
    assert_eq!(key["kty"], "RSA");
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
    let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
    let signed = token.rsplit_once('.').unwrap().0;
    public
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &part(&token, 2),
        )
        .expect("ring verifies the signature");
    let mut tampered = signed.as_bytes().to_vec();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(
        public
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                &tampered,
                &part(&token, 2)
            )
            .is_err()
    );

    let claims: Value = serde_json::from_slice(&part(&token, 1)).unwrap();
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["iss"], app.settings.jwt_issuer.as_str());
    assert_eq!(claims["aud"], app.settings.jwt_audience.as_str());
    assert_eq!(claims["token_use"], "access");
    let now = chrono::Utc::now().timestamp();
    let (nbf, exp) = (
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(nbf <= now + 5 && now < exp, "{claims}");
}
