//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): in-process CEL validation
//! of requests, as upstream's `admission/plugin/policy/validating` does it.
//!
//! The API server hands [`Policies::validate`] the current policy and binding objects (as
//! JSON) with the request's [`Attributes`]; params and namespaces come through a
//! [`PolicySource`]. Each policy compiles once per object version (see [`Policies`]).
//!
//! - `compile`: the policy and binding objects read from JSON; CEL compiled once.
//! - `eval`: the CEL variables and one (policy, binding, param) evaluation.
//! - `validation`: [`validate_policy`] and [`validate_binding`], the checks on create/update.
//!
//! Not implemented: the `authorizer` variable (an expression naming it fails to evaluate),
//! CEL type checking (the `cel` crate only parses: a type error shows when evaluated, and
//! `status.typeChecking` is never written), cost budgets, and `matchPolicy: Equivalent`
//! (matched as `Exact`, as for webhooks).

mod compile;
mod eval;
mod validation;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use cel::Context;
use krust_machinery::selector::Selector;
use serde_json::{json, Value};

use crate::config::FailurePolicy;
use crate::matching::is_exempt;
use crate::Attributes;
use compile::{Binding, BindingSpec, Compiled};

pub use validation::{validate_binding, validate_policy};

/// Where params and namespace objects come from (the API server implements it over its cache).
pub trait PolicySource {
    /// Objects of `api_version`/`kind` (the paramKind), in `namespace` (None = cluster-scoped or all), as JSON.
    fn params(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value>;
    /// Whether the paramKind is namespaced; None when the server does not serve it.
    fn param_namespaced(&self, api_version: &str, kind: &str) -> Option<bool>;
    /// The Namespace object of the request, if any (for `namespaceObject`).
    fn namespace(&self, name: &str) -> Option<Value>;
}

/// What admitted requests carry back: warnings for the response headers and audit
/// annotations for the audit event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyOutcome {
    pub warnings: Vec<String>,
    pub audit_annotations: Vec<(String, String)>,
}

/// Why policies refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A validation with a Deny action failed, or an expression or configuration could not
    /// be evaluated under failurePolicy Fail (upstream denies those too, with 422 Invalid).
    /// `message` is `ValidatingAdmissionPolicy '<p>' with binding '<b>' denied request: ...`;
    /// the server prefixes it with `<resource> "<name>" is forbidden: `.
    #[error("{message}")]
    Denied {
        code: u16,
        reason: String,
        message: String,
    },
    /// A policy that cannot be evaluated under failurePolicy Fail and is not reported as a
    /// denial upstream; answer with 500. Not produced at present: kept for the API server's
    /// mapping to be complete.
    #[error("{message}")]
    Failed { message: String },
}

/// The compiled policies, keyed by name; an entry is replaced when the object's version
/// (uid, resourceVersion, generation) changes, so a policy compiles once per version.
#[derive(Default)]
pub struct Policies {
    cache: RwLock<HashMap<String, Arc<Compiled>>>,
}

/// A denial waiting for the first one to be reported.
struct Denial {
    policy: String,
    binding: Option<String>,
    message: String,
    reason: Option<String>,
}

/// The status code upstream gives each reason a validation may name.
fn reason_code(reason: &str) -> u16 {
    match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        "Invalid" => 422,
        _ => 500,
    }
}

/// Everything one call produces, and the request state built on first need.
struct Run<'r> {
    attrs: &'r Attributes,
    source: &'r dyn PolicySource,
    namespace: OnceCell<Option<Value>>,
    match_attrs: OnceCell<Cow<'r, Attributes>>,
    base: OnceCell<Context<'static, 'static>>,
    denials: Vec<Denial>,
    outcome: PolicyOutcome,
}

impl<'r> Run<'r> {
    /// The request's Namespace; none for cluster-scoped requests and Namespaces themselves.
    fn namespace(&self) -> Option<&Value> {
        self.namespace
            .get_or_init(|| {
                let a = self.attrs;
                let own = a.group.is_empty() && a.version == "v1" && a.kind == "Namespace";
                let name = a.namespace.as_deref().unwrap_or_default();
                (!own && !name.is_empty() && !a.cluster_scoped)
                    .then(|| self.source.namespace(name))
                    .flatten()
            })
            .as_ref()
    }

    /// The attributes to match with: the namespace's labels filled in from the source
    /// when the caller left them out.
    fn match_attrs(&self) -> &Attributes {
        self.match_attrs.get_or_init(|| {
            if self.attrs.namespace_labels.is_some() {
                return Cow::Borrowed(self.attrs);
            }
            let labels = self
                .namespace()
                .and_then(|n| n.pointer("/metadata/labels"))
                .and_then(Value::as_object);
            let Some(labels) = labels else {
                return Cow::Borrowed(self.attrs);
            };
            let labels: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let mut owned = self.attrs.clone();
            owned.namespace_labels = Some(labels);
            Cow::Owned(owned)
        })
    }

    fn config_error(&mut self, policy: &Compiled, binding: Option<&str>, err: &str) {
        if policy.failure_policy == FailurePolicy::Ignore {
            return;
        }
        let what = if binding.is_some() {
            "binding"
        } else {
            "policy"
        };
        self.denials.push(Denial {
            policy: policy.name.clone(),
            binding: binding.map(str::to_string),
            message: format!("failed to configure {what}: {err}"),
            reason: None,
        });
    }

    /// Upstream's AddAnnotation: a key keeps its first value.
    fn annotate(&mut self, key: String, value: String) {
        if !self
            .outcome
            .audit_annotations
            .iter()
            .any(|(k, _)| *k == key)
        {
            self.outcome.audit_annotations.push((key, value));
        }
    }

    fn run_policy(&mut self, policy: &Compiled, bindings: &[&Binding]) {
        if let Some(e) = &policy.config_error {
            return self.config_error(policy, None, e);
        }
        let Some(constraints) = &policy.match_constraints else {
            let e = "policy contained no match constraints, a required field";
            return self.config_error(policy, None, e);
        };
        match constraints.matches(self.match_attrs()) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return self.config_error(policy, None, &e),
        }
        // Per policy: values of one key from several bindings or params are joined.
        let mut collected: Vec<(String, Vec<String>)> = Vec::new();
        for binding in bindings {
            let spec = match &binding.spec {
                Ok(s) => s,
                Err(e) => {
                    self.config_error(policy, Some(&binding.name), e);
                    continue;
                }
            };
            if let Some(m) = &spec.match_resources {
                match m.matches(self.match_attrs()) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        self.config_error(policy, Some(&binding.name), &e);
                        continue;
                    }
                }
            }
            let params = match collect_params(policy, spec, self.source, self.attrs) {
                Ok(p) => p,
                Err(e) => {
                    self.config_error(policy, Some(&binding.name), &e);
                    continue;
                }
            };
            for param in &params {
                let base = self
                    .base
                    .get_or_init(|| eval::request_context(self.attrs, self.namespace()));
                let result = eval::evaluate(policy, base, param.as_ref());
                self.apply(policy, binding, spec, result, &mut collected);
            }
        }
        for (key, values) in collected {
            self.annotate(format!("{}/{key}", policy.name), values.join(", "));
        }
    }

    /// Routes an evaluation's failures through the binding's validationActions.
    fn apply(
        &mut self,
        policy: &Compiled,
        binding: &Binding,
        spec: &BindingSpec,
        result: eval::Evaluation,
        collected: &mut Vec<(String, Vec<String>)>,
    ) {
        for f in result.failures {
            for action in &spec.validation_actions {
                match action.as_str() {
                    "Deny" => self.denials.push(Denial {
                        policy: policy.name.clone(),
                        binding: Some(binding.name.clone()),
                        message: f.message.clone(),
                        reason: f.reason.clone(),
                    }),
                    "Warn" => self.outcome.warnings.push(format!(
                        "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                        policy.name, binding.name, f.message
                    )),
                    "Audit" => {
                        let value = json!([{
                            "message": f.message,
                            "policy": binding.policy_name,
                            "binding": binding.name,
                            "expressionIndex": f.index,
                            "validationActions": spec.validation_actions,
                        }]);
                        self.annotate(
                            "validation.policy.admission.k8s.io/validation_failure".into(),
                            value.to_string(),
                        );
                    }
                    _ => {}
                }
            }
        }
        for (key, value) in result.annotations {
            match collected.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) if !values.contains(&value) => values.push(value),
                Some(_) => {}
                None => collected.push((key, vec![value])),
            }
        }
        for message in result.annotation_errors {
            self.denials.push(Denial {
                policy: policy.name.clone(),
                binding: Some(binding.name.clone()),
                message,
                reason: None,
            });
        }
    }
}

/// The params a binding evaluates with: `[None]` without paramKind or paramRef, else the
/// named object or every object the selector picks; none found is an error only with
/// `parameterNotFoundAction: Deny` (the default).
fn collect_params(
    policy: &Compiled,
    spec: &BindingSpec,
    source: &dyn PolicySource,
    attrs: &Attributes,
) -> Result<Vec<Option<Value>>, String> {
    let (Some(kind), Some(pr)) = (&policy.param_kind, &spec.param_ref) else {
        return Ok(vec![None]);
    };
    let namespaced = source
        .param_namespaced(&kind.api_version, &kind.kind)
        .ok_or_else(|| format!("paramKind kind `{}` not known", kind.go_string()))?;
    let ref_ns = pr.namespace.as_deref().filter(|n| !n.is_empty());
    let namespace = if namespaced {
        let request_ns = attrs.namespace.as_deref().filter(|n| !n.is_empty());
        Some(ref_ns.or(request_ns).ok_or(
            "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources",
        )?)
    } else if ref_ns.is_some() {
        return Err(
            "paramRef.namespace must not be provided for a cluster-scoped `paramKind`".into(),
        );
    } else {
        None
    };
    let name = pr.name.as_deref().filter(|n| !n.is_empty());
    let all = source.params(&kind.api_version, &kind.kind, namespace);
    let found: Vec<Value> = match (name, &pr.selector) {
        (Some(_), Some(_)) => {
            return Err("paramRef.name and paramRef.selector are mutually exclusive".into())
        }
        (Some(name), None) => all
            .into_iter()
            .filter(|p| compile::str_at(p, "/metadata/name") == name)
            .take(1)
            .collect(),
        (None, Some(sel)) => {
            let selector = Selector::from_label_selector(sel)?;
            all.into_iter()
                .filter(|p| selector.matches_object(p))
                .collect()
        }
        (None, None) => return Err("one of name or selector must be provided".into()),
    };
    let deny = pr.parameter_not_found_action.as_deref().unwrap_or("Deny") == "Deny";
    if found.is_empty() && deny {
        return Err(
            "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
        );
    }
    Ok(found
        .into_iter()
        .map(|p| Some(with_type_meta(p, &kind.api_version, &kind.kind)))
        .collect())
}

/// Upstream makes sure a param carries apiVersion and kind, as objects from a cache may not.
fn with_type_meta(mut p: Value, api_version: &str, kind: &str) -> Value {
    if let Some(map) = p.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(api_version.into()));
        map.entry("kind")
            .or_insert_with(|| Value::String(kind.into()));
    }
    p
}

impl Policies {
    pub fn new() -> Self {
        Self::default()
    }

    /// The compiled form of each policy, compiling only new versions; entries of policies
    /// that are gone are dropped.
    fn compiled(&self, policies: &[Value]) -> Vec<Arc<Compiled>> {
        let mut out = Vec::with_capacity(policies.len());
        let mut missing = Vec::new();
        {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            for p in policies {
                let name = compile::str_at(p, "/metadata/name");
                match cache.get(name) {
                    Some(c) if c.version == compile::version_of(p) => out.push(c.clone()),
                    _ => missing.push(p),
                }
            }
        }
        if missing.is_empty() && self.cache_len() <= policies.len() {
            return out;
        }
        let fresh: Vec<Arc<Compiled>> = missing
            .iter()
            .map(|p| Arc::new(compile::compile(p)))
            .collect();
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for c in &fresh {
            cache.insert(c.name.clone(), c.clone());
        }
        if cache.len() > policies.len() {
            let names: Vec<&str> = policies
                .iter()
                .map(|p| compile::str_at(p, "/metadata/name"))
                .collect();
            cache.retain(|k, _| names.contains(&k.as_str()));
        }
        out.extend(fresh);
        out
    }

    fn cache_len(&self) -> usize {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// policies: ValidatingAdmissionPolicy objects as JSON; bindings: ValidatingAdmissionPolicyBinding objects.
    /// Policies run in name order, their bindings too; the first denial is reported.
    pub fn validate(
        &self,
        policies: &[Value],
        bindings: &[Value],
        source: &dyn PolicySource,
        attrs: &Attributes,
    ) -> Result<PolicyOutcome, PolicyError> {
        if is_exempt(attrs) || policies.is_empty() || bindings.is_empty() {
            return Ok(PolicyOutcome::default());
        }
        let mut compiled = self.compiled(policies);
        compiled.sort_by(|a, b| a.name.cmp(&b.name));
        let mut bindings: Vec<Binding> = bindings.iter().map(compile::binding).collect();
        bindings.sort_by(|a, b| a.name.cmp(&b.name));
        let mut run = Run {
            attrs,
            source,
            namespace: OnceCell::new(),
            match_attrs: OnceCell::new(),
            base: OnceCell::new(),
            denials: Vec::new(),
            outcome: PolicyOutcome::default(),
        };
        for policy in &compiled {
            let mine: Vec<&Binding> = bindings
                .iter()
                .filter(|b| b.policy_name == policy.name)
                .collect();
            if !mine.is_empty() {
                run.run_policy(policy, &mine);
            }
        }
        let Some(first) = run.denials.into_iter().next() else {
            return Ok(run.outcome);
        };
        let message = match &first.binding {
            Some(b) => format!(
                "ValidatingAdmissionPolicy '{}' with binding '{b}' denied request: {}",
                first.policy, first.message
            ),
            None => format!(
                "ValidatingAdmissionPolicy '{}' denied request: {}",
                first.policy, first.message
            ),
        };
        let reason = first.reason.unwrap_or_else(|| "Invalid".into());
        Err(PolicyError::Denied {
            code: reason_code(&reason),
            reason,
            message,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
