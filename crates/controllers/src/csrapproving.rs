//! CSR approving controller, as upstream's `csrapproving` (`sarapprove.go`): approves the
//! certificate requests of kubelets, so that nodes join and renew without an admin.
//!
//! For a request that is neither approved nor denied and has no certificate yet, [`decide`]
//! looks at its signer, its requester (`spec.username`, `spec.groups`) and the parsed request:
//! - `kubernetes.io/kube-apiserver-client-kubelet`, a node client request (O
//!   `system:nodes`, CN `system:node:<n>`, no SAN, client usages): approved for a node
//!   renewing its own certificate (username = CN, upstream's `selfnodeclient`) or for a
//!   joining node (group `system:bootstrappers`, upstream's `nodeclient`; group membership
//!   stands for upstream's SubjectAccessReview until RBAC is enforced), or for an admin
//!   (`system:masters`, which passes every review: a bootstrap kubeconfig that is an
//!   admin's). A node asking for
//!   another node's name is denied.
//! - `kubernetes.io/kubelet-serving`: approved when the node `system:node:<n>` asks for its
//!   own name, and every DNS and IP SAN is one of Node `<n>`'s names or addresses; denied when
//!   a node asks for another name or for an address that is not its own; retried while the
//!   Node does not exist yet.
//! - anything else, `kubernetes.io/kube-apiserver-client` included, is left for an admin
//!   (`kubectl certificate approve`).
//!
//! Decisions are written through the `approval` subresource with the cached
//! resourceVersion, so a request that changed meanwhile is a conflict and a retry.

use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::certificates::{
    self as certs, Csr, KUBELET_SERVING, KUBE_APISERVER_CLIENT_KUBELET, NODES_GROUP,
    NODE_USER_PREFIX,
};
use crate::informer::Informer;
use crate::util::{is_not_found, Backoff, Result};
use crate::{Shared, Shutdown};

/// The group of bootstrap token users: joining nodes.
pub const BOOTSTRAPPERS_GROUP: &str = krust_machinery::bootstrap::GROUP;
/// Cluster administrators (authorized for everything while RBAC is not enforced).
pub const MASTERS_GROUP: &str = "system:masters";
pub const REASON_APPROVED: &str = "AutoApproved";
/// A node asked for a certificate in another node's name.
pub const REASON_NODE_NAME_MISMATCH: &str = "NodeNameMismatch";
/// A node asked for a serving certificate for a name or address that is not its own.
pub const REASON_ADDRESS_MISMATCH: &str = "AddressMismatch";

const SELF_NODE_CLIENT: &str =
    "Auto approving self kubelet client certificate after SubjectAccessReview.";
const NODE_CLIENT: &str = "Auto approving kubelet client certificate after SubjectAccessReview.";
const NODE_SERVING: &str =
    "Auto approving kubelet serving certificate: its names and addresses are the node's own.";

/// What to do with a pending request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Add Approved (reason [`REASON_APPROVED`]) with this message.
    Approve(&'static str),
    /// Add Denied.
    Deny {
        reason: &'static str,
        message: String,
    },
    /// Not this controller's to approve: pending for an admin.
    Leave,
    /// Needs this Node, which does not exist yet: look again shortly.
    AwaitNode(String),
}

/// Who asked, as the API server recorded it in the spec.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
}

impl<'a> Requester<'a> {
    pub fn of(spec: &'a CertificateSigningRequestSpec) -> Requester<'a> {
        Requester {
            username: spec.username.as_deref().unwrap_or_default(),
            groups: spec.groups.as_deref().unwrap_or_default(),
        }
    }

    fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The requester is a node identity: `system:node:*` in `system:nodes`.
    fn is_node(&self) -> bool {
        self.username.starts_with(NODE_USER_PREFIX) && self.in_group(NODES_GROUP)
    }
}

/// The decision for a pending request of `signer` with `usages`, asked by `who`; `node`
/// looks a Node up by name.
pub fn decide(
    signer: &str,
    usages: &[String],
    who: Requester<'_>,
    csr: &Csr,
    node: impl Fn(&str) -> Option<Arc<Node>>,
) -> Decision {
    match signer {
        KUBE_APISERVER_CLIENT_KUBELET => decide_kubelet_client(usages, who, csr),
        KUBELET_SERVING => decide_kubelet_serving(usages, who, csr, node),
        _ => Decision::Leave,
    }
}

fn decide_kubelet_client(usages: &[String], who: Requester<'_>, csr: &Csr) -> Decision {
    if certs::validate_kubelet_client(csr, usages).is_err() {
        return Decision::Leave;
    }
    if who.username == csr.common_name {
        return Decision::Approve(SELF_NODE_CLIENT);
    }
    // A cluster administrator passes every SubjectAccessReview upstream, so an agent
    // bootstrapping from an admin kubeconfig is approved as a joining node is.
    if who.in_group(BOOTSTRAPPERS_GROUP) || who.in_group(MASTERS_GROUP) {
        return Decision::Approve(NODE_CLIENT);
    }
    if who.is_node() {
        return Decision::Deny {
            reason: REASON_NODE_NAME_MISMATCH,
            message: format!(
                "node {:?} may not request a client certificate for {:?}",
                who.username, csr.common_name
            ),
        };
    }
    Decision::Leave
}

fn decide_kubelet_serving(
    usages: &[String],
    who: Requester<'_>,
    csr: &Csr,
    node: impl Fn(&str) -> Option<Arc<Node>>,
) -> Decision {
    if certs::validate_kubelet_serving(csr, usages).is_err() || !who.is_node() {
        return Decision::Leave;
    }
    if who.username != csr.common_name {
        return Decision::Deny {
            reason: REASON_NODE_NAME_MISMATCH,
            message: format!(
                "node {:?} may not request a serving certificate for {:?}",
                who.username, csr.common_name
            ),
        };
    }
    let Some(name) = csr.common_name.strip_prefix(NODE_USER_PREFIX) else {
        return Decision::Leave;
    };
    let Some(node) = node(name) else {
        return Decision::AwaitNode(name.to_string());
    };
    match foreign_san(&node, name, csr) {
        Some(message) => Decision::Deny {
            reason: REASON_ADDRESS_MISMATCH,
            message,
        },
        None => Decision::Approve(NODE_SERVING),
    }
}

/// A message naming the first SAN that is not one of the node's names or addresses.
fn foreign_san(node: &Node, name: &str, csr: &Csr) -> Option<String> {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    let ips: Vec<IpAddr> = addresses
        .iter()
        .filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP"))
        .filter_map(|a| a.address.parse().ok())
        .collect();
    if let Some(ip) = csr.ip_addresses.iter().find(|ip| !ips.contains(ip)) {
        return Some(format!(
            "IP address {ip} is not an address of node {name:?}"
        ));
    }
    let known = |dns: &str| {
        dns.eq_ignore_ascii_case(name)
            || addresses.iter().any(|a| {
                matches!(a.type_.as_str(), "Hostname" | "InternalDNS" | "ExternalDNS")
                    && a.address.eq_ignore_ascii_case(dns)
            })
    };
    csr.dns_names
        .iter()
        .find(|d| !known(d))
        .map(|d| format!("DNS name {d:?} is not a name of node {name:?}"))
}

struct Ctx {
    shared: Arc<Shared>,
    api: Api<CertificateSigningRequest>,
    backoff: Backoff,
}

/// Runs the approver over the shared CSR cache `csrs`.
pub async fn run(
    shared: Arc<Shared>,
    csrs: Informer<CertificateSigningRequest>,
    shutdown: Shutdown,
) {
    let ctx = Arc::new(Ctx {
        api: Api::all(shared.client.clone()),
        shared,
        backoff: Backoff::default(),
    });
    Controller::for_stream(csrs.subscribe(), csrs.store())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |csr, _e, ctx: Arc<Ctx>| ctx.backoff.fail(&csr.name_any()),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = csr.name_any();
    let (approved, denied) = certs::approval(&csr);
    if certs::has_certificate(&csr) || approved || denied {
        ctx.backoff.forget(&name);
        return Ok(Action::await_change());
    }
    let spec = &csr.spec;
    let parsed = match Csr::parse_pem(&spec.request.0) {
        Ok(p) => p,
        Err(e) => {
            // The request is immutable: it will never parse. Left for an admin to deny.
            tracing::debug!(csr = %name, error = %e, "unable to parse csr");
            return Ok(Action::await_change());
        }
    };
    let nodes = ctx.shared.nodes.store();
    let decision = decide(
        &spec.signer_name,
        spec.usages.as_deref().unwrap_or_default(),
        Requester::of(spec),
        &parsed,
        |n| nodes.get(&ObjectRef::new(n)),
    );
    let cond = match decision {
        Decision::Leave => {
            ctx.backoff.forget(&name);
            return Ok(Action::await_change());
        }
        Decision::AwaitNode(node) => {
            tracing::debug!(csr = %name, %node, "node does not exist yet; retrying");
            return Ok(ctx.backoff.fail(&name));
        }
        Decision::Approve(message) => {
            tracing::info!(csr = %name, signer = %spec.signer_name, "approving csr");
            certs::condition(certs::APPROVED, REASON_APPROVED, message.to_string())
        }
        Decision::Deny { reason, message } => {
            tracing::info!(csr = %name, %reason, %message, "denying csr");
            certs::condition(certs::DENIED, reason, message)
        }
    };
    let next = certs::with_condition(&csr, cond);
    match ctx
        .api
        .replace_subresource("approval", &name, &PostParams::default(), &next)
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    ctx.backoff.forget(&name);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::testing::{request, usages};
    use crate::certificates::{
        USAGE_CLIENT_AUTH, USAGE_DIGITAL_SIGNATURE, USAGE_KEY_ENCIPHERMENT, USAGE_SERVER_AUTH,
    };
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn parse(cn: &str, orgs: &[&str], sans: &[&str]) -> Csr {
        Csr::parse_pem(request(cn, orgs, sans).as_bytes()).expect("parses")
    }

    fn groups(gs: &[&str]) -> Vec<String> {
        gs.iter().map(|g| g.to_string()).collect()
    }

    fn node(name: &str, addrs: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn no_node(_: &str) -> Option<Arc<Node>> {
        None
    }

    fn client(who: Requester<'_>, csr: &Csr, us: &[&str]) -> Decision {
        decide(
            KUBE_APISERVER_CLIENT_KUBELET,
            &usages(us),
            who,
            csr,
            no_node,
        )
    }

    const CLIENT_USAGES: [&str; 3] = [
        USAGE_DIGITAL_SIGNATURE,
        USAGE_KEY_ENCIPHERMENT,
        USAGE_CLIENT_AUTH,
    ];

    #[test]
    fn kubelet_client_requests() {
        let csr = parse("system:node:n1", &["system:nodes"], &[]);
        let boot = groups(&["system:bootstrappers", "system:authenticated"]);
        let joining = Requester {
            username: "system:bootstrap:abcdef",
            groups: &boot,
        };
        assert_eq!(
            client(joining, &csr, &CLIENT_USAGES),
            Decision::Approve(NODE_CLIENT)
        );
        let admins = groups(&[MASTERS_GROUP, "system:authenticated"]);
        let admin = Requester {
            username: "system:admin",
            groups: &admins,
        };
        assert_eq!(
            client(admin, &csr, &CLIENT_USAGES),
            Decision::Approve(NODE_CLIENT)
        );
        let node_groups = groups(&[NODES_GROUP, "system:authenticated"]);
        let itself = Requester {
            username: "system:node:n1",
            groups: &node_groups,
        };
        assert_eq!(
            client(itself, &csr, &[USAGE_CLIENT_AUTH]),
            Decision::Approve(SELF_NODE_CLIENT)
        );
        let other = Requester {
            username: "system:node:n2",
            groups: &node_groups,
        };
        match client(other, &csr, &CLIENT_USAGES) {
            Decision::Deny { reason, message } => {
                assert_eq!(reason, REASON_NODE_NAME_MISMATCH);
                assert!(message.contains("system:node:n2") && message.contains("system:node:n1"));
            }
            d => panic!("expected a denial, got {d:?}"),
        }
        let user_groups = groups(&["devs", "system:authenticated"]);
        let user = Requester {
            username: "alice",
            groups: &user_groups,
        };
        assert_eq!(client(user, &csr, &CLIENT_USAGES), Decision::Leave);
    }

    #[test]
    fn kubelet_client_requests_that_are_not_node_client_requests_are_left() {
        let boot = groups(&["system:bootstrappers"]);
        let joining = Requester {
            username: "system:bootstrap:abcdef",
            groups: &boot,
        };
        let with_san = parse("system:node:n1", &["system:nodes"], &["n1"]);
        assert_eq!(client(joining, &with_san, &CLIENT_USAGES), Decision::Leave);
        let masters = parse("system:node:n1", &["system:masters"], &[]);
        assert_eq!(client(joining, &masters, &CLIENT_USAGES), Decision::Leave);
        let not_node = parse("alice", &["system:nodes"], &[]);
        assert_eq!(client(joining, &not_node, &CLIENT_USAGES), Decision::Leave);
        let ok = parse("system:node:n1", &["system:nodes"], &[]);
        assert_eq!(
            client(joining, &ok, &[USAGE_CLIENT_AUTH, USAGE_SERVER_AUTH]),
            Decision::Leave
        );
        assert_eq!(
            client(joining, &ok, &[USAGE_DIGITAL_SIGNATURE]),
            Decision::Leave
        );
    }

    #[test]
    fn other_signers_are_never_approved() {
        let csr = parse("system:node:n1", &["system:nodes"], &[]);
        let boot = groups(&["system:bootstrappers", "system:masters"]);
        let who = Requester {
            username: "system:node:n1",
            groups: &boot,
        };
        let us = usages(&CLIENT_USAGES);
        for signer in [certs::KUBE_APISERVER_CLIENT, "example.com/custom"] {
            assert_eq!(decide(signer, &us, who, &csr, no_node), Decision::Leave);
        }
    }

    fn serving(who: Requester<'_>, csr: &Csr, n: Option<Arc<Node>>) -> Decision {
        let us = usages(&[USAGE_DIGITAL_SIGNATURE, USAGE_SERVER_AUTH]);
        decide(KUBELET_SERVING, &us, who, csr, |name| {
            n.clone()
                .filter(|n| n.metadata.name.as_deref() == Some(name))
        })
    }

    #[test]
    fn kubelet_serving_requests() {
        let node_groups = groups(&[NODES_GROUP]);
        let n1 = Requester {
            username: "system:node:n1",
            groups: &node_groups,
        };
        let the_node = node(
            "n1",
            &[
                ("InternalIP", "10.0.0.1"),
                ("ExternalIP", "2001:db8::1"),
                ("Hostname", "n1.example"),
            ],
        );
        let csr = parse(
            "system:node:n1",
            &["system:nodes"],
            &["n1", "N1.example", "10.0.0.1", "2001:db8::1"],
        );
        assert_eq!(
            serving(n1, &csr, Some(the_node.clone())),
            Decision::Approve(NODE_SERVING)
        );
        assert_eq!(serving(n1, &csr, None), Decision::AwaitNode("n1".into()));

        let foreign_ip = parse("system:node:n1", &["system:nodes"], &["n1", "10.0.0.9"]);
        match serving(n1, &foreign_ip, Some(the_node.clone())) {
            Decision::Deny { reason, message } => {
                assert_eq!(reason, REASON_ADDRESS_MISMATCH);
                assert!(message.contains("10.0.0.9"), "{message}");
            }
            d => panic!("expected a denial, got {d:?}"),
        }
        let foreign_dns = parse("system:node:n1", &["system:nodes"], &["evil.example"]);
        match serving(n1, &foreign_dns, Some(the_node.clone())) {
            Decision::Deny { reason, message } => {
                assert_eq!(reason, REASON_ADDRESS_MISMATCH);
                assert!(message.contains("evil.example"), "{message}");
            }
            d => panic!("expected a denial, got {d:?}"),
        }
        let n2 = Requester {
            username: "system:node:n2",
            groups: &node_groups,
        };
        match serving(n2, &csr, Some(the_node.clone())) {
            Decision::Deny { reason, message } => {
                assert_eq!(reason, REASON_NODE_NAME_MISMATCH);
                assert!(message.contains("system:node:n2") && message.contains("system:node:n1"));
            }
            d => panic!("expected a denial, got {d:?}"),
        }
    }

    #[test]
    fn kubelet_serving_requests_not_from_a_node_or_malformed_are_left() {
        let the_node = node("n1", &[("InternalIP", "10.0.0.1")]);
        let boot = groups(&["system:bootstrappers"]);
        let joining = Requester {
            username: "system:bootstrap:abcdef",
            groups: &boot,
        };
        let csr = parse("system:node:n1", &["system:nodes"], &["10.0.0.1"]);
        assert_eq!(
            serving(joining, &csr, Some(the_node.clone())),
            Decision::Leave
        );
        let node_groups = groups(&[NODES_GROUP]);
        let n1 = Requester {
            username: "system:node:n1",
            groups: &node_groups,
        };
        let no_san = parse("system:node:n1", &["system:nodes"], &[]);
        assert_eq!(
            serving(n1, &no_san, Some(the_node.clone())),
            Decision::Leave
        );
        let wrong_org = parse("system:node:n1", &["x"], &["10.0.0.1"]);
        assert_eq!(
            serving(n1, &wrong_org, Some(the_node.clone())),
            Decision::Leave
        );
        let client_usages = usages(&[USAGE_CLIENT_AUTH]);
        assert_eq!(
            decide(KUBELET_SERVING, &client_usages, n1, &csr, |_| Some(
                the_node.clone()
            )),
            Decision::Leave
        );
    }
}
