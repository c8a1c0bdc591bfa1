//! Ingress status: `status.loadBalancer.ingress` lists the addresses we serve on, so
//! `kubectl get ingress` shows an ADDRESS and tools waiting for one proceed.
//!
//! Written through the status subresource with a merge patch (which replaces the list as
//! a whole) and only when it differs, so an unchanged Ingress never costs a write and our
//! own status write, seen by the watch, settles instead of looping. We do not clear the
//! status of Ingresses we stop serving: the next controller owning them overwrites it.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Patch, PatchParams};
use kube::Api;

use crate::IngressError;

/// The wanted list: one entry per published address, ports omitted.
pub fn wanted(publish: &[IpAddr]) -> Vec<IngressLoadBalancerIngress> {
    publish
        .iter()
        .map(|ip| IngressLoadBalancerIngress {
            ip: Some(ip.to_string()),
            hostname: None,
            ports: None,
        })
        .collect()
}

/// Whether `ing`'s status differs from `wanted` (a missing list equals an empty one).
pub fn needs_update(ing: &Ingress, wanted: &[IngressLoadBalancerIngress]) -> bool {
    let current = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or(&[]);
    current != wanted
}

/// Writes the status of each served Ingress that needs it. With no publish addresses the
/// status is left alone (we would only erase what someone else wrote). Errors are
/// returned after trying every Ingress, so one failure does not starve the others; the
/// caller retries on its next resync.
pub async fn sync(
    client: &kube::Client,
    served: &[Arc<Ingress>],
    publish: &[IpAddr],
) -> Result<usize, IngressError> {
    if publish.is_empty() {
        return Ok(0);
    }
    let want = wanted(publish);
    let body = serde_json::json!({ "status": { "loadBalancer": { "ingress": want } } });
    let (mut written, mut last_err) = (0, None);
    for ing in served.iter().filter(|i| needs_update(i, &want)) {
        let (Some(ns), Some(name)) = (&ing.metadata.namespace, &ing.metadata.name) else {
            continue;
        };
        let api = Api::<Ingress>::namespaced(client.clone(), ns);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => written += 1,
            // Deleted meanwhile: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(ingress = %format!("{ns}/{name}"), error = %e, "status not written");
                last_err = Some(IngressError::Api(Box::new(e)));
            }
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::{IngressLoadBalancerStatus, IngressStatus};

    fn with_status(ips: Option<Vec<&str>>) -> Ingress {
        Ingress {
            status: ips.map(|ips| IngressStatus {
                load_balancer: Some(IngressLoadBalancerStatus {
                    ingress: Some(
                        ips.into_iter()
                            .map(|ip| IngressLoadBalancerIngress {
                                ip: Some(ip.into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
            }),
            ..Default::default()
        }
    }

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().filter_map(|s| s.parse().ok()).collect()
    }

    #[test]
    fn wanted_lists_each_address_without_ports() {
        let w = wanted(&ips(&["10.0.0.1", "fd00::1"]));
        assert_eq!(w.len(), 2);
        assert_eq!(w[1].ip.as_deref(), Some("fd00::1"));
        assert!(w.iter().all(|e| e.ports.is_none() && e.hostname.is_none()));
    }

    #[test]
    fn updates_only_when_different() {
        let w = wanted(&ips(&["10.0.0.1"]));
        assert!(needs_update(&with_status(None), &w));
        assert!(needs_update(&with_status(Some(vec!["10.0.0.2"])), &w));
        assert!(needs_update(
            &with_status(Some(vec!["10.0.0.1", "10.0.0.2"])),
            &w
        ));
        assert!(!needs_update(&with_status(Some(vec!["10.0.0.1"])), &w));
        assert!(!needs_update(&with_status(None), &[]));
        assert!(!needs_update(&with_status(Some(vec![])), &[]));
    }

    #[test]
    fn patch_body_shape() {
        let body = serde_json::json!({ "status": { "loadBalancer": { "ingress": wanted(&ips(&["10.0.0.1"])) } } });
        assert_eq!(
            body.to_string(),
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"10.0.0.1"}]}}}"#
        );
    }
}
