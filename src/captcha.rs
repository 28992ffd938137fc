//! Server-side reCAPTCHA verification (Google's `siteverify` protocol): a
//! form POST of secret, response token and client IP; `{"success": bool}`.

use crate::config::ServiceUrl;
use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// How long the verifier may take before we give up (and fail closed).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Recaptcha {
    client: reqwest::Client,
    verify_url: ServiceUrl,
    secret: SecretString,
    pub site_key: String,
    /// Sites a token may come from (Google's `hostname`); empty accepts any.
    hostnames: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptchaError {
    /// Missing, wrong, expired or already used.
    #[error("the reCAPTCHA answer was not accepted")]
    Failed,
    /// The verifier could not be asked; we refuse rather than let the request through.
    #[error("reCAPTCHA could not be verified right now")]
    Unavailable(#[source] anyhow::Error),
}

#[derive(Deserialize)]
struct Verdict {
    success: bool,
    hostname: Option<String>,
}

impl Recaptcha {
    pub fn new(
        site_key: String,
        secret: SecretString,
        verify_url: ServiceUrl,
        hostnames: Vec<String>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(VERIFY_TIMEOUT)
            .build()
            .context("building the reCAPTCHA client")?;
        Ok(Self {
            client,
            verify_url,
            secret,
            site_key,
            hostnames,
        })
    }

    pub async fn verify(
        &self,
        response: Option<&str>,
        remote_ip: Option<IpAddr>,
    ) -> Result<(), CaptchaError> {
        let response = response
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or(CaptchaError::Failed)?;
        let remote_ip = remote_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let form = [
            ("secret", self.secret.expose_secret()),
            ("response", response),
            ("remoteip", &remote_ip),
        ];
        let verdict: Verdict = self
            .client
            .post(self.verify_url.expose().clone())
            .form(&form)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| CaptchaError::Unavailable(e.without_url().into()))?
            .json()
            .await
            .map_err(|e| CaptchaError::Unavailable(e.without_url().into()))?;
        // A token solved on someone else's site is no proof for ours.
        let from_our_site = self.hostnames.is_empty()
            || verdict.hostname.is_some_and(|h| {
                self.hostnames
                    .iter()
                    .any(|ours| ours.eq_ignore_ascii_case(&h))
            });
        if verdict.success && from_our_site {
            Ok(())
        } else {
            Err(CaptchaError::Failed)
        }
    }
}
