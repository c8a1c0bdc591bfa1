//! What the simulator is told: how many nodes, their shape, and how pods behave.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

use crate::SimError;

/// Configuration of a set of simulated nodes. `Default` gives upstream-like values for one node.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How many nodes to register.
    pub nodes: usize,
    /// Node names are `{name_prefix}{index}`, index from 0.
    pub name_prefix: String,
    /// Capacity and allocatable CPU of each node (a quantity, e.g. "32").
    pub cpu: String,
    /// Capacity and allocatable memory of each node (a quantity, e.g. "128Gi").
    pub memory: String,
    /// Maximum pods per node.
    pub pods: u32,
    /// Capacity and allocatable ephemeral storage of each node.
    pub ephemeral_storage: String,
    /// `nvidia.com/gpu` per node; 0 leaves the resource out.
    pub gpus: u32,
    /// Nodes are spread round-robin over zones `zone-0..zone-{zones-1}`
    /// (`topology.kubernetes.io/zone`); 0 leaves the label out.
    pub zones: u32,
    /// Extra labels on every node.
    pub labels: BTreeMap<String, String>,
    /// Taints on every node.
    pub taints: Vec<Taint>,
    /// How long a pod that terminates (a Job's pod, or one with the `krust.dev/sim-exit-code`
    /// annotation) runs when it has no `krust.dev/sim-run-seconds` annotation.
    pub run_seconds: u64,
    /// How often each node's Lease in `kube-node-lease` is renewed (kubelet: 10 s).
    pub lease_interval: Duration,
    /// `leaseDurationSeconds` of the Leases (kubelet: 40).
    pub lease_duration_seconds: i32,
    /// How often each node's status (Ready's lastHeartbeatTime) is refreshed (kubelet: 40-60 s
    /// when the lease is used).
    pub status_interval: Duration,
    /// Most pod writes in flight at once.
    pub max_in_flight: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1,
            name_prefix: "sim-".into(),
            cpu: "32".into(),
            memory: "128Gi".into(),
            pods: 110,
            ephemeral_storage: "100Gi".into(),
            gpus: 0,
            zones: 3,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            run_seconds: 0,
            lease_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_interval: Duration::from_secs(40),
            max_in_flight: 64,
        }
    }
}

impl SimConfig {
    /// The name of node `index`.
    pub fn node_name(&self, index: usize) -> String {
        format!("{}{}", self.name_prefix, index)
    }

    /// Rejects values no node could be built from.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::InvalidConfig(m));
        if self.nodes > 1_000_000 {
            return bad(format!("--nodes {} is more than 1000000", self.nodes));
        }
        let name = self.node_name(self.nodes.saturating_sub(1));
        if !is_dns_subdomain(&name) {
            return bad(format!("node name {name:?} is not a DNS subdomain"));
        }
        for (what, q) in [
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("ephemeral-storage", &self.ephemeral_storage),
        ] {
            if !is_quantity(q) {
                return bad(format!("--{what} {q:?} is not a quantity"));
            }
        }
        if self.lease_interval.is_zero() || self.status_interval.is_zero() {
            return bad("heartbeat intervals must be positive".into());
        }
        if self.lease_duration_seconds <= 0 {
            return bad("leaseDurationSeconds must be positive".into());
        }
        if self.max_in_flight == 0 {
            return bad("max in-flight requests must be positive".into());
        }
        Ok(())
    }
}

/// Parses `k=v,k2=v2` (an empty string gives no labels).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, SimError> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| SimError::InvalidConfig(format!("label {item:?} is not key=value")))?;
        if k.is_empty() {
            return Err(SimError::InvalidConfig(format!(
                "label {item:?} has an empty key"
            )));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Parses one taint, `key=value:Effect` or `key:Effect`, as kubectl taint writes them.
pub fn parse_taint(s: &str) -> Result<Taint, SimError> {
    let bad = || SimError::InvalidConfig(format!("taint {s:?} is not key[=value]:Effect"));
    let (kv, effect) = s.trim().rsplit_once(':').ok_or_else(bad)?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(SimError::InvalidConfig(format!(
            "taint {s:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
        )));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(bad());
    }
    Ok(Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

/// Parses a comma-separated list of taints.
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, SimError> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(parse_taint)
        .collect()
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A loose check of the quantity grammar: digits with an optional fraction and suffix.
fn is_quantity(s: &str) -> bool {
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    !num.is_empty()
        && num.bytes().any(|b| b.is_ascii_digit())
        && num.matches('.').count() <= 1
        && matches!(
            suffix,
            "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        let l = parse_labels("a=b, c/d=e,x=").expect("labels");
        assert_eq!(l.get("a").map(String::as_str), Some("b"));
        assert_eq!(l.get("c/d").map(String::as_str), Some("e"));
        assert_eq!(l.get("x").map(String::as_str), Some(""));
        assert!(parse_labels("").expect("empty").is_empty());
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("=v").is_err());
    }

    #[test]
    fn taints_parse() {
        let t = parse_taints("gpu=true:NoSchedule,dedicated:NoExecute").expect("taints");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].key, "gpu");
        assert_eq!(t[0].value.as_deref(), Some("true"));
        assert_eq!(t[0].effect, "NoSchedule");
        assert_eq!(t[1].key, "dedicated");
        assert_eq!(t[1].value, None);
        assert_eq!(t[1].effect, "NoExecute");
        assert!(parse_taint("k=v").is_err());
        assert!(parse_taint("k=v:Sometimes").is_err());
        assert!(parse_taint(":NoSchedule").is_err());
    }

    #[test]
    fn validation() {
        assert!(SimConfig::default().validate().is_ok());
        let bad_name = SimConfig {
            name_prefix: "Sim_".into(),
            ..Default::default()
        };
        assert!(bad_name.validate().is_err());
        let bad_mem = SimConfig {
            memory: "lots".into(),
            ..Default::default()
        };
        assert!(bad_mem.validate().is_err());
        assert!(is_quantity("1.5Gi") && is_quantity("500m") && is_quantity("128Gi"));
        assert!(!is_quantity("Gi") && !is_quantity("1..2"));
    }
}
