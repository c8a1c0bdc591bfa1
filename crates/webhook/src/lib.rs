//! Dynamic admission webhooks (admissionregistration.k8s.io/v1) as the API server calls them.
//!
//! The API server hands this crate the current MutatingWebhookConfiguration or
//! ValidatingWebhookConfiguration objects (as JSON) and the [`Attributes`] of one request;
//! [`Dispatcher::mutate`] and [`Dispatcher::validate`] pick the webhooks that match, send each
//! an AdmissionReview v1 over HTTPS and fold the answers back in, as upstream's
//! `apiserver/pkg/admission/plugin/webhook` does.
//!
//! Layout:
//! - [`config`]: the webhook configurations read from JSON, with upstream's defaults.
//! - [`matching`]: rules, namespaceSelector and objectSelector; the exempt kinds.
//! - [`review`]: the AdmissionReview request body and the checks on the response.
//! - [`client`]: the HTTPS client (caBundle trust, service resolution, timeouts) and its
//!   Go-like error text.
//! - [`dispatch`]: the [`Dispatcher`]: ordering, failurePolicy, dry run, reinvocation.
//!
//! Not implemented: `matchConditions` (CEL) are not evaluated (a webhook with them is called
//! as if they held), and `matchPolicy: Equivalent` matches only the request's own
//! group/version/resource, as `Exact` does (krust serves each resource at one version).

pub mod client;
pub mod config;
pub mod dispatch;
pub mod matching;
pub mod review;

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use dispatch::Dispatcher;

/// The admission operation, spelled on the wire as upstream does ("CREATE", ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// The requesting user, as authentication saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What is being admitted.
#[derive(Clone, Debug)]
pub struct Attributes {
    pub operation: Operation,
    /// Group, version and kind of the object.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The resource (e.g. "pods") and subresource ("" or e.g. "status").
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub namespace: Option<String>,
    pub object: Option<serde_json::Value>,
    pub old_object: Option<serde_json::Value>,
    /// The CreateOptions/UpdateOptions/DeleteOptions object of the request.
    pub options: Option<serde_json::Value>,
    pub dry_run: bool,
    pub user: UserInfo,
    /// Labels of the object's namespace (None for cluster-scoped or unknown; an unknown
    /// namespace is matched as one without labels). For a Namespace, its own labels.
    pub namespace_labels: Option<BTreeMap<String, String>>,
    pub cluster_scoped: bool,
}

/// Picks the endpoint behind a webhook's `clientConfig.service`.
#[async_trait::async_trait]
pub trait ServiceResolver: Send + Sync {
    /// host:port (IP and port) to dial for a Service reference: the integrator resolves it to an endpoint.
    async fn resolve(&self, namespace: &str, name: &str, port: u16) -> Result<SocketAddr, String>;
}

/// Why admission by webhooks did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A webhook said no (code 403 unless it gave one), or refused a dry run (400,
    /// BadRequest). `message` is upstream's: `admission webhook "<name>" denied the request: ...`.
    #[error("{message}")]
    Denied {
        code: u16,
        reason: String,
        message: String,
    },
    /// Calling a webhook failed under failurePolicy Fail:
    /// `failed calling webhook "<name>": <detail>`; answer it with 500 InternalError.
    #[error("{message}")]
    Failed { message: String },
    /// The API server could not use an answer (a patch that does not apply, a patch for an
    /// operation without object) or a configuration (an invalid selector); answer with 500.
    #[error("{message}")]
    BadResponse { message: String },
}
