//! The environment variables every container gets for Services, as upstream's kubelet sets
//! them: `KUBERNETES_SERVICE_HOST`/`_PORT` for the API server's `kubernetes` Service in
//! `default` (how in-cluster clients find the API), and, unless the pod turns
//! `enableServiceLinks` off, the same plus Docker-link style variables for every Service
//! in the pod's namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

/// The variables for `services` (all namespaces; the rest are ignored) in a pod of
/// namespace `ns`, sorted by name.
pub fn service_env<'a>(
    ns: &str,
    enable_service_links: bool,
    services: impl IntoIterator<Item = &'a Service>,
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services {
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let s_ns = s.metadata.namespace.as_deref().unwrap_or_default();
        let ip = s.spec.as_ref().and_then(|sp| sp.cluster_ip.as_deref());
        if matches!(ip, None | Some("") | Some("None")) {
            continue;
        }
        if s_ns == "default" && name == "kubernetes" {
            chosen.entry(name.to_string()).or_insert(s);
        } else if s_ns == ns && enable_service_links {
            chosen.insert(name.to_string(), s);
        }
    }
    let mut out = Vec::new();
    for (name, s) in chosen {
        let Some(spec) = &s.spec else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = name.to_uppercase().replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        if let Some(first) = ports.first() {
            out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
            let proto = first.protocol.as_deref().unwrap_or("TCP").to_lowercase();
            out.push((
                format!("{prefix}_PORT"),
                format!("{proto}://{ip}:{}", first.port),
            ));
        }
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let pn = pn.to_uppercase().replace('-', "_");
                out.push((format!("{prefix}_SERVICE_PORT_{pn}"), p.port.to_string()));
            }
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let link = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            let lower = proto.to_lowercase();
            out.push((link.clone(), format!("{lower}://{ip}:{}", p.port)));
            out.push((format!("{link}_PROTO"), lower));
            out.push((format!("{link}_PORT"), p.port.to_string()));
            out.push((format!("{link}_ADDR"), ip.clone()));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort {
                            name: n.map(str::to_string),
                            port: *p,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn kubernetes_service_and_links_for_the_pods_namespace() {
        let services = [
            svc(
                "default",
                "kubernetes",
                "10.43.0.1",
                &[(Some("https"), 443)],
            ),
            svc(
                "shop",
                "web-front",
                "10.43.0.20",
                &[(Some("http"), 80), (Some("metrics"), 9090)],
            ),
            svc("shop", "db", "None", &[(None, 5432)]),
            svc("other", "web", "10.43.0.30", &[(None, 80)]),
        ];
        let env = service_env("shop", true, &services);
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get(&env, "KUBERNETES_PORT"), Some("tcp://10.43.0.1:443"));
        assert_eq!(get(&env, "KUBERNETES_PORT_443_TCP_ADDR"), Some("10.43.0.1"));
        assert_eq!(get(&env, "WEB_FRONT_SERVICE_HOST"), Some("10.43.0.20"));
        assert_eq!(get(&env, "WEB_FRONT_SERVICE_PORT"), Some("80"));
        assert_eq!(get(&env, "WEB_FRONT_SERVICE_PORT_METRICS"), Some("9090"));
        assert_eq!(
            get(&env, "WEB_FRONT_PORT_9090_TCP"),
            Some("tcp://10.43.0.20:9090")
        );
        assert_eq!(get(&env, "WEB_FRONT_PORT_80_TCP_PROTO"), Some("tcp"));
        assert_eq!(
            get(&env, "DB_SERVICE_HOST"),
            None,
            "headless services get none"
        );
        assert_eq!(
            get(&env, "WEB_SERVICE_HOST"),
            None,
            "other namespaces get none"
        );
    }

    #[test]
    fn without_service_links_only_the_api_server_remains() {
        let services = [
            svc(
                "default",
                "kubernetes",
                "10.43.0.1",
                &[(Some("https"), 443)],
            ),
            svc("default", "web", "10.43.0.20", &[(None, 80)]),
        ];
        let env = service_env("default", false, &services);
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert_eq!(get(&env, "WEB_SERVICE_HOST"), None);
        let env = service_env("default", true, &services);
        assert_eq!(get(&env, "WEB_SERVICE_HOST"), Some("10.43.0.20"));
    }
}
