use crate::config::ServiceUrl;
use crate::domain::{OtpCode, PhoneNumber};
use anyhow::Context as _;
use serde::Serialize;
use std::time::Duration;

/// Where SMS messages go.
#[derive(Debug, Clone)]
pub enum SmsGateway {
    /// Development: the message is written to the log (target `sms`).
    Log,
    /// POSTs `{"to", "text", "code"}` as JSON; any 2xx is a successful hand-over.
    Webhook {
        client: reqwest::Client,
        url: ServiceUrl,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("the SMS could not be handed to the gateway: {0:#}")]
pub struct DeliveryError(anyhow::Error);

#[derive(Serialize)]
struct WebhookMessage<'a> {
    to: &'a str,
    text: &'a str,
    code: &'a str,
}

impl SmsGateway {
    pub fn webhook(url: ServiceUrl, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("building the SMS webhook client")?;
        Ok(Self::Webhook { client, url })
    }

    pub async fn send_code(&self, to: &PhoneNumber, code: &OtpCode) -> Result<(), DeliveryError> {
        let text = format!(
            "Your sign-in code is {}. Never share it with anyone.",
            code.expose()
        );
        match self {
            SmsGateway::Log => {
                tracing::info!(target: "sms", to = to.as_str(), "{text}");
                Ok(())
            }
            SmsGateway::Webhook { client, url } => {
                let message = WebhookMessage {
                    to: to.as_str(),
                    text: &text,
                    code: code.expose(),
                };
                client
                    .post(url.expose().clone())
                    .json(&message)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map(drop)
                    .map_err(|e| DeliveryError(anyhow::Error::new(e.without_url())))
            }
        }
    }
}
