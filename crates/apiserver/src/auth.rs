//! The request chain's first two links: authentication and authorization.
//!
//! - Authentication: x509 client certificates (the subject's CN is the user, its O entries
//!   the groups), else a bearer token: a bootstrap token (`bootstraptoken`) or a service
//!   account token (`serviceaccount`). Every authenticated identity is in
//!   [`AUTHENTICATED_GROUP`], as upstream's authenticated-group adder makes it.
//! - Authorization sees one [`Attributes`] record per request, as upstream's authorizers
//!   do, and answers a [`Decision`]. The server's authorizer is [`default_authorizer`]:
//!   [`NodeBootstrapper`] confines bootstrap tokens to what upstream's
//!   `system:node-bootstrapper` ClusterRole and the discovery roles allow, and
//!   [`AllowAllAuthenticated`] lets everyone else do everything until RBAC is enforced.
//!   [`forbidden`] words a refusal as upstream does.

use std::collections::BTreeMap;

use krust_machinery::status::qualified;
use krust_machinery::ApiError;
use rustls::pki_types::CertificateDer;

/// The group every authenticated identity is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The group of every bootstrap token (`krust_machinery::bootstrap::GROUP`).
pub const BOOTSTRAPPERS_GROUP: &str = krust_machinery::bootstrap::GROUP;
/// The group of every node's identity; its user is [`NODE_USER_PREFIX`]`<node>`.
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Who sent a request: upstream's `user.Info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Empty for x509 users and bootstrap tokens; a service account's uid for its tokens.
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// An identity with no uid and no extra, in `groups` and [`AUTHENTICATED_GROUP`].
    pub fn new(user: impl Into<String>, groups: Vec<String>) -> Identity {
        Identity {
            user: user.into(),
            uid: String::new(),
            groups,
            extra: BTreeMap::new(),
        }
        .authenticated()
    }

    /// Adds [`AUTHENTICATED_GROUP`] unless it is there already.
    pub fn authenticated(mut self) -> Identity {
        if !self.in_group(AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_string());
        }
        self
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node a node identity (`system:node:<name>` in `system:nodes`) speaks for:
    /// `Some("")` for a node identity without a name, `None` for any other identity.
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group(NODES_GROUP) {
            return None;
        }
        self.user.strip_prefix(NODE_USER_PREFIX)
    }

    /// The identity in a client certificate the TLS layer already verified.
    pub fn from_cert(der: &CertificateDer<'_>) -> Option<Identity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(Identity::new(user, groups))
    }
}

/// What a request asks to do, as upstream's `authorizer.Attributes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
    /// for a non-resource request, the lower-cased HTTP method.
    pub verb: &'a str,
    /// `Some` for a request to a served resource, `None` for any other path.
    pub resource: Option<ResourceAttributes<'a>>,
    /// The request's path.
    pub path: &'a str,
}

/// The resource a request addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceAttributes<'a> {
    /// API group; empty for the core group.
    pub group: &'a str,
    /// The plural, e.g. `certificatesigningrequests`.
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// An authorizer's answer, as upstream's: `NoOpinion` lets the next authorizer decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; a non-empty reason is appended to the Forbidden message.
    Deny {
        reason: String,
    },
    NoOpinion,
}

/// Decides whether an authenticated identity may perform a request. RBAC slots in here.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, who: &Identity, attrs: &Attributes<'_>) -> Decision;
}

/// Allows every authenticated identity everything: the stand-in until RBAC is enforced.
pub struct AllowAllAuthenticated;

impl Authorizer for AllowAllAuthenticated {
    fn authorize(&self, _: &Identity, _: &Attributes<'_>) -> Decision {
        Decision::Allow
    }
}

/// The first authorizer with an opinion decides; none refuses, as upstream's union does.
pub struct Union(pub Vec<Box<dyn Authorizer>>);

impl Authorizer for Union {
    fn authorize(&self, who: &Identity, attrs: &Attributes<'_>) -> Decision {
        self.0
            .iter()
            .map(|a| a.authorize(who, attrs))
            .find(|d| *d != Decision::NoOpinion)
            .unwrap_or(Decision::NoOpinion)
    }
}

/// Bootstrap tokens (identities in `system:bootstrappers`) may only `create`, `get`,
/// `list` and `watch` certificatesigningrequests, as upstream's `system:node-bootstrapper`,
/// plus what every authenticated user may: discovery, version, OpenAPI, health and
/// SelfSubjectReview/AccessReview/RulesReview (`system:discovery`, `system:basic-user`,
/// `system:public-info-viewer`). No opinion on anyone else.
pub struct NodeBootstrapper;

/// Non-resource paths any authenticated user may read.
fn discovery_path(path: &str) -> bool {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    under("/api")
        || under("/apis")
        || under("/openapi")
        || matches!(path, "/version" | "/version/")
        || is_public(path)
}

impl Authorizer for NodeBootstrapper {
    fn authorize(&self, who: &Identity, attrs: &Attributes<'_>) -> Decision {
        if !who.in_group(BOOTSTRAPPERS_GROUP) {
            return Decision::NoOpinion;
        }
        let allowed = match attrs.resource {
            Some(r) => match (r.group, r.resource, r.subresource) {
                ("certificates.k8s.io", "certificatesigningrequests", None) => {
                    matches!(attrs.verb, "create" | "get" | "list" | "watch")
                }
                (
                    "authentication.k8s.io" | "authorization.k8s.io",
                    "selfsubjectreviews" | "selfsubjectaccessreviews" | "selfsubjectrulesreviews",
                    None,
                ) => attrs.verb == "create",
                _ => false,
            },
            None => matches!(attrs.verb, "get" | "head") && discovery_path(attrs.path),
        };
        if allowed {
            Decision::Allow
        } else {
            Decision::Deny {
                reason: String::new(),
            }
        }
    }
}

/// Asks `authorizer`; anything but `Allow` is upstream's Forbidden error.
pub fn check(
    authorizer: &dyn Authorizer,
    who: &Identity,
    attrs: &Attributes<'_>,
) -> Result<(), ApiError> {
    match authorizer.authorize(who, attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny { reason } => Err(forbidden(who, attrs, &reason)),
        Decision::NoOpinion => Err(forbidden(who, attrs, "")),
    }
}

/// The server's authorizer: [`NodeBootstrapper`], then [`AllowAllAuthenticated`].
pub fn default_authorizer() -> Box<dyn Authorizer> {
    Box::new(Union(vec![
        Box::new(NodeBootstrapper),
        Box::new(AllowAllAuthenticated),
    ]))
}

/// Upstream's `forbiddenMessage` inside a Forbidden error: `secrets is forbidden: User
/// "u" cannot list resource "secrets" in API group "" in the namespace "kube-system"`
/// (`<resource> "<name>" is forbidden` when the request names an object; `at the cluster
/// scope` without a namespace; `cannot get path "/x"` for a non-resource request).
pub fn forbidden(who: &Identity, attrs: &Attributes<'_>, reason: &str) -> ApiError {
    let user = &who.user;
    let verb = attrs.verb;
    let mut message = match attrs.resource {
        None => format!(
            "forbidden: User {user:?} cannot {verb} path {:?}",
            attrs.path
        ),
        Some(r) => {
            let resource = match r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.to_string(),
            };
            let scope = match r.namespace {
                Some(ns) => format!("in the namespace {ns:?}"),
                None => "at the cluster scope".to_string(),
            };
            let what = format!(
                "User {user:?} cannot {verb} resource {resource:?} in API group {:?} {scope}",
                r.group
            );
            let gr = qualified(r.group, r.resource);
            match r.name.filter(|n| !n.is_empty()) {
                Some(name) => format!("{gr} {name:?} is forbidden: {what}"),
                None => format!("{gr} is forbidden: {what}"),
            }
        }
    };
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    ApiError::forbidden(message)
}

/// Paths anyone may read without credentials, as upstream's `system:public-info-viewer`.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrapper() -> Identity {
        Identity::new(
            "system:bootstrap:abcdef",
            vec![BOOTSTRAPPERS_GROUP.to_string()],
        )
    }

    fn res<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            resource: Some(ResourceAttributes {
                group,
                resource,
                subresource: None,
                namespace,
                name: None,
            }),
            path: "/",
        }
    }

    #[test]
    fn identities_are_authenticated_once() {
        let id = Identity::new("a", vec![AUTHENTICATED_GROUP.into(), "g".into()]);
        assert_eq!(id.groups, [AUTHENTICATED_GROUP, "g"]);
        assert_eq!(Identity::new("a", vec![]).groups, [AUTHENTICATED_GROUP]);
    }

    #[test]
    fn node_names() {
        let node = Identity::new("system:node:a", vec![NODES_GROUP.into()]);
        assert_eq!(node.node_name(), Some("a"));
        assert_eq!(Identity::new("system:node:a", vec![]).node_name(), None);
        let nameless = Identity::new("kubelet", vec![NODES_GROUP.into()]);
        assert_eq!(nameless.node_name(), None);
    }

    #[test]
    fn bootstrappers_may_only_request_certificates() {
        let authz = default_authorizer();
        let b = bootstrapper();
        let csr = "certificatesigningrequests";
        for verb in ["create", "get", "list", "watch"] {
            let a = res(verb, "certificates.k8s.io", csr, None);
            assert_eq!(authz.authorize(&b, &a), Decision::Allow, "{verb}");
        }
        for verb in ["update", "patch", "delete"] {
            let a = res(verb, "certificates.k8s.io", csr, None);
            assert_ne!(authz.authorize(&b, &a), Decision::Allow, "{verb}");
        }
        let mut approval = res("update", "certificates.k8s.io", csr, None);
        if let Some(r) = approval.resource.as_mut() {
            r.subresource = Some("approval");
        }
        assert_ne!(authz.authorize(&b, &approval), Decision::Allow);
        let secrets = res("list", "", "secrets", Some("kube-system"));
        assert_ne!(authz.authorize(&b, &secrets), Decision::Allow);
        let review = res(
            "create",
            "authentication.k8s.io",
            "selfsubjectreviews",
            None,
        );
        assert_eq!(authz.authorize(&b, &review), Decision::Allow);
        for (verb, path, ok) in [
            ("get", "/api", true),
            ("get", "/apis/certificates.k8s.io/v1", true),
            ("get", "/version", true),
            ("get", "/openapi/v3", true),
            ("get", "/openid/v1/jwks", false),
            ("post", "/api", false),
        ] {
            let a = Attributes {
                verb,
                resource: None,
                path,
            };
            assert_eq!(authz.authorize(&b, &a) == Decision::Allow, ok, "{path}");
        }
        let admin = Identity::new("admin", vec!["system:masters".into()]);
        assert_eq!(authz.authorize(&admin, &secrets), Decision::Allow);
    }

    #[test]
    fn forbidden_messages_read_as_upstream() {
        let b = bootstrapper();
        let e = forbidden(&b, &res("list", "", "secrets", Some("kube-system")), "");
        assert_eq!(e.to_string(), "secrets is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\"");
        assert_eq!(e.code(), 403);
        let mut a = res("patch", "", "nodes", None);
        if let Some(r) = a.resource.as_mut() {
            r.name = Some("b");
            r.subresource = Some("status");
        }
        assert_eq!(
            forbidden(&b, &a, "").to_string(),
            "nodes \"b\" is forbidden: User \"system:bootstrap:abcdef\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope"
        );
        let p = Attributes {
            verb: "get",
            resource: None,
            path: "/metrics",
        };
        assert_eq!(
            forbidden(&b, &p, "").to_string(),
            "forbidden: User \"system:bootstrap:abcdef\" cannot get path \"/metrics\""
        );
    }
}
