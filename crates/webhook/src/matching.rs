//! Which webhooks a request reaches: `rules`, `namespaceSelector`, `objectSelector`, and the
//! admissionregistration kinds that no webhook may intercept (so a broken webhook can always
//! be removed).

use std::collections::BTreeMap;

use krust_machinery::selector::Selector;
use serde_json::Value;

use crate::config::{Rule, Webhook};
use crate::{Attributes, Operation, WebhookError};

const ADMISSION_GROUP: &str = "admissionregistration.k8s.io";

/// Kinds of admissionregistration.k8s.io that webhooks never see (upstream's list).
const EXEMPT_KINDS: [&str; 6] = [
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
];

/// True for the configuration objects themselves, which bypass all webhooks.
pub fn is_exempt(attrs: &Attributes) -> bool {
    attrs.group == ADMISSION_GROUP && EXEMPT_KINDS.contains(&attrs.kind.as_str())
}

/// Whether `hook` is to be called for `attrs`. Selector errors count only when a rule
/// matches, as upstream (an unrelated broken webhook must not fail the request).
pub fn should_call(hook: &Webhook, attrs: &Attributes) -> Result<bool, WebhookError> {
    let ns = namespace_selector_matches(hook.namespace_selector.as_ref(), attrs);
    if matches!(ns, Ok(false)) {
        return Ok(false);
    }
    let obj = object_selector_matches(hook.object_selector.as_ref(), attrs);
    if matches!(obj, Ok(false)) {
        return Ok(false);
    }
    if !hook.rules.iter().any(|r| rule_matches(r, attrs)) {
        return Ok(false);
    }
    ns.and(obj)
        .map_err(|message| WebhookError::BadResponse { message })
}

fn is_namespace_resource(attrs: &Attributes) -> bool {
    attrs.group.is_empty() && attrs.version == "v1" && attrs.resource == "namespaces"
}

fn namespace_name(attrs: &Attributes) -> &str {
    attrs.namespace.as_deref().unwrap_or_default()
}

/// One rule against the request: scope, operation, group, version, resource/subresource.
pub fn rule_matches(rule: &Rule, attrs: &Attributes) -> bool {
    scope_matches(rule.scope.as_deref(), attrs)
        && operation_matches(&rule.operations, attrs.operation)
        && exact_or_wildcard(&rule.api_groups, &attrs.group)
        && exact_or_wildcard(&rule.api_versions, &attrs.version)
        && resource_matches(&rule.resources, &attrs.resource, &attrs.subresource)
}

/// Namespace objects are cluster-scoped even though their requests carry a namespace.
fn scope_matches(scope: Option<&str>, attrs: &Attributes) -> bool {
    let namespaced = !attrs.cluster_scoped && !namespace_name(attrs).is_empty();
    match scope {
        None | Some("*") => true,
        Some("Namespaced") => !is_namespace_resource(attrs) && namespaced,
        Some("Cluster") => is_namespace_resource(attrs) || !namespaced,
        Some(_) => false,
    }
}

fn operation_matches(ops: &[String], op: Operation) -> bool {
    ops.iter().any(|o| o == "*" || o == op.as_str())
}

fn exact_or_wildcard(items: &[String], requested: &str) -> bool {
    items.iter().any(|i| i == "*" || i == requested)
}

/// `pods` matches only the resource itself, `pods/*` all its subresources, `*/status` the
/// status of every resource, `*` every resource without subresource.
fn resource_matches(resources: &[String], resource: &str, subresource: &str) -> bool {
    resources.iter().any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r.as_str(), ""));
        (res == "*" || res == resource) && (sub == "*" || sub == subresource)
    })
}

fn parse_selector(selector: Option<&Value>) -> Result<Option<Selector>, String> {
    let Some(sel) = selector else {
        return Ok(None);
    };
    let parsed = Selector::from_label_selector(sel)?;
    Ok((!parsed.is_everything()).then_some(parsed))
}

/// Cluster-scoped objects other than namespaces always match; a Namespace being created or
/// updated is matched by its own new labels.
pub fn namespace_selector_matches(
    selector: Option<&Value>,
    attrs: &Attributes,
) -> Result<bool, String> {
    let cluster_scoped = attrs.cluster_scoped || namespace_name(attrs).is_empty();
    if cluster_scoped && attrs.resource != "namespaces" {
        return Ok(true);
    }
    let Some(selector) = parse_selector(selector)? else {
        return Ok(true);
    };
    let own_labels = attrs.resource == "namespaces"
        && attrs.subresource.is_empty()
        && matches!(attrs.operation, Operation::Create | Operation::Update);
    if own_labels {
        if let Some(obj) = &attrs.object {
            return Ok(selector.matches_object(obj));
        }
    }
    let empty = BTreeMap::new();
    Ok(selector.matches(attrs.namespace_labels.as_ref().unwrap_or(&empty)))
}

/// Matches when the new or the old object carries matching labels; no object, no match.
pub fn object_selector_matches(
    selector: Option<&Value>,
    attrs: &Attributes,
) -> Result<bool, String> {
    let Some(selector) = parse_selector(selector)? else {
        return Ok(true);
    };
    let hit = |o: &Option<Value>| o.as_ref().is_some_and(|o| selector.matches_object(o));
    Ok(hit(&attrs.object) || hit(&attrs.old_object))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "matching_tests.rs"]
mod tests;
