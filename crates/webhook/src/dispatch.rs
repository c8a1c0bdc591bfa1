//! The dispatcher: mutating webhooks one after another with reinvocation, validating webhooks
//! all at once; failurePolicy decides whether a failed call stops the request.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use crate::client::Client;
use crate::config::{self, FailurePolicy, Webhook};
use crate::matching::{is_exempt, should_call};
use crate::review::{self, Response};
use crate::{Attributes, ServiceResolver, WebhookError};

/// Calls admission webhooks; cheap to clone (the client is shared).
#[derive(Clone)]
pub struct Dispatcher {
    client: Arc<Client>,
}

/// How one call ended badly. Upstream separates a failed call, which failurePolicy may
/// ignore, from an outcome that always stops the request.
enum CallError {
    /// The reason of an ErrCallingWebhook.
    Calling(String),
    Final(WebhookError),
}

/// Upstream's webhookReinvokeContext, for one request.
#[derive(Default)]
struct Reinvocation {
    /// IfNeeded webhooks called since the object last changed.
    invoked: BTreeSet<usize>,
    /// Webhooks to call again in the second round.
    again: BTreeSet<usize>,
    changed: bool,
}

impl Dispatcher {
    pub fn new(resolver: Arc<dyn ServiceResolver>) -> Self {
        Dispatcher {
            client: Arc::new(Client::new(resolver)),
        }
    }

    /// Runs the mutating webhooks of `configs` (MutatingWebhookConfiguration objects as JSON)
    /// that match, in order (configurations sorted by name, webhooks in order), applying each
    /// JSONPatch to `attrs.object`. Webhooks with `reinvocationPolicy: IfNeeded` that ran
    /// before a later webhook changed the object are called once more, in a second round.
    /// Returns the webhooks' warnings.
    pub async fn mutate(
        &self,
        configs: &[Value],
        attrs: &mut Attributes,
    ) -> Result<Vec<String>, WebhookError> {
        if is_exempt(attrs) {
            return Ok(Vec::new());
        }
        let hooks = config::webhooks(configs)?;
        let mut state = Reinvocation::default();
        let mut warnings = Vec::new();
        self.mutating_round(&hooks, attrs, &mut state, None, &mut warnings)
            .await?;
        if state.changed && !state.again.is_empty() {
            let again = std::mem::take(&mut state.again);
            self.mutating_round(&hooks, attrs, &mut state, Some(&again), &mut warnings)
                .await?;
        }
        Ok(dedup(warnings))
    }

    /// One pass over the mutating webhooks; `only` limits a reinvocation round to those
    /// asked for (a webhook is never called for the first time on reinvocation).
    async fn mutating_round(
        &self,
        hooks: &[Webhook],
        attrs: &mut Attributes,
        state: &mut Reinvocation,
        only: Option<&BTreeSet<usize>>,
        warnings: &mut Vec<String>,
    ) -> Result<(), WebhookError> {
        for hook in hooks {
            if !should_call(hook, attrs)? {
                continue;
            }
            if only.is_some_and(|set| !set.contains(&hook.uid)) {
                continue;
            }
            let result = self.call_mutating(hook, attrs, warnings).await;
            if matches!(result, Ok(true)) {
                state.again.append(&mut state.invoked);
                state.changed = true;
            }
            if hook.reinvoke_if_needed {
                state.invoked.insert(hook.uid);
            }
            match result {
                Ok(_) => {}
                Err(CallError::Calling(reason)) => fail_or_ignore(hook, reason)?,
                Err(CallError::Final(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Calls one mutating webhook and applies its patch; true when the object changed.
    async fn call_mutating(
        &self,
        hook: &Webhook,
        attrs: &mut Attributes,
        warnings: &mut Vec<String>,
    ) -> Result<bool, CallError> {
        let resp = self.call(hook, attrs, true).await?;
        warnings.extend(resp.warnings.iter().cloned());
        if !resp.allowed {
            return Err(CallError::Final(review::denial(
                &hook.name,
                resp.status.as_ref(),
            )));
        }
        let Some((patch_type, bytes)) = resp.patch else {
            return Ok(false);
        };
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Calling(format!(
                "received undecodable patch in webhook response: {e}"
            ))
        })?;
        if patch.0.is_empty() {
            return Ok(false);
        }
        let Some(object) = attrs.object.as_mut() else {
            return Err(CallError::Final(WebhookError::BadResponse {
                message: format!(
                    "admission webhook {:?} attempted to modify the object, which is not supported for this operation",
                    hook.name
                ),
            }));
        };
        if patch_type != "JSONPatch" {
            return Err(CallError::Calling(format!(
                "unsupported patch type {patch_type:?}"
            )));
        }
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch.0).map_err(|e| {
            CallError::Final(WebhookError::BadResponse {
                message: e.to_string(),
            })
        })?;
        let changed = patched != *object;
        *object = patched;
        Ok(changed)
    }

    /// Runs the matching validating webhooks of `configs` concurrently, as upstream does;
    /// any denial (the first in webhook order) fails the request. Returns the warnings.
    pub async fn validate(
        &self,
        configs: &[Value],
        attrs: &Attributes,
    ) -> Result<Vec<String>, WebhookError> {
        if is_exempt(attrs) {
            return Ok(Vec::new());
        }
        let hooks = config::webhooks(configs)?;
        let mut selected = Vec::new();
        for hook in &hooks {
            if should_call(hook, attrs)? {
                selected.push(hook);
            }
        }
        let calls = selected.iter().map(|h| self.call(h, attrs, false));
        let results = futures::future::join_all(calls).await;
        let mut warnings = Vec::new();
        let mut first_error = None;
        for (hook, result) in selected.into_iter().zip(results) {
            let outcome = match result {
                Ok(resp) => {
                    warnings.extend(resp.warnings);
                    if resp.allowed {
                        Ok(())
                    } else {
                        Err(review::denial(&hook.name, resp.status.as_ref()))
                    }
                }
                Err(CallError::Calling(reason)) => fail_or_ignore(hook, reason),
                Err(CallError::Final(e)) => Err(e),
            };
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(dedup(warnings)),
        }
    }

    /// What both kinds share: the dry-run check, the review version, the call itself and
    /// the checks on the answer.
    async fn call(
        &self,
        hook: &Webhook,
        attrs: &Attributes,
        mutating: bool,
    ) -> Result<Response, CallError> {
        if attrs.dry_run {
            check_dry_run(hook)?;
        }
        if !hook.review_versions.iter().any(|v| v == "v1") {
            return Err(CallError::Calling(
                "could not create admission objects: webhook does not accept known AdmissionReview versions (v1)"
                    .into(),
            ));
        }
        if hook.has_match_conditions {
            tracing::debug!(webhook = %hook.name, "matchConditions are not evaluated; calling the webhook");
        }
        let uid = uuid::Uuid::new_v4().to_string();
        let body = serde_json::to_vec(&review::request(attrs, &uid))
            .map_err(|e| CallError::Calling(format!("could not create admission objects: {e}")))?;
        let answer = self
            .client
            .post(hook, body)
            .await
            .map_err(CallError::Calling)?;
        review::verify(&uid, mutating, &answer)
            .map_err(|e| CallError::Calling(format!("received invalid webhook response: {e}")))
    }
}

/// A webhook with side effects must not see a dry run; upstream refuses the request.
fn check_dry_run(hook: &Webhook) -> Result<(), CallError> {
    match hook.side_effects.as_deref() {
        None => Err(CallError::Calling("Webhook SideEffects is nil".into())),
        Some("None" | "NoneOnDryRun") => Ok(()),
        Some(_) => Err(CallError::Final(WebhookError::Denied {
            code: 400,
            reason: "BadRequest".into(),
            message: format!("admission webhook {:?} does not support dry run", hook.name),
        })),
    }
}

/// failurePolicy: Ignore logs the failure and lets the request go on; Fail stops it.
fn fail_or_ignore(hook: &Webhook, reason: String) -> Result<(), WebhookError> {
    let message = format!("failed calling webhook {:?}: {reason}", hook.name);
    match hook.failure_policy {
        FailurePolicy::Ignore => {
            tracing::warn!(webhook = %hook.name, configuration = %hook.configuration, "failing open: {message}");
            Ok(())
        }
        FailurePolicy::Fail => {
            tracing::warn!(webhook = %hook.name, configuration = %hook.configuration, "failing closed: {message}");
            Err(WebhookError::Failed { message })
        }
    }
}

/// Warnings once each, in the order first given (as upstream's recorder keeps them).
fn dedup(warnings: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    warnings
        .into_iter()
        .filter(|w| seen.insert(w.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The API server awaits these inside spawned tasks, so they must stay Send.
    #[test]
    fn dispatch_futures_are_send() {
        struct Nothing;
        #[async_trait::async_trait]
        impl ServiceResolver for Nothing {
            async fn resolve(
                &self,
                _: &str,
                _: &str,
                _: u16,
            ) -> Result<std::net::SocketAddr, String> {
                Err("none".into())
            }
        }
        let d = Dispatcher::new(Arc::new(Nothing));
        let configs: Vec<Value> = Vec::new();
        let mut attrs = Attributes {
            operation: crate::Operation::Create,
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
            resource: "pods".into(),
            subresource: String::new(),
            name: String::new(),
            namespace: None,
            object: None,
            old_object: None,
            options: None,
            dry_run: false,
            user: crate::UserInfo::default(),
            namespace_labels: None,
            cluster_scoped: false,
        };
        assert_send(&d.validate(&configs, &attrs));
        assert_send(&d.mutate(&configs, &mut attrs));
    }
}
