//! Renewal: the client certificate is renewed with the node's current identity, and the
//! serving certificate requested (first) and renewed, each at a jittered 70-90 % of its
//! lifetime, as the kubelet's certificate manager. Failures are retried with backoff; the
//! old certificate serves until the new one is there.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::csr::{self, Request};
use super::NodeCredentials;
use krust_machinery::object::now_unix as now;

/// How long one renewal waits for its certificate.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the serving certificate must name.
#[derive(Clone, Debug)]
pub struct ServingNames {
    pub ips: Vec<IpAddr>,
    pub dns_names: Vec<String>,
}

fn jitter() -> f64 {
    // Enough spread for a fleet renewing together; not a security property.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// Keeps both certificates fresh until `shutdown` resolves.
pub async fn run(
    creds: Arc<NodeCredentials>,
    serving: ServingNames,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let client_jitter = jitter();
    let serving_jitter = jitter();
    let mut backoff = MIN_BACKOFF;
    loop {
        let now = now();
        let client_due = creds.client_cert.issued().renew_at(client_jitter);
        let serving_due = if creds.serving_is_issued() {
            creds.serving_cert.issued().renew_at(serving_jitter)
        } else {
            now
        };
        let next = client_due.min(serving_due);
        if next > now {
            let wait = Duration::from_secs((next - now) as u64);
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        let result = if client_due <= now {
            renew_client(&creds).await
        } else {
            renew_serving(&creds, &serving).await
        };
        match result {
            Ok(()) => backoff = MIN_BACKOFF,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "certificate renewal failed");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn renew_client(creds: &NodeCredentials) -> Result<(), super::CredentialsError> {
    let req = Request::node_client(&creds.node_name);
    let issued = csr::request(&creds.client(), &req, REQUEST_TIMEOUT).await?;
    creds.client_cert.replace(issued)?;
    creds.save()?;
    tracing::info!("client certificate renewed");
    Ok(())
}

async fn renew_serving(
    creds: &NodeCredentials,
    names: &ServingNames,
) -> Result<(), super::CredentialsError> {
    let req = Request::node_serving(&creds.node_name, names.ips.clone(), names.dns_names.clone());
    let issued = csr::request(&creds.client(), &req, REQUEST_TIMEOUT).await?;
    creds.serving_cert.replace(issued)?;
    creds.save()?;
    tracing::info!("serving certificate issued");
    Ok(())
}
