use crate::domain::{NewPassword, Password};
use anyhow::Context as _;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// An argon2id hash in PHC string form; it carries its own parameters.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// argon2id cost for new hashes. The default is OWASP's (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks are waiting")]
    Overloaded,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Hashes and verifies passwords on tokio's blocking pool, never on the async
/// workers. At most `workers` run at once and at most `queue` more may wait;
/// beyond that callers get [`HashError::Overloaded`] at once.
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    /// Verified instead when the email is unknown, so both cases cost the same.
    dummy: PasswordHash,
}

impl PasswordHasher {
    pub async fn new(policy: PasswordPolicy, workers: usize, queue: usize) -> anyhow::Result<Self> {
        let params = Params::new(
            policy.memory_kib,
            policy.iterations,
            policy.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let workers = workers.max(1);
        let mut hasher = Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers + queue)),
            dummy: PasswordHash(String::new()),
        };
        hasher.dummy = hasher.hash_secret(random_dummy().into()).await?;
        Ok(hasher)
    }

    pub async fn hash(&self, password: &NewPassword) -> Result<PasswordHash, HashError> {
        self.hash_secret(password.expose().to_owned().into()).await
    }

    /// True only when `hash` exists and matches; an absent hash still costs one verification.
    pub async fn verify(
        &self,
        password: &Password,
        hash: Option<&PasswordHash>,
    ) -> Result<bool, HashError> {
        let known = hash.is_some();
        let phc = hash.unwrap_or(&self.dummy).0.clone();
        let password = password.clone();
        let argon2 = self.argon2.clone();
        let matched = self
            .run(move || {
                let parsed = argon2::PasswordHash::new(&phc)
                    .map_err(|e| anyhow::anyhow!("stored password hash is malformed: {e}"))?;
                // The NFKC form, then as typed for a password set before
                // passwords were normalized (the same work for an unknown account).
                let matches = |text: &str| argon2.verify_password(text.as_bytes(), &parsed).is_ok();
                Ok::<_, anyhow::Error>(
                    matches(password.expose()) || password.as_typed().is_some_and(matches),
                )
            })
            .await??;
        Ok(known && matched)
    }

    async fn hash_secret(&self, password: SecretString) -> Result<PasswordHash, HashError> {
        let argon2 = self.argon2.clone();
        let phc = self
            .run(move || {
                let salt = SaltString::generate(&mut rand::rngs::OsRng);
                argon2
                    .hash_password(password.expose_secret().as_bytes(), &salt)
                    .map(|h| h.to_string())
                    .map_err(|e| anyhow::anyhow!("argon2 failed: {e}"))
            })
            .await??;
        Ok(PasswordHash(phc))
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Overloaded)?;
        let _running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .context("password pool closed")?;
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .context("password task failed")?;
        Ok(result)
    }
}

fn random_dummy() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rngs::OsRng.r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordPolicy {
        PasswordPolicy {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn verifies_what_it_hashed_and_nothing_else() {
        let hasher = PasswordHasher::new(cheap(), 2, 4).await.unwrap();
        let hash = hasher
            .hash(&NewPassword::parse("correct horse".into()).unwrap())
            .await
            .unwrap();
        assert!(hash.0.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let right = Password::parse("correct horse".into()).unwrap();
        let wrong = Password::parse("wrong horse".into()).unwrap();
        assert!(hasher.verify(&right, Some(&hash)).await.unwrap());
        assert!(!hasher.verify(&wrong, Some(&hash)).await.unwrap());
        assert!(!hasher.verify(&right, None).await.unwrap());
    }

    #[tokio::test]
    async fn a_password_matches_however_its_accents_were_typed() {
        let hasher = PasswordHasher::new(cheap(), 2, 4).await.unwrap();
        let typed = |text: &str| Password::parse(text.to_owned().into()).unwrap();
        let (composed, decomposed) = (
            "caf\u{e9} cr\u{e8}me tous les jours",
            "cafe\u{301} cre\u{300}me tous les jours",
        );
        // Set in one form, typed in the other.
        let set = hasher
            .hash(&NewPassword::parse(decomposed.to_owned().into()).unwrap())
            .await
            .unwrap();
        assert!(hasher.verify(&typed(composed), Some(&set)).await.unwrap());
        // A hash of the form as typed, from before passwords were normalized.
        let before = hasher
            .hash_secret(decomposed.to_owned().into())
            .await
            .unwrap();
        assert!(
            hasher
                .verify(&typed(decomposed), Some(&before))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&typed("cafe creme tous les jours"), Some(&before))
                .await
                .unwrap()
        );
    }

    #[test]
    fn debug_hides_the_hash() {
        assert_eq!(
            format!("{:?}", PasswordHash("$argon2id$x".into())),
            "PasswordHash(..)"
        );
    }
}
