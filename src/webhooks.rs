//! Webhooks: a run may name a callback URL; when it ends, the store commits a delivery to its
//! outbox in the same transaction as the run's final state, and every process that has a
//! webhook secret delivers what is due: signed as Standard Webhooks sign (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`),
//! retried with backoff under the same id, so a receiver that keeps the ids it has seen sees one
//! logical delivery however often a send is repeated. A process that dies between the commit and
//! the send loses nothing: the delivery is still in the outbox.
//!
//! Callback URLs are checked as the sandbox checks a tool's HTTP requests: the host must be one
//! the server allows (`--webhook-allow`), every address it resolves to is checked (loopback,
//! private and link-local ones only when the allowance names the IP itself), and the connection
//! goes to a checked address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use reagent_sandbox::{HostGrant, allowed_addresses};
use reagent_store::{RunStore, Webhook};
use tokio::sync::watch;

/// How long a process holds a due delivery while it sends it (longer than a send may take);
/// another process may send it after that, as after this one's death.
const SENDING: Duration = Duration::from_secs(15);

/// How long one send may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends after the first before a delivery is given up, spaced by `backoff`: about a day.
const ATTEMPTS: u32 = 16;

/// How often an idle deliverer looks at the outbox.
const POLL: Duration = Duration::from_millis(500);

/// Where callbacks may go, and the secret deliveries are signed with.
#[derive(Clone)]
pub struct Webhooks {
    allowed: Arc<[HostGrant]>,
    secret: Option<Arc<[u8]>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "this server sends no webhooks: start it with REAGENT_WEBHOOK_SECRET set and --webhook-allow naming the hosts callbacks may go to"
    )]
    Off,
    #[error("{0}")]
    Refused(String),
}

impl Webhooks {
    /// `allowed`: hosts as a tool's network grant names them (`host`, `host:port`,
    /// `scheme://host:port`); `secret`: Standard Webhooks' `whsec_<base64>`.
    pub fn new(allowed: &[String], secret: Option<&str>) -> Result<Self, String> {
        let allowed = allowed
            .iter()
            .map(|host| HostGrant::parse(host).map_err(|e| format!("--webhook-allow {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let secret = secret
            .map(|secret| {
                let encoded = secret.strip_prefix("whsec_").ok_or(
                    "REAGENT_WEBHOOK_SECRET must be a Standard Webhooks secret, `whsec_` then base64 (e.g. `whsec_$(openssl rand -base64 32)`)",
                )?;
                BASE64
                    .decode(encoded)
                    .ok()
                    .filter(|key| key.len() >= 24)
                    .map(Arc::<[u8]>::from)
                    .ok_or("REAGENT_WEBHOOK_SECRET: after `whsec_`, at least 24 bytes in base64")
            })
            .transpose()?;
        Ok(Webhooks { allowed: allowed.into(), secret })
    }

    /// Whether this process delivers webhooks.
    pub fn on(&self) -> bool {
        self.secret.is_some() && !self.allowed.is_empty()
    }

    /// Checks a run's callback URL before the run is recorded; the addresses it may reach.
    pub async fn check(&self, url: &str) -> Result<Vec<SocketAddr>, WebhookError> {
        if !self.on() {
            return Err(WebhookError::Off);
        }
        allowed_addresses(&self.allowed, url).await.map_err(WebhookError::Refused)
    }

    /// The Standard Webhooks signature of a delivery: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> Option<String> {
        let key = self.secret.as_ref()?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        Some(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
    }

    /// Delivers what the outbox holds that is due, until `stop` turns true.
    pub async fn deliver(&self, store: Arc<dyn RunStore>, mut stop: watch::Receiver<bool>) {
        if !self.on() {
            return;
        }
        let mut failing = false;
        while !*stop.borrow() {
            let due = match store.due_webhooks(16, SENDING).await {
                Ok(due) => {
                    failing = false;
                    due
                }
                Err(error) => {
                    if !failing {
                        eprintln!("reagent: cannot read the webhook outbox (retrying): {error}");
                    }
                    failing = true;
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let sends = due.into_iter().map(|webhook| {
                let store = store.clone();
                async move {
                    crate::runs::crash::point("webhook_send");
                    let sent = self.send(&webhook).await;
                    let recorded = match sent {
                        Ok(()) => {
                            crate::runs::crash::point("webhook_delivered");
                            store.webhook_delivered(&webhook.id).await
                        }
                        Err(error) => {
                            let retry = (webhook.attempts < ATTEMPTS).then(|| backoff(webhook.attempts));
                            if retry.is_none() {
                                eprintln!(
                                    "reagent: webhook {} for run {} given up after {} sends: {error}",
                                    webhook.id,
                                    webhook.run_id,
                                    webhook.attempts + 1
                                );
                            }
                            store.webhook_failed(&webhook.id, &error, retry).await
                        }
                    };
                    if let Err(error) = recorded {
                        eprintln!("reagent: webhook {}: cannot record the send: {error}", webhook.id);
                    }
                }
            });
            futures::future::join_all(sends).await;
        }
    }

    /// One send: a 2xx answer is delivered; anything else, or no answer, is retried.
    async fn send(&self, webhook: &Webhook) -> Result<(), String> {
        // Checked again at every send: the allowance or the DNS answer may have changed.
        let addresses = self.check(&webhook.url).await.map_err(|e| e.to_string())?;
        let url = reqwest::Url::parse(&webhook.url).map_err(|e| format!("{}: {e}", webhook.url))?;
        let host = url.host_str().unwrap_or_default().to_string();
        let client = reqwest::Client::builder()
            .resolve_to_addrs(&host, &addresses)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(SEND_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let timestamp = reagent_store::now_ms() / 1000;
        let signature = self.sign(&webhook.id, timestamp, &webhook.body).ok_or("no webhook secret")?;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &webhook.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(webhook.body.clone())
            .send()
            .await
            .map_err(|e| format!("no answer from {}: {e}", webhook.url))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("{} answered {status}", webhook.url)),
        }
    }
}

/// The wait before send `attempts + 1`: 1 s, doubling, at most an hour, with up to a fifth more
/// at random so that a receiver back from an outage is not hit by every sender at once.
fn backoff(attempts: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.min(12)).min(Duration::from_secs(3600));
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    base + base.mul_f64(f64::from(byte[0]) / 255.0 / 5.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (and its reference libraries' tests).
        let webhooks = Webhooks::new(&["example.com".into()], Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let body = r#"{"test": 2432232314}"#;
        let signature = webhooks.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_bad_secret_or_host_is_refused_with_what_to_write() {
        let secret = Webhooks::new(&["example.com".into()], Some("not-whsec")).err().unwrap();
        assert!(secret.contains("whsec_"), "{secret}");
        let host = Webhooks::new(&["http://example.com/path".into()], None).err().unwrap();
        assert!(host.starts_with("--webhook-allow"), "{host}");
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert!(backoff(0) >= Duration::from_secs(1) && backoff(0) <= Duration::from_millis(1200));
        assert!(backoff(3) >= Duration::from_secs(8));
        assert!(backoff(40) <= Duration::from_secs(4320));
    }
}
