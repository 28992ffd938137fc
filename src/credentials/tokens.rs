use super::Keyring;
use super::signing::Signer;
use crate::domain::{SessionId, UserId};
use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Header, Validation};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
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
    /// RFC 9068 §2.2: the client the token was issued to. The portal is the
    /// one client, so it is named as the audience names it (empty in tokens
    /// signed before this claim existed).
    #[serde(default)]
    pub client_id: String,
    pub token_use: TokenUse,
}

/// A token handed to a client: a bearer secret, so it never prints.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: SecretString,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access: IssuedToken,
    pub refresh: IssuedToken,
}

/// Signs access tokens with the keyring's current key, publishes the keys
/// a verifier may need, and verifies the access tokens it signed. The
/// keyring can be replaced while it runs (a rotation, see `signing_keys`).
pub struct TokenIssuer {
    keys: RwLock<Arc<Loaded>>,
    settings: TokenSettings,
}

/// A keyring with each of its keys parsed (in the keyring's order).
struct Loaded {
    keyring: Keyring,
    signers: Vec<Arc<Signer>>,
}

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
    #[error("not an access token signed with an allowed algorithm")]
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

fn load(keyring: Keyring) -> anyhow::Result<Loaded> {
    let signers = keyring
        .keys()
        .iter()
        .map(|key| key.signer().map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    Ok(Loaded { keyring, signers })
}

impl TokenIssuer {
    pub fn new(keyring: Keyring, settings: TokenSettings) -> anyhow::Result<Self> {
        Ok(Self {
            keys: RwLock::new(Arc::new(load(keyring)?)),
            settings,
        })
    }

    /// Signs and verifies with `keyring` from now on. Its keys are parsed
    /// first: a keyring that does not parse changes nothing.
    pub fn replace(&self, keyring: Keyring) -> anyhow::Result<()> {
        let loaded = Arc::new(load(keyring)?);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The longest a token lives past the moment its key stopped signing,
    /// so how long a verifier still needs that key.
    pub fn keep_for(&self) -> Duration {
        self.settings.access_ttl + LEEWAY
    }

    /// The keys a verifier may need at `now`, as the JWKS serves them.
    pub fn jwks(&self, now: DateTime<Utc>) -> JwkSet {
        let loaded = self.loaded();
        JwkSet {
            keys: loaded
                .keyring
                .needed(now, self.keep_for())
                .map(|state| loaded.signers[state.index].jwk().clone())
                .collect(),
        }
    }

    /// The keyring as loaded (for the admin's view of its keys).
    pub fn keyring(&self) -> Keyring {
        self.loaded().keyring.clone()
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
        // RFC 9068 §4: `at+jwt`, or its full media type (RFC 7515 §4.1.9).
        let typ = header.typ.as_deref().unwrap_or_default();
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) {
            return Err(TokenRejection::WrongType);
        }
        // Only a key this service still publishes, and only with its own
        // algorithm (an allow-list of one per key: no `none`, no HMAC).
        let loaded = self.loaded();
        let signer = loaded
            .keyring
            .needed(now, self.keep_for())
            .map(|state| &loaded.signers[state.index])
            .find(|signer| header.kid.as_deref() == Some(signer.kid()))
            .ok_or(TokenRejection::UnknownKey)?;
        if header.alg != signer.algorithm().jwt() {
            return Err(TokenRejection::WrongType);
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        // Times are checked below against the service's clock, not the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims =
            jsonwebtoken::decode::<AccessClaims>(token, signer.decoding_key(), &validation)
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
            client_id: self.settings.audience.clone(),
            token_use: TokenUse::Access,
        };
        let loaded = self.loaded();
        let signer = loaded
            .keyring
            .needed(now, self.keep_for())
            .find(|state| state.signing)
            .map(|state| &loaded.signers[state.index])
            .context("the keyring has no key that signs now")?;
        let mut header = Header::new(signer.algorithm().jwt());
        header.kid = Some(signer.kid().to_owned());
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        let token = signer.sign(&header, &claims)?.into();
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
    use crate::credentials::SigningAlgorithm;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation, decode, decode_header};
    use secrecy::ExposeSecret;

    #[test]
    fn tokens_verify_against_the_published_jwks() {
        let settings = TokenSettings {
            issuer: "https://issuer.test".into(),
            audience: "portal".into(),
            access_ttl: Duration::minutes(15),
        };
        let now = Utc::now();
        let keyring = Keyring::generate(SigningAlgorithm::RS256, now).unwrap();
        let issuer = TokenIssuer::new(keyring, settings).unwrap();
        let user = UserId::random();
        let access = issuer
            .issue_access(user, SessionId::random(), now, now + Duration::days(1))
            .unwrap();
        let token = access.token.expose_secret();
        let kid = decode_header(token).unwrap().kid.unwrap();
        let jwks = issuer.jwks(now);
        let jwk = jwks.find(&kid).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["portal"]);
        validation.set_issuer(&["https://issuer.test"]);
        let claims =
            decode::<AccessClaims>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
                .unwrap()
                .claims;
        assert_eq!(claims.sub, user.to_string());
        assert_eq!(claims.token_use, TokenUse::Access);
        assert_eq!(claims.exp - claims.iat, 15 * 60);
        // A bearer secret: Debug never prints it.
        assert!(!format!("{access:?}").contains(token));
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
            .expose_secret()
            .to_owned()
    }

    fn issuer() -> TokenIssuer {
        issuer_of(SigningAlgorithm::RS256)
    }

    fn issuer_of(algorithm: SigningAlgorithm) -> TokenIssuer {
        let settings = TokenSettings {
            issuer: "https://issuer.test".into(),
            audience: "portal".into(),
            access_ttl: Duration::minutes(15),
        };
        let keyring = Keyring::generate(algorithm, Utc::now() - Duration::minutes(1)).unwrap();
        TokenIssuer::new(keyring, settings).unwrap()
    }

    /// The issuer's one signing key.
    fn signer_of(issuer: &TokenIssuer) -> Arc<Signer> {
        Arc::clone(&issuer.loaded().signers[0])
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
            let jwk = &issuer.jwks(now).keys[0];
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
            signer_of(&issuer).sign(&header, claims).unwrap()
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
        for typ in ["application/at+jwt", "AT+JWT"] {
            assert!(
                issuer
                    .verify_access(&signed(Some(typ), &claims), now)
                    .is_ok(),
                "{typ}"
            );
        }
        assert_eq!(
            issuer.verify_access(&signed(Some("application/jwt"), &claims), now),
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
            signer_of(&issuer)
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

    #[test]
    fn every_algorithm_round_trips_and_a_rotated_out_key_verifies_only_while_needed() {
        for algorithm in [SigningAlgorithm::ES256, SigningAlgorithm::EdDSA] {
            let issuer = issuer_of(algorithm);
            let now = Utc::now();
            let token = access_token(&issuer, now);
            assert_eq!(header_of(&token)["alg"], algorithm.to_string());
            assert!(issuer.verify_access(&token, now).is_ok(), "{algorithm}");
        }

        let issuer = issuer();
        let now = Utc::now();
        let old = access_token(&issuer, now);
        let ahead = Duration::minutes(5);
        let rotated = issuer
            .keyring()
            .rotated(SigningAlgorithm::ES256, now, ahead, issuer.keep_for())
            .unwrap();
        issuer.replace(rotated).unwrap();
        // Published at once, signing only once its time comes.
        assert_eq!(issuer.jwks(now).keys.len(), 2);
        assert_eq!(header_of(&access_token(&issuer, now))["alg"], "RS256");
        let later = now + ahead;
        let new = access_token(&issuer, later);
        assert_eq!(header_of(&new)["alg"], "ES256");
        // The old key's tokens verify until the longest of them expired, then the key leaves.
        assert!(
            issuer
                .verify_access(&old, now + Duration::minutes(10))
                .is_ok()
        );
        let gone = later + issuer.keep_for();
        assert_eq!(issuer.jwks(gone).keys.len(), 1);
        let resigned = with_payload(&old, |p| {
            p["exp"] = (gone + Duration::hours(1)).timestamp().into()
        });
        assert_eq!(
            issuer.verify_access(&resigned, gone),
            Err(TokenRejection::UnknownKey)
        );
        assert!(
            issuer
                .verify_access(&new, later + Duration::minutes(1))
                .is_ok()
        );
        // A token that names the new key but another algorithm is refused before any check.
        let mut confused = header_of(&new);
        confused["alg"] = "RS256".into();
        assert_eq!(
            issuer.verify_access(&unsigned(confused, &new), later),
            Err(TokenRejection::WrongType)
        );
    }
}
