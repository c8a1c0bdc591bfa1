//! Image pulls as the kubelet makes them: the pull policy, registry credentials from the pod's
//! `imagePullSecrets` (`kubernetes.io/dockerconfigjson` and the older `kubernetes.io/dockercfg`),
//! and the back-off between failed pulls that shows as `ImagePullBackOff`.
//!
//! Credentials match an image by registry host and repository path prefix, the most specific
//! key first (upstream's keyring order); each matching one is tried, then an anonymous pull.
//! The `AuthConfig` handed to CRI carries no server address: containerd 1.6 compares it with
//! the endpoint's URL host and would drop a bare `host:port` key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::Api;
use serde_json::Value;

use crate::images;
use crate::runtime::{api, Runtime};

/// Upstream's image back-off: 10 s, doubling, at most 5 minutes.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The registry host and repository of an image reference, Docker Hub's names filled in:
/// `busybox` -> (`docker.io`, `library/busybox`).
pub fn registry_and_repository(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    // A tag is the part after the last ':' when no '/' follows it.
    let name = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => n,
        _ => name,
    };
    match name.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            let host = if host == "index.docker.io" {
                "docker.io"
            } else {
                host
            };
            (host.to_string(), rest.to_string())
        }
        Some(_) => ("docker.io".to_string(), name.to_string()),
        None => ("docker.io".to_string(), format!("library/{name}")),
    }
}

/// A docker config key (`https://index.docker.io/v1/`, `127.0.0.1:5000`,
/// `http://registry.local/v2/team`) as `host[/path]`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    let path = path.strip_prefix("v2/").unwrap_or(path);
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

/// One credential from a secret's docker config entry.
fn auth_of(entry: &Value) -> Option<api::AuthConfig> {
    let mut username = entry["username"].as_str().unwrap_or_default().to_string();
    let mut password = entry["password"].as_str().unwrap_or_default().to_string();
    let auth = entry["auth"].as_str().unwrap_or_default().to_string();
    if username.is_empty() && !auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.as_bytes())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        username = u.to_string();
        password = p.to_string();
    }
    let identity_token = entry["identitytoken"].as_str().unwrap_or_default();
    if username.is_empty() && identity_token.is_empty() {
        return None;
    }
    Some(api::AuthConfig {
        username,
        password,
        identity_token: identity_token.to_string(),
        ..Default::default()
    })
}

/// The docker config entries of a pull secret: key -> entry.
fn entries(secret: &Secret) -> Vec<(String, Value)> {
    let data = secret.data.clone().unwrap_or_default();
    let (doc, nested) = match secret.type_.as_deref() {
        Some("kubernetes.io/dockercfg") => (data.get(".dockercfg"), false),
        _ => (data.get(".dockerconfigjson"), true),
    };
    let Some(doc) = doc.and_then(|b| serde_json::from_slice::<Value>(&b.0).ok()) else {
        return Vec::new();
    };
    let map = if nested { &doc["auths"] } else { &doc };
    map.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The credentials of `secrets` that apply to `image`, most specific first.
pub fn credentials(secrets: &[Secret], image: &str) -> Vec<api::AuthConfig> {
    let (host, repo) = registry_and_repository(image);
    let full = format!("{host}/{repo}");
    let mut found: Vec<(usize, api::AuthConfig)> = Vec::new();
    for secret in secrets {
        for (key, entry) in entries(secret) {
            let key = normalize_key(&key);
            let applies = full == key || full.starts_with(&format!("{key}/"));
            if let Some(auth) = auth_of(&entry).filter(|_| applies) {
                found.push((key.len(), auth));
            }
        }
    }
    // Stable: among equally specific keys the secrets' order holds.
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, a)| a).collect()
}

/// The pod's pull secrets that exist (missing ones are skipped, as upstream warns and goes on).
pub async fn pull_secrets(client: &kube::Client, pod: &Pod) -> Vec<Secret> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for r in refs {
        let name = r.name;
        if name.is_empty() {
            continue;
        }
        match api.get_opt(&name).await {
            Ok(Some(s)) => out.push(s),
            Ok(None) => tracing::warn!(secret = %name, "image pull secret not found"),
            Err(e) => tracing::warn!(secret = %name, error = %e, "reading image pull secret"),
        }
    }
    out
}

/// Failed pulls per image, so that retries wait as upstream's do.
#[derive(Default)]
pub struct PullBackoff {
    /// image -> (last failure, back-off, its error).
    failed: HashMap<String, (Instant, Duration, String)>,
}

/// How long after a failed pull the status keeps saying ErrImagePull (with the error) before
/// it says ImagePullBackOff, whatever wakes the pod's worker meanwhile.
pub const PULL_ERROR_SHOWN: Duration = Duration::from_secs(5);

impl PullBackoff {
    /// The waiting reason and message while a pull of `image` must wait.
    pub fn reason(&self, image: &str, now: Instant) -> Option<(String, String)> {
        let (at, delay, error) = self.failed.get(image)?;
        if now >= *at + *delay {
            return None;
        }
        Some(if now < *at + PULL_ERROR_SHOWN {
            ("ErrImagePull".to_string(), error.clone())
        } else {
            (
                "ImagePullBackOff".to_string(),
                format!("Back-off pulling image \"{image}\""),
            )
        })
    }

    /// How long until the earliest back-off ends (`None` when nothing waits).
    pub fn next_retry(&self, now: Instant) -> Option<Duration> {
        self.failed
            .values()
            .map(|(at, delay, _)| (*at + *delay).saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .min()
    }

    fn failed(&mut self, image: &str, now: Instant, error: String) {
        let delay = match self.failed.get(image) {
            Some((_, d, _)) => (*d * 2).min(BACKOFF_MAX),
            None => BACKOFF_START,
        };
        self.failed.insert(image.to_string(), (now, delay, error));
    }

    fn succeeded(&mut self, image: &str) {
        self.failed.remove(image);
    }
}

/// Upstream's default: Always for `:latest` or no tag, IfNotPresent otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn is_preloaded(image: &str) -> bool {
    let norm = crate::runtime::fake::normalize_image(image);
    images::PRELOADED.contains(&norm.as_str())
}

/// Makes the container's image present per its pull policy, or says why not: the waiting
/// reason and message (`ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`).
pub async fn ensure_image(
    rt: &dyn Runtime,
    client: &kube::Client,
    pod: &Pod,
    c: &Container,
    backoff: &mut PullBackoff,
) -> Result<(), (String, String)> {
    let image = c.image.clone().unwrap_or_default();
    if image.is_empty() {
        return Err(("InvalidImageName".to_string(), "no image".to_string()));
    }
    let present = rt
        .image_status(&image)
        .await
        .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?
        .is_some();
    let policy = c
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| default_pull_policy(&image).to_string());
    match policy.as_str() {
        "Never" if present => return Ok(()),
        "Never" => {
            return Err((
                "ErrImageNeverPull".to_string(),
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            ))
        }
        "IfNotPresent" if present => return Ok(()),
        // Images the agent imported itself have no registry to be pulled from.
        "Always" if present && is_preloaded(&image) => return Ok(()),
        _ => {}
    }
    let now = Instant::now();
    if let Some(waiting) = backoff.reason(&image, now) {
        return Err(waiting);
    }
    let secrets = pull_secrets(client, pod).await;
    let mut attempts: Vec<Option<api::AuthConfig>> = credentials(&secrets, &image)
        .into_iter()
        .map(Some)
        .collect();
    attempts.push(None);
    let mut last = None;
    for auth in attempts {
        match rt.pull_image(&image, auth, None).await {
            Ok(_) => {
                backoff.succeeded(&image);
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    let message = last.map(|e| e.to_string()).unwrap_or_default();
    backoff.failed(&image, now, message.clone());
    if present {
        tracing::warn!(image, error = %message, "pull failed; using the image present on the node");
        return Ok(());
    }
    Err(("ErrImagePull".to_string(), message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(type_: &str, key: &str, doc: Value) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(doc.to_string().into_bytes()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn registries_and_repositories() {
        let r = |i: &str| registry_and_repository(i);
        assert_eq!(r("busybox"), ("docker.io".into(), "library/busybox".into()));
        assert_eq!(
            r("busybox:1.36"),
            ("docker.io".into(), "library/busybox".into())
        );
        assert_eq!(r("team/app:v1"), ("docker.io".into(), "team/app".into()));
        assert_eq!(
            r("127.0.0.1:5000/test/busybox:v1"),
            ("127.0.0.1:5000".into(), "test/busybox".into())
        );
        assert_eq!(
            r("127.0.0.1:5000/busybox@sha256:abc"),
            ("127.0.0.1:5000".into(), "busybox".into())
        );
        assert_eq!(r("localhost/x"), ("localhost".into(), "x".into()));
    }

    #[test]
    fn keys_normalise() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalize_key("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(normalize_key("registry.local/team/"), "registry.local/team");
    }

    #[test]
    fn credentials_match_by_host_and_path_most_specific_first() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:b-pass");
        let s = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            serde_json::json!({"auths": {
                "127.0.0.1:5000": {"username": "alice", "password": "a-pass"},
                "127.0.0.1:5000/team": {"auth": auth},
                "other.example:5000": {"username": "eve", "password": "e"},
            }}),
        );
        let got = credentials(std::slice::from_ref(&s), "127.0.0.1:5000/team/app:v1");
        let users: Vec<(&str, &str)> = got
            .iter()
            .map(|a| (a.username.as_str(), a.password.as_str()))
            .collect();
        assert_eq!(users, [("bob", "b-pass"), ("alice", "a-pass")]);
        assert!(got.iter().all(|a| a.server_address.is_empty()));
        let got = credentials(std::slice::from_ref(&s), "127.0.0.1:5000/app");
        assert_eq!(got.len(), 1);
        assert!(credentials(&[s], "127.0.0.1:5001/app").is_empty());
    }

    #[test]
    fn legacy_dockercfg_and_docker_hub() {
        let s = secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            serde_json::json!({"https://index.docker.io/v1/": {"username": "u", "password": "p"}}),
        );
        assert_eq!(credentials(std::slice::from_ref(&s), "busybox").len(), 1);
        assert!(credentials(&[s], "quay.io/x").is_empty());
        let broken = Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(b"not json".to_vec()),
            )])),
            ..Default::default()
        };
        assert!(credentials(&[broken], "busybox").is_empty());
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let mut b = PullBackoff::default();
        let t0 = Instant::now();
        assert!(b.reason("x", t0).is_none());
        b.failed("x", t0, "401".into());
        let reason = |b: &PullBackoff, t| b.reason("x", t).map(|r| r.0);
        assert_eq!(
            reason(&b, t0 + Duration::from_secs(4)).as_deref(),
            Some("ErrImagePull")
        );
        assert_eq!(
            b.reason("x", t0).map(|r| r.1).as_deref(),
            Some("401"),
            "the pull's error shows first"
        );
        assert_eq!(
            reason(&b, t0 + Duration::from_secs(9)).as_deref(),
            Some("ImagePullBackOff")
        );
        assert!(b.reason("x", t0 + Duration::from_secs(9)).is_some());
        assert!(b.reason("x", t0 + Duration::from_secs(10)).is_none());
        assert_eq!(reason(&b, t0 + Duration::from_secs(10)), None);
        let t1 = t0 + Duration::from_secs(10);
        b.failed("x", t1, "401".into());
        assert!(b.reason("x", t1 + Duration::from_secs(19)).is_some());
        assert!(b.reason("y", t1).is_none());
        assert_eq!(b.next_retry(t1), Some(Duration::from_secs(20)));
        for _ in 0..10 {
            b.failed("x", t1, "401".into());
        }
        assert!(b.reason("x", t1 + BACKOFF_MAX).is_none());
        b.succeeded("x");
        assert!(b.reason("x", t1).is_none());
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(default_pull_policy("app@sha256:abc"), "IfNotPresent");
        assert!(is_preloaded("busybox"));
        assert!(is_preloaded("docker.io/library/busybox:latest"));
        assert!(!is_preloaded("busybox:1.36"));
    }
}
