use super::Keyring;
use crate::domain::UserId;
use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who tokens are issued by and for, and how long they live.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

/// Tells access and refresh tokens apart, so one can never pass for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenUse {
    Access,
    Refresh,
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
    /// The session this sign-in opened; both tokens of a pair share it.
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

/// Signs RS256 tokens with the keyring's key and publishes its public half.
pub struct TokenIssuer {
    key: EncodingKey,
    kid: String,
    jwks: JwkSet,
    settings: TokenSettings,
}

impl TokenIssuer {
    pub fn new(keyring: &Keyring, settings: TokenSettings) -> anyhow::Result<Self> {
        let key = EncodingKey::from_rsa_pem(keyring.signing_key_pem().expose_secret().as_bytes())
            .context("the signing key is not an RSA private key in PEM form")?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).context("deriving the JWK")?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            key,
            kid,
            jwks: JwkSet { keys: vec![jwk] },
            settings,
        })
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs an access and a refresh token for `user`. CPU-bound (two RSA
    /// signatures): call it from the blocking pool.
    pub fn issue(&self, user: UserId, now: DateTime<Utc>) -> anyhow::Result<TokenPair> {
        let session = Uuid::new_v4().to_string();
        Ok(TokenPair {
            access: self.sign(
                user,
                &session,
                TokenUse::Access,
                now,
                self.settings.access_ttl,
            )?,
            refresh: self.sign(
                user,
                &session,
                TokenUse::Refresh,
                now,
                self.settings.refresh_ttl,
            )?,
        })
    }

    fn sign(
        &self,
        user: UserId,
        session: &str,
        token_use: TokenUse,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<IssuedToken> {
        // Whole seconds, so the envelope's timestamps equal the claims exactly.
        let created_at =
            DateTime::from_timestamp(now.timestamp(), 0).context("clock out of range")?;
        let expires_at = created_at + ttl;
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: user.to_string(),
            aud: self.settings.audience.clone(),
            iat: created_at.timestamp(),
            nbf: created_at.timestamp(),
            exp: expires_at.timestamp(),
            jti: Uuid::new_v4().to_string(),
            sid: session.to_owned(),
            token_use,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key).context("signing a token")?;
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
            refresh_ttl: Duration::minutes(60),
        };
        let issuer = TokenIssuer::new(&Keyring::generate().unwrap(), settings).unwrap();
        let user = UserId::random();
        let pair = issuer.issue(user, Utc::now()).unwrap();
        let kid = decode_header(&pair.access.token).unwrap().kid.unwrap();
        let jwk = issuer.jwks().find(&kid).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["portal"]);
        validation.set_issuer(&["https://issuer.test"]);
        let claims = decode::<AccessClaims>(
            &pair.access.token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims.sub, user.to_string());
        assert_eq!(claims.token_use, TokenUse::Access);
        assert_eq!(claims.exp - claims.iat, 15 * 60);
        assert_eq!(
            pair.refresh.expires_at - pair.refresh.created_at,
            Duration::minutes(60)
        );
    }
}
