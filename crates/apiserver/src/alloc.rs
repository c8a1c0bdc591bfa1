//! Service address allocation: cluster IPs from the service CIDR and node ports from
//! 30000-32767. Each allocation is a store key created with compare-and-swap, so several
//! API servers on one store never hand out the same address; deletion releases it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use bytes::Bytes;
use krust_machinery::{ApiError, Cause, ResourceInfo};
use krust_store::{Store, StoreError};
use serde_json::{json, Value};

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
pub const NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

#[derive(Clone)]
pub struct Allocators {
    store: Arc<dyn Store>,
    /// Service CIDR base address and prefix length.
    net: u32,
    bits: u8,
}

/// One reservation, released again if the object could not be stored.
pub enum Allocation {
    Ip(Ipv4Addr),
    Port(u16),
}

fn parse_cidr(cidr: &str) -> Option<(u32, u8)> {
    let (ip, bits) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    if !(8..=30).contains(&bits) {
        return None;
    }
    Some((u32::from(ip) & (u32::MAX << (32 - bits)), bits))
}

/// The first address of a service CIDR: the `kubernetes` Service's cluster IP, as upstream.
pub fn first_service_ip(service_cidr: &str) -> Option<Ipv4Addr> {
    let (net, _) = parse_cidr(service_cidr)?;
    Some(Ipv4Addr::from(net + 1))
}

impl Allocators {
    pub fn new(store: Arc<dyn Store>, service_cidr: &str) -> Result<Self, String> {
        let (net, bits) = parse_cidr(service_cidr)
            .ok_or_else(|| format!("invalid service CIDR {service_cidr}"))?;
        Ok(Allocators { store, net, bits })
    }

    /// The first address of the range, reserved for the `kubernetes` Service.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.bits);
        u32::from(ip) & mask == self.net
            && u32::from(ip) != self.net
            && u32::from(ip) != (self.net | !mask)
    }

    async fn reserve(&self, key: String) -> Result<bool, ApiError> {
        match self.store.create(&key, Bytes::from_static(b"{}")).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    async fn free(&self, key: String) {
        if let Err(e) = self.store.delete(&key, None).await {
            if !matches!(e, StoreError::NotFound(_)) {
                tracing::warn!("releasing {key}: {e}");
            }
        }
    }

    async fn ip(&self, requested: Option<&str>) -> Result<Ipv4Addr, Cause> {
        let field = "spec.clusterIPs";
        if let Some(r) = requested {
            let ip: Ipv4Addr = r
                .parse()
                .map_err(|_| Cause::invalid(field, r, "must be a valid IP address"))?;
            if !self.contains(ip) {
                return Err(Cause::invalid(
                    field,
                    r,
                    "failed to allocate IP: the provided IP is not in the valid range",
                ));
            }
            return match self.reserve(format!("{IP_PREFIX}{ip}")).await {
                Ok(true) => Ok(ip),
                Ok(false) => Err(Cause::invalid(
                    field,
                    r,
                    "failed to allocate IP: provided IP is already allocated",
                )),
                Err(e) => Err(Cause::invalid(field, r, e.to_string())),
            };
        }
        use rand::Rng;
        let size = 1u32 << (32 - self.bits);
        let start = rand::rng().random_range(2..size - 1);
        for i in 0..size - 3 {
            let offset = 2 + (start - 2 + i) % (size - 3);
            let ip = Ipv4Addr::from(self.net + offset);
            if let Ok(true) = self.reserve(format!("{IP_PREFIX}{ip}")).await {
                return Ok(ip);
            }
        }
        Err(Cause::invalid(
            field,
            "",
            "failed to allocate IP: range is full",
        ))
    }

    async fn port(&self, requested: Option<i64>, field: &str) -> Result<u16, Cause> {
        if let Some(p) = requested {
            if p < NODE_PORT_RANGE.0 as i64 || p > NODE_PORT_RANGE.1 as i64 {
                return Err(Cause::invalid(field, p, "provided port is not in the valid range. The range of valid ports is 30000-32767"));
            }
            return match self.reserve(format!("{PORT_PREFIX}{p}")).await {
                Ok(true) => Ok(p as u16),
                _ => Err(Cause::invalid(
                    field,
                    p,
                    "provided port is already allocated",
                )),
            };
        }
        use rand::Rng;
        let span = (NODE_PORT_RANGE.1 - NODE_PORT_RANGE.0 + 1) as u32;
        let start = rand::rng().random_range(0..span);
        for i in 0..span {
            let p = NODE_PORT_RANGE.0 + ((start + i) % span) as u16;
            if let Ok(true) = self.reserve(format!("{PORT_PREFIX}{p}")).await {
                return Ok(p);
            }
        }
        Err(Cause::invalid(field, "", "range is full"))
    }

    /// Allocates what a new Service needs and writes it into the object.
    pub async fn allocate(
        &self,
        info: &ResourceInfo,
        obj: &mut Value,
    ) -> Result<Vec<Allocation>, ApiError> {
        if (info.group, info.kind) != ("", "Service") {
            return Ok(Vec::new());
        }
        let mut done = Vec::new();
        let result = self.allocate_service(obj, &mut done).await;
        match result {
            Ok(()) => Ok(done),
            Err(cause) => {
                self.release_list(done).await;
                let name = krust_machinery::object::name(obj)
                    .unwrap_or_default()
                    .to_string();
                Err(ApiError::invalid("", "Service", &name, vec![cause]))
            }
        }
    }

    async fn allocate_service(
        &self,
        obj: &mut Value,
        done: &mut Vec<Allocation>,
    ) -> Result<(), Cause> {
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            return Ok(());
        }
        let requested = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .map(str::to_string);
        match requested.as_deref() {
            Some("None") => {
                obj["spec"]["clusterIPs"] = json!(["None"]);
            }
            r => {
                let ip = self.ip(r.filter(|s| !s.is_empty())).await?;
                done.push(Allocation::Ip(ip));
                obj["spec"]["clusterIP"] = json!(ip.to_string());
                obj["spec"]["clusterIPs"] = json!([ip.to_string()]);
            }
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for (i, port) in ports.iter_mut().enumerate() {
                    let p = self
                        .port(
                            port.get("nodePort")
                                .and_then(Value::as_i64)
                                .filter(|p| *p != 0),
                            &format!("spec.ports[{i}].nodePort"),
                        )
                        .await?;
                    done.push(Allocation::Port(p));
                    port["nodePort"] = json!(p);
                }
            }
        }
        Ok(())
    }

    pub async fn release_list(&self, done: Vec<Allocation>) {
        for a in done {
            match a {
                Allocation::Ip(ip) => self.free(format!("{IP_PREFIX}{ip}")).await,
                Allocation::Port(p) => self.free(format!("{PORT_PREFIX}{p}")).await,
            }
        }
    }

    /// Releases what a deleted Service held.
    pub async fn release(&self, info: &ResourceInfo, obj: &Value) {
        if (info.group, info.kind) != ("", "Service") {
            return;
        }
        if let Some(ips) = obj.pointer("/spec/clusterIPs").and_then(Value::as_array) {
            for ip in ips
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|s| s.parse::<Ipv4Addr>().ok())
            {
                self.free(format!("{IP_PREFIX}{ip}")).await;
            }
        }
        if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
            for p in ports
                .iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            {
                self.free(format!("{PORT_PREFIX}{p}")).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        let (net, bits) = parse_cidr("10.43.0.0/16").expect("valid");
        assert_eq!(
            (Ipv4Addr::from(net), bits),
            (Ipv4Addr::new(10, 43, 0, 0), 16)
        );
        assert!(parse_cidr("10.43.0.0/33").is_none());
        assert!(parse_cidr("nonsense").is_none());
    }
}
