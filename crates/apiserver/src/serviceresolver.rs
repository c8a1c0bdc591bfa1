//! Resolves a Service reference (namespace, name, port) to one ready endpoint, as upstream's
//! aggregator does with `--enable-aggregator-routing`: the API server dials the pod, not the
//! cluster IP, so it needs no service proxy on its own host. Webhooks and APIServices use it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use krust_machinery::registry::SharedRegistry;
use serde_json::Value;

use crate::cache::Cache;

/// Reads Services and Endpoints from the watch cache.
pub struct EndpointResolver {
    registry: Arc<SharedRegistry>,
    cache: Arc<Cache>,
}

impl EndpointResolver {
    pub fn new(registry: Arc<SharedRegistry>, cache: Arc<Cache>) -> Self {
        EndpointResolver { registry, cache }
    }

    fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let info = self.registry.lookup("", "v1", plural)?;
        let cached = self.cache.get(&info.key(Some(namespace), name))?;
        serde_json::from_slice(&cached.value).ok()
    }

    /// The address behind `namespace/name:port`.
    pub fn endpoint(&self, namespace: &str, name: &str, port: u16) -> Result<SocketAddr, String> {
        let svc = self
            .object("services", namespace, name)
            .ok_or_else(|| format!("service \"{name}\" not found"))?;
        let ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let svc_port = ports
            .iter()
            .find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
            .ok_or_else(|| format!("no service port {port} found for service \"{name}\""))?;
        if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
            let host = svc
                .pointer("/spec/externalName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return format!("{host}:{port}")
                .parse()
                .map_err(|_| format!("externalName {host:?} is not an IP address"));
        }
        let port_name = svc_port.get("name").and_then(Value::as_str).unwrap_or("");
        let endpoints = self
            .object("endpoints", namespace, name)
            .ok_or_else(|| format!("no endpoints available for service \"{name}\""))?;
        pick(&endpoints, port_name)
            .ok_or_else(|| format!("no endpoints available for service \"{name}\""))
    }
}

/// The first ready address of `endpoints` with the port named `port_name` (a Service's
/// unnamed single port matches the subset's unnamed one).
fn pick(endpoints: &Value, port_name: &str) -> Option<SocketAddr> {
    let subsets = endpoints.get("subsets")?.as_array()?;
    for subset in subsets {
        let port = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
            .and_then(|p| p.get("port"))
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        let ip = subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("ip").and_then(Value::as_str))
            .find_map(|ip| ip.parse::<IpAddr>().ok());
        if let Some(ip) = ip {
            return Some(SocketAddr::new(ip, port));
        }
    }
    None
}

#[async_trait::async_trait]
impl krust_webhook::ServiceResolver for EndpointResolver {
    async fn resolve(&self, namespace: &str, name: &str, port: u16) -> Result<SocketAddr, String> {
        self.endpoint(namespace, name, port)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn picks_the_named_port_of_a_ready_address() {
        let eps = json!({"subsets": [
            {"addresses": [{"ip": "10.0.0.5"}], "ports": [{"name": "metrics", "port": 9000}]},
            {"notReadyAddresses": [{"ip": "10.0.0.6"}], "addresses": [{"ip": "10.0.0.7"}],
             "ports": [{"name": "https", "port": 8443}]},
        ]});
        assert_eq!(pick(&eps, "https"), Some("10.0.0.7:8443".parse().unwrap()));
        assert_eq!(pick(&eps, "other"), None);
        let unnamed =
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 443}]}]});
        assert_eq!(pick(&unnamed, ""), Some("10.0.0.9:443".parse().unwrap()));
        assert_eq!(pick(&json!({}), ""), None);
    }
}
