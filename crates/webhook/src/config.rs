//! Webhook configurations read from their JSON objects, with the defaults upstream's v1
//! defaulting applies (failurePolicy Fail, timeoutSeconds 10, port 443, empty selectors).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::WebhookError;

/// One webhook of a configuration, ready to match and call.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// Name of the configuration that holds it.
    pub configuration: String,
    pub name: String,
    /// Identity for reinvocation: position among all webhooks of the call.
    pub uid: usize,
    pub client: ClientConfig,
    pub rules: Vec<Rule>,
    pub failure_policy: FailurePolicy,
    /// `sideEffects` as written; None when absent (only v1beta1 allowed that).
    pub side_effects: Option<String>,
    pub timeout: Duration,
    /// metav1.LabelSelector JSON; absent means everything.
    pub namespace_selector: Option<Value>,
    pub object_selector: Option<Value>,
    pub review_versions: Vec<String>,
    /// `reinvocationPolicy: IfNeeded` (mutating only).
    pub reinvoke_if_needed: bool,
    /// `matchConditions` are present; they are not evaluated (see the crate doc).
    pub has_match_conditions: bool,
}

/// Where to send the AdmissionReview.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    pub url: Option<String>,
    pub service: Option<ServiceRef>,
    /// Base64 of PEM certificates, as in the JSON object.
    pub ca_bundle: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceRef {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    pub path: Option<String>,
    pub port: Option<u16>,
}

/// A RuleWithOperations.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub operations: Vec<String>,
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub api_versions: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    pub scope: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

/// The JSON shape of one webhook, before defaults.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawWebhook {
    #[serde(default)]
    name: String,
    #[serde(default)]
    client_config: ClientConfig,
    #[serde(default)]
    rules: Vec<Rule>,
    failure_policy: Option<String>,
    side_effects: Option<String>,
    timeout_seconds: Option<i64>,
    namespace_selector: Option<Value>,
    object_selector: Option<Value>,
    #[serde(default)]
    admission_review_versions: Vec<String>,
    reinvocation_policy: Option<String>,
    #[serde(default)]
    match_conditions: Vec<Value>,
}

/// Upstream's default and ceiling for `timeoutSeconds`.
const DEFAULT_TIMEOUT_SECONDS: i64 = 10;
const MAX_TIMEOUT_SECONDS: i64 = 30;

/// All webhooks of `configs`, configurations sorted by name (as upstream's hook source
/// does), webhooks in their written order.
pub fn webhooks(configs: &[Value]) -> Result<Vec<Webhook>, WebhookError> {
    let mut named: Vec<(&str, &Value)> = configs
        .iter()
        .map(|c| {
            let name = c
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            (name, c)
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (config_name, config) in named {
        let hooks = config.get("webhooks").and_then(Value::as_array);
        for raw in hooks.into_iter().flatten() {
            let raw: RawWebhook =
                serde_json::from_value(raw.clone()).map_err(|e| WebhookError::BadResponse {
                    message: format!("invalid webhook configuration {config_name:?}: {e}"),
                })?;
            out.push(from_raw(config_name, out.len(), raw));
        }
    }
    Ok(out)
}

fn from_raw(configuration: &str, uid: usize, raw: RawWebhook) -> Webhook {
    let failure_policy = match raw.failure_policy.as_deref() {
        Some("Ignore") => FailurePolicy::Ignore,
        _ => FailurePolicy::Fail,
    };
    let seconds = raw
        .timeout_seconds
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
        .clamp(1, MAX_TIMEOUT_SECONDS);
    Webhook {
        configuration: configuration.to_string(),
        name: raw.name,
        uid,
        client: raw.client_config,
        rules: raw.rules,
        failure_policy,
        side_effects: raw.side_effects,
        timeout: Duration::from_secs(seconds.unsigned_abs()),
        namespace_selector: raw.namespace_selector.filter(|v| !v.is_null()),
        object_selector: raw.object_selector.filter(|v| !v.is_null()),
        review_versions: raw.admission_review_versions,
        reinvoke_if_needed: raw.reinvocation_policy.as_deref() == Some("IfNeeded"),
        has_match_conditions: !raw.match_conditions.is_empty(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_configurations_and_applies_defaults() {
        let configs = vec![
            json!({"metadata": {"name": "b"}, "webhooks": [{"name": "b1"}]}),
            json!({"metadata": {"name": "a"}, "webhooks": [
                {"name": "a1", "timeoutSeconds": 99, "failurePolicy": "Ignore"},
                {"name": "a2", "reinvocationPolicy": "IfNeeded",
                 "clientConfig": {"service": {"namespace": "ns", "name": "s"}}}
            ]}),
        ];
        let hooks = webhooks(&configs).unwrap();
        let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a1", "a2", "b1"]);
        assert_eq!(hooks[0].timeout, Duration::from_secs(30));
        assert_eq!(hooks[0].failure_policy, FailurePolicy::Ignore);
        assert_eq!(hooks[2].timeout, Duration::from_secs(10));
        assert_eq!(hooks[2].failure_policy, FailurePolicy::Fail);
        assert!(hooks[1].reinvoke_if_needed);
        assert_eq!(hooks.iter().map(|h| h.uid).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn a_malformed_webhook_is_an_error() {
        let configs = vec![json!({"metadata": {"name": "x"}, "webhooks": [{"rules": 3}]})];
        assert!(matches!(
            webhooks(&configs),
            Err(WebhookError::BadResponse { .. })
        ));
    }
}
