//! A pod's name resolution, as the kubelet sets it up: the resolv.conf for its `dnsPolicy`
//! and `dnsConfig` (handed to the runtime, which writes it into the sandbox), and the
//! `/etc/hosts` the agent writes and mounts into every container (the pod's own name and
//! `hostAliases`).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use krust_dns::resolvconf::ResolvConf;

use crate::runtime::api;

/// What the node knows about DNS, for every pod.
#[derive(Clone, Debug, Default)]
pub struct NodeDns {
    /// The cluster DNS servers (`--cluster-dns`; empty: none known yet).
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain (`--cluster-domain`, `cluster.local`).
    pub cluster_domain: String,
    /// The node's own resolver configuration (`--resolv-conf`), for `Default` and for the
    /// search path ClusterFirst pods inherit.
    pub host: ResolvConf,
}

/// Upstream's limits on a pod's resolv.conf (the C library's, since glibc 2.26).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The DNS configuration of `pod`'s sandbox, as the kubelet computes it for each policy:
/// `ClusterFirst` (the default) uses the cluster DNS with the search path
/// `<ns>.svc.<domain> svc.<domain> <domain>` plus the node's, and `ndots:5`, except for
/// host-network pods, which get the node's; `ClusterFirstWithHostNet` is ClusterFirst for
/// every pod; `Default` is the node's configuration; `None` is only `dnsConfig`. A pod's
/// `dnsConfig` is merged on top of any of them.
pub fn dns_config(pod: &Pod, node: &NodeDns) -> api::DnsConfig {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network(pod),
        _ => false,
    };
    let mut out = match policy {
        "None" => api::DnsConfig::default(),
        _ if cluster_first && !node.cluster_dns.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = node.cluster_domain.trim_end_matches('.');
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()];
            searches.extend(node.host.search.iter().cloned());
            api::DnsConfig {
                servers: node.cluster_dns.iter().map(IpAddr::to_string).collect(),
                searches,
                options: vec!["ndots:5".to_string()],
            }
        }
        // Default, or ClusterFirst on a node that knows no cluster DNS (the kubelet falls
        // back the same way).
        _ => api::DnsConfig {
            servers: node
                .host
                .nameservers
                .iter()
                .map(IpAddr::to_string)
                .collect(),
            searches: node.host.search.clone(),
            options: node.host.options.clone(),
        },
    };
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        for ns in extra.nameservers.iter().flatten() {
            if !out.servers.contains(ns) {
                out.servers.push(ns.clone());
            }
        }
        for s in extra.searches.iter().flatten() {
            if !out.searches.contains(s) {
                out.searches.push(s.clone());
            }
        }
        for o in extra.options.iter().flatten() {
            let value = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = o.name.as_deref().unwrap_or_default();
            // A pod's option replaces the one of the same name.
            out.options
                .retain(|x| x.split(':').next().unwrap_or_default() != name);
            out.options.push(value);
        }
    }
    out.servers.truncate(MAX_NAMESERVERS);
    let mut chars = 0;
    out.searches = out
        .searches
        .into_iter()
        .take(MAX_SEARCHES)
        .take_while(|s| {
            chars += s.len() + 1;
            chars <= MAX_SEARCH_CHARS
        })
        .collect();
    out
}

/// The `/etc/hosts` of a pod with address `pod_ip`: localhost, the pod's own names (its
/// FQDN first when it has a `subdomain`) and its `hostAliases`, in the kubelet's layout.
/// Host-network pods get the node's file (`host_hosts`) plus their aliases.
pub fn hosts_file(pod: &Pod, pod_ip: &str, domain: &str, host_hosts: &str) -> String {
    let spec = pod.spec.as_ref();
    let mut out = String::from("# Kubernetes-managed hosts file.\n");
    if host_network(pod) {
        out.push_str(host_hosts);
        if !host_hosts.ends_with('\n') && !host_hosts.is_empty() {
            out.push('\n');
        }
    } else {
        out.push_str(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n",
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let hostname = spec
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or(name);
        if !pod_ip.is_empty() {
            match spec
                .and_then(|s| s.subdomain.as_deref())
                .filter(|s| !s.is_empty())
            {
                Some(sub) => {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                    let d = domain.trim_end_matches('.');
                    out.push_str(&format!(
                        "{pod_ip}\t{hostname}.{sub}.{ns}.svc.{d}\t{hostname}\n"
                    ));
                }
                None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
            }
        }
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.clone().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", a.ip));
        }
    }
    out
}

/// Whether a container mounts something over `/etc/hosts` itself (then the agent leaves
/// the file alone, as the kubelet does).
pub fn mounts_own_hosts(mounts: &[api::Mount]) -> bool {
    mounts.iter().any(|m| m.container_path == "/etc/hosts")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(policy: Option<&str>, host_net: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(str::to_string),
                host_network: Some(host_net),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.43.0.10".parse().expect("ip")],
            cluster_domain: "cluster.local".into(),
            host: ResolvConf::parse("nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"),
        }
    }

    #[test]
    fn each_policy_gets_upstreams_resolv_conf() {
        let n = node();
        let cf = dns_config(&pod(None, false), &n);
        assert_eq!(cf.servers, vec!["10.43.0.10"]);
        assert_eq!(
            cf.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(cf.options, vec!["ndots:5"]);
        let host = dns_config(&pod(Some("ClusterFirst"), true), &n);
        assert_eq!(host.servers, vec!["192.0.2.53"], "host network: the node's");
        let with_host_net = dns_config(&pod(Some("ClusterFirstWithHostNet"), true), &n);
        assert_eq!(with_host_net.servers, vec!["10.43.0.10"]);
        let default = dns_config(&pod(Some("Default"), false), &n);
        assert_eq!(
            (default.servers, default.searches, default.options),
            (
                vec!["192.0.2.53".to_string()],
                vec!["corp.example".to_string()],
                vec!["edns0".to_string()]
            )
        );
        let unknown = NodeDns {
            cluster_dns: vec![],
            ..node()
        };
        assert_eq!(
            dns_config(&pod(None, false), &unknown).servers,
            vec!["192.0.2.53"]
        );
    }

    #[test]
    fn dns_config_is_merged_and_none_is_only_it() {
        let mut p = pod(Some("None"), false);
        p.spec.as_mut().expect("spec").dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into()]),
            searches: Some(vec!["a.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        });
        let c = dns_config(&p, &node());
        assert_eq!(c.servers, vec!["1.1.1.1"]);
        assert_eq!(c.searches, vec!["a.example"]);
        assert_eq!(c.options, vec!["ndots:2", "edns0"]);
        p.spec.as_mut().expect("spec").dns_policy = Some("ClusterFirst".into());
        let c = dns_config(&p, &node());
        assert_eq!(c.servers, vec!["10.43.0.10", "1.1.1.1"]);
        assert_eq!(
            c.options,
            vec!["ndots:2", "edns0"],
            "the pod's ndots replaces ours"
        );
    }

    #[test]
    fn hosts_files() {
        let mut p = pod(None, false);
        let f = hosts_file(&p, "10.42.0.7", "cluster.local", "");
        assert!(f.contains("127.0.0.1\tlocalhost\n"), "{f}");
        assert!(f.ends_with("10.42.0.7\tweb-0\n"), "{f}");
        let spec = p.spec.as_mut().expect("spec");
        spec.hostname = Some("web-0".into());
        spec.subdomain = Some("web".into());
        spec.host_aliases = Some(vec![HostAlias {
            ip: "192.0.2.9".into(),
            hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
        }]);
        let f = hosts_file(&p, "10.42.0.7", "cluster.local", "");
        assert!(
            f.contains("10.42.0.7\tweb-0.web.shop.svc.cluster.local\tweb-0\n"),
            "{f}"
        );
        assert!(
            f.ends_with("# Entries added by HostAliases.\n192.0.2.9\tfoo.local\tbar.local\n"),
            "{f}"
        );
        let hp = pod(None, true);
        let f = hosts_file(
            &hp,
            "",
            "cluster.local",
            "127.0.0.1 localhost\n10.0.0.1 box",
        );
        assert!(f.contains("10.0.0.1 box\n"), "{f}");
    }
}
