use super::Keyring;
use crate::domain::{SessionId, UserId};
use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who tokens are issued by and for, and how long they live.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
}

/// What a JWT of this service is for. Only access tokens are JWTs (refresh
/// tokens are opaque, see `sessions`), but the claim stays: a token that
/// says anything else is never an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenUse {
    Access,
}

/// The claims of both tokens (RFC 7519 names, plus `sid` and `token_use`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The session this sign-in opened (see `sessions`).
    pub sid: String,
    pub token_use: TokenUse,
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access: IssuedToken,
    pub refresh: IssuedToken,
}

/// Signs RS256 tokens with the keyring's key, publishes its public half,
/// and verifies the access tokens it signed.
pub struct TokenIssuer {
    signer: RsaSigner,
    kid: String,
    jwks: JwkSet,
    /// The public key, for verifying.
    decoding: DecodingKey,
    settings: TokenSettings,
}

/// The one algorithm tokens are signed and accepted with (an allow-list of
/// one: `none`, HMAC with the public key as secret, and every other
/// algorithm are refused before any key is used).
const ALGORITHM: Algorithm = Algorithm::RS256;

/// RFC 9068: the `typ` of an access token.
const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// How far `exp` and `nbf` may be off, for clocks that drift apart.
pub const LEEWAY: Duration = Duration::seconds(30);

/// Why an access token was refused. Clients see one answer for all of
/// them; the reason is for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("not a JWT")]
    Malformed,
    #[error("not an access token signed with the allowed algorithm")]
    WrongType,
    #[error("signed with a key this service does not have")]
    UnknownKey,
    #[error("the signature or the claims do not verify")]
    Invalid,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
}

/// An RSA key parsed once. jsonwebtoken's `encode` parses its key again for
/// every signature, which is 45% of an RS256 signature's cost here
/// (BENCHMARKS.md); the JWS compact form itself is two base64url parts and
/// a signature.
struct RsaSigner {
    key: aws_lc_rs::rsa::KeyPair,
    rng: aws_lc_rs::rand::SystemRandom,
}

impl RsaSigner {
    /// PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) PEM.
    fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        use aws_lc_rs::rsa::KeyPair;
        let block = pem::parse(pem).context("the signing key is not PEM")?;
        let key = match block.tag() {
            "PRIVATE KEY" => KeyPair::from_pkcs8(block.contents()),
            "RSA PRIVATE KEY" => KeyPair::from_der(block.contents()),
            other => anyhow::bail!("the signing key is a {other:?}, not an RSA private key"),
        }
        .map_err(|e| anyhow::anyhow!("the signing key is not a usable RSA key: {e}"))?;
        Ok(Self {
            key,
            rng: aws_lc_rs::rand::SystemRandom::new(),
        })
    }

    /// `header.claims.signature`, each base64url, signed RS256.
    fn sign(&self, header: &Header, claims: &impl Serialize) -> anyhow::Result<String> {
        use base64::Engine;
        anyhow::ensure!(
            header.alg == Algorithm::RS256,
            "an RSA key signs RS256 only"
        );
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &self.rng,
                message.as_bytes(),
                &mut signature,
            )
            .map_err(|_| anyhow::anyhow!("signing a token failed"))?;
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

impl TokenIssuer {
    pub fn new(keyring: &Keyring, settings: TokenSettings) -> anyhow::Result<Self> {
        let pem = keyring.signing_key_pem().expose_secret().as_bytes();
        let key = EncodingKey::from_rsa_pem(pem)
            .context("the signing key is not an RSA private key in PEM form")?;
        let mut jwk = Jwk::from_encoding_key(&key, ALGORITHM).context("deriving the JWK")?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).context("the JWK of the signing key")?;
        Ok(Self {
            signer: RsaSigner::from_pem(pem)?,
            kid,
            jwks: JwkSet { keys: vec![jwk] },
            decoding,
            settings,
        })
    }

    /// The claims of an access token this service signed, checked as ASVS
    /// 5.0 V9 and RFC 9068 ask: algorithm, `typ`, key, signature, issuer,
    /// audience, `exp` and `nbf` against `now` (within [`LEEWAY`]), and its
    /// use (a refresh token is not an access token).
    pub fn verify_access(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessClaims, TokenRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        if header.alg != ALGORITHM || header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(TokenRejection::WrongType);
        }
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenRejection::UnknownKey);
        }
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        // Times are checked below against the service's clock, not the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map_err(|_| TokenRejection::Invalid)?
            .claims;
        if claims.token_use != TokenUse::Access {
            return Err(TokenRejection::WrongType);
        }
        // On `now`'s side: the claims may hold any i64.
        let (now, leeway) = (now.timestamp(), LEEWAY.num_seconds());
        if now - leeway >= claims.exp {
            return Err(TokenRejection::Expired);
        }
        if now + leeway < claims.nbf {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(claims)
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs an access token of `session` for `user`, ending at `ends` at
    /// the latest (the session's own end). CPU-bound (an RSA signature):
    /// call it from the blocking pool.
    pub fn issue_access(
        &self,
        user: UserId,
        session: SessionId,
        now: DateTime<Utc>,
        ends: DateTime<Utc>,
    ) -> anyhow::Result<IssuedToken> {
        // Whole seconds, so the envelope's timestamps equal the claims exactly.
        let created_at =
            DateTime::from_timestamp(now.timestamp(), 0).context("clock out of range")?;
        let expires_at = (created_at + self.settings.access_ttl).min(ends);
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: user.to_string(),
            aud: self.settings.audience.clone(),
            iat: created_at.timestamp(),
            nbf: created_at.timestamp(),
            exp: expires_at.timestamp(),
            jti: Uuid::new_v4().to_string(),
            sid: session.to_string(),
            token_use: TokenUse::Access,
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.kid.clone());
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        let token = self.signer.sign(&header, &claims)?;
        Ok(IssuedToken {
            token,
            created_at,
            expires_at,
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

    #[test]
    fn tokens_verify_against_the_published_jwks() {
        let settings = TokenSettings {
            issuer: "https://issuer.test".into(),
            audience: "portal".into(),
            access_ttl: Duration::minutes(15),
        };
        let issuer = TokenIssuer::new(&Keyring::generate().unwrap(), settings).unwrap();
        let user = UserId::random();
        let now = Utc::now();
        let access = issuer
            .issue_access(user, SessionId::random(), now, now + Duration::days(1))
            .unwrap();
        let kid = decode_header(&access.token).unwrap().kid.unwrap();
        let jwk = issuer.jwks().find(&kid).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["portal"]);
        validation.set_issuer(&["https://issuer.test"]);
        let claims = decode::<AccessClaims>(
            &access.token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims.sub, user.to_string());
        assert_eq!(claims.token_use, TokenUse::Access);
        assert_eq!(claims.exp - claims.iat, 15 * 60);
        // Never beyond its session's end.
        let ending = issuer
            .issue_access(user, SessionId::random(), now, now + Duration::minutes(5))
            .unwrap();
        assert_eq!(
            ending.expires_at.timestamp(),
            (now + Duration::minutes(5)).timestamp()
        );
    }

    /// A fresh access token of a new session, for a new user.
    fn access_token(issuer: &TokenIssuer, now: DateTime<Utc>) -> String {
        issuer
            .issue_access(
                UserId::random(),
                SessionId::random(),
                now,
                now + Duration::days(30),
            )
            .unwrap()
            .token
    }

    fn issuer() -> TokenIssuer {
        let settings = TokenSettings {
            issuer: "https://issuer.test".into(),
            audience: "portal".into(),
            access_ttl: Duration::minutes(15),
        };
        TokenIssuer::new(&Keyring::generate().unwrap(), settings).unwrap()
    }

    /// `token` with its payload replaced by `edit(payload)`, signature kept.
    fn with_payload(token: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        edit(&mut payload);
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    }

    fn header_of(token: &str) -> serde_json::Value {
        use base64::Engine;
        let first = token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(first)
                .unwrap(),
        )
        .unwrap()
    }

    fn unsigned(header: serde_json::Value, token: &str) -> String {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = token.split('.').nth(1).unwrap();
        format!("{}.{payload}.", engine.encode(header.to_string()))
    }

    #[test]
    fn a_fresh_access_token_verifies_and_says_at_jwt() {
        let issuer = issuer();
        let now = Utc::now();
        let token = access_token(&issuer, now);
        assert_eq!(header_of(&token)["typ"], "at+jwt");
        let claims = issuer.verify_access(&token, now).unwrap();
        assert_eq!(claims.token_use, TokenUse::Access);
        // Within the leeway either side.
        assert!(
            issuer
                .verify_access(&token, now - LEEWAY + Duration::seconds(2))
                .is_ok()
        );
        assert!(
            issuer
                .verify_access(
                    &token,
                    now + Duration::minutes(15) + LEEWAY - Duration::seconds(2)
                )
                .is_ok()
        );
    }

    #[test]
    fn forged_foreign_stale_and_wrong_kind_tokens_are_refused() {
        use TokenRejection::*;
        let issuer = issuer();
        let now = Utc::now();
        let access = &access_token(&issuer, now);

        // alg none: there is no such algorithm to the verifier, so the
        // header does not even parse.
        let mut none = header_of(access);
        none["alg"] = "none".into();
        assert_eq!(
            issuer.verify_access(&unsigned(none, access), now),
            Err(Malformed)
        );

        // HS256 with the public key as the HMAC secret (algorithm confusion).
        let public_key = {
            let jwk = &issuer.jwks().keys[0];
            serde_json::to_string(jwk).unwrap()
        };
        let claims = issuer.verify_access(access, now).unwrap();
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = header_of(access)["kid"].as_str().map(str::to_owned);
        hs.typ = Some("at+jwt".into());
        let confused = jsonwebtoken::encode(
            &hs,
            &claims,
            &EncodingKey::from_secret(public_key.as_bytes()),
        )
        .unwrap();
        assert_eq!(issuer.verify_access(&confused, now), Err(WrongType));

        // Signed by another service's key (its own kid, or ours claimed).
        let foreign = access_token(&self::issuer(), now);
        assert_eq!(issuer.verify_access(&foreign, now), Err(UnknownKey));
        let mut ours = header_of(&foreign);
        ours["kid"] = header_of(access)["kid"].clone();
        let parts: Vec<&str> = foreign.split('.').collect();
        let relabelled = format!(
            "{}.{}.{}",
            {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ours.to_string())
            },
            parts[1],
            parts[2]
        );
        assert_eq!(issuer.verify_access(&relabelled, now), Err(Invalid));

        // A payload changed after signing.
        let tampered = with_payload(access, |p| p["sub"] = "someone-else".into());
        assert_eq!(issuer.verify_access(&tampered, now), Err(Invalid));

        // Each of the two marks of an access token is needed on its own:
        // our key, typ at+jwt and token_use refresh (as refresh tokens said
        // when they were JWTs); and access claims with typ JWT or none.
        let kid = header_of(access)["kid"].as_str().map(str::to_owned);
        let signed_value = |typ: Option<&str>, claims: &serde_json::Value| {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = kid.clone();
            header.typ = typ.map(str::to_owned);
            issuer.signer.sign(&header, claims).unwrap()
        };
        let signed = |typ: Option<&str>, claims: &AccessClaims| {
            signed_value(typ, &serde_json::to_value(claims).unwrap())
        };
        let mut refresh_use = serde_json::to_value(&claims).unwrap();
        refresh_use["token_use"] = "refresh".into();
        assert!(
            issuer
                .verify_access(&signed(Some("at+jwt"), &claims), now)
                .is_ok()
        );
        assert_eq!(
            issuer.verify_access(&signed_value(Some("at+jwt"), &refresh_use), now),
            Err(Invalid)
        );
        assert_eq!(
            issuer.verify_access(&signed(Some("JWT"), &claims), now),
            Err(WrongType)
        );
        assert_eq!(
            issuer.verify_access(&signed(None, &claims), now),
            Err(WrongType)
        );
        // Another issuer, same key.
        let elsewhere = AccessClaims {
            iss: "https://other.test".into(),
            ..claims.clone()
        };
        assert_eq!(
            issuer.verify_access(&signed(Some("at+jwt"), &elsewhere), now),
            Err(Invalid)
        );
        // Claims far off either way (up to i64::MAX) neither panic nor pass.
        let far = AccessClaims {
            exp: i64::MAX,
            nbf: i64::MAX,
            ..claims.clone()
        };
        assert_eq!(
            issuer.verify_access(&signed(Some("at+jwt"), &far), now),
            Err(NotYetValid)
        );
        let stale = AccessClaims {
            exp: 1,
            nbf: 0,
            ..claims.clone()
        };
        assert_eq!(
            issuer.verify_access(&signed(Some("at+jwt"), &stale), now),
            Err(Expired)
        );
        // The signer refuses a header that names another algorithm.
        assert!(
            issuer
                .signer
                .sign(&Header::new(Algorithm::ES256), &claims)
                .is_err()
        );

        // Expired, and not yet valid, beyond the leeway.
        let after = now + Duration::minutes(15) + LEEWAY;
        assert_eq!(issuer.verify_access(access, after), Err(Expired));
        assert_eq!(
            issuer.verify_access(access, now - LEEWAY - Duration::seconds(1)),
            Err(NotYetValid)
        );

        // Another audience.
        let mut other = self::issuer();
        other.settings.audience = "another-portal".into();
        let elsewhere = access_token(&other, now);
        assert_eq!(other.verify_access(&elsewhere, now).map(|_| ()), Ok(()));
        let mut strict = other;
        strict.settings.audience = "portal".into();
        assert_eq!(strict.verify_access(&elsewhere, now), Err(Invalid));

        // Not a JWT at all.
        for junk in ["", "a.b", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9"] {
            assert!(issuer.verify_access(junk, now).is_err(), "{junk:?}");
        }
    }
}
