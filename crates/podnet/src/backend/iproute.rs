//! The real backend: iproute2 (`ip -j`, `bridge -j`) for routes, neighbours, forwarding
//! entries and the VXLAN device, and nftables for masquerading, in the host's network
//! namespace or a named one (`ip netns exec NAME`, how the suite tries it).
//!
//! Masquerading and the forward path:
//! - Table `ip krust-podnet`, replaced whole by each sync (one `nft -f` transaction):
//!   a `postrouting` nat chain returning for what leaves by the local pod bridge, for
//!   `cluster -> cluster` (pod to pod, on this node or another: no NAT) and for
//!   multicast, and masquerading the rest of what comes from the cluster CIDR (pods
//!   reaching outside it).
//! - `net.ipv4.ip_forward=1` in the namespace.
//! - In nftables an accept in one base chain does not stop another base chain from
//!   dropping, so an accept rule in a forward chain of our own would not help against a
//!   firewall whose forward chain drops by policy (Docker's `FORWARD` under iptables-nft
//!   is the common case). Instead, every other `ip` or `inet` table's base chain on the
//!   `forward` hook with `policy drop` gets two rules appended, `ip saddr <cluster>
//!   accept` and `ip daddr <cluster> accept`, commented `krust-podnet <cluster>`; a sync
//!   removes ours that name another prefix, cleanup removes them all. Rules of
//!   iptables-legacy are invisible to nftables and are not handled.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use krust_nft::Runner;
use serde_json::Value;

use super::VxlanDevice;
use super::{BackendError, FdbEntry, Masquerade, Neighbour, PodNetBackend, Reach, Route};
use super::{ROUTE_PROTOCOL, TABLE};
use crate::net::{Cidr, Mac};

/// The iproute2 and nftables backend.
#[derive(Clone, Debug, Default)]
pub struct IpRoute {
    netns: Option<String>,
    nft: Runner,
}

impl IpRoute {
    /// Acting on the host's network namespace.
    pub fn host() -> IpRoute {
        IpRoute::default()
    }

    /// Acting inside network namespace `netns` (made by someone else).
    pub fn in_netns(netns: &str) -> IpRoute {
        IpRoute {
            netns: Some(netns.to_string()),
            nft: Runner::in_netns(netns),
        }
    }

    /// Runs `program args`; its standard output, or its standard error as the error.
    async fn output(&self, program: &str, args: &[&str]) -> Result<String, BackendError> {
        let command = format!("{program} {}", args.join(" "));
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => tokio::process::Command::new(program),
        };
        let out = c
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| BackendError::Spawn {
                command: command.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(BackendError::Command {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<(), BackendError> {
        self.output(program, args).await.map(|_| ())
    }

    /// `program args` as JSON (`-j`); an empty output is an empty list.
    async fn json(&self, program: &str, args: &[&str]) -> Result<Vec<Value>, BackendError> {
        let out = self.output(program, args).await?;
        let bad = |what: String| BackendError::Output {
            command: format!("{program} {}", args.join(" ")),
            what,
        };
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        match serde_json::from_str(&out) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(other) => Err(bad(format!("not a list: {other}"))),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// The device's `ip -j -d link show` entry; None when it does not exist.
    async fn link(&self, name: &str) -> Result<Option<Value>, BackendError> {
        match self
            .json("ip", &["-j", "-d", "link", "show", "dev", name])
            .await
        {
            Ok(mut links) => Ok(links.pop()),
            Err(BackendError::Command { stderr, .. }) if missing(&stderr) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_vxlan(&self, d: &VxlanDevice) -> Result<(), BackendError> {
        let (vni, port, local) = (d.vni.to_string(), d.port.to_string(), d.local.to_string());
        let args = [
            "link",
            "add",
            &d.name,
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            &port,
            "local",
            &local,
            "nolearning",
        ];
        self.run("ip", &args).await
    }

    /// Leaves `address/32` the device's only IPv4 address.
    async fn set_address(&self, d: &VxlanDevice) -> Result<(), BackendError> {
        let want = format!("{}/32", d.address);
        let listed = self
            .json("ip", &["-j", "-4", "addr", "show", "dev", &d.name])
            .await?;
        let held: Vec<String> = listed
            .iter()
            .flat_map(|l| l["addr_info"].as_array().into_iter().flatten())
            .filter_map(|a| {
                Some(format!(
                    "{}/{}",
                    a["local"].as_str()?,
                    a["prefixlen"].as_u64()?
                ))
            })
            .collect();
        for other in held.iter().filter(|a| **a != want) {
            self.run("ip", &["addr", "del", other, "dev", &d.name])
                .await?;
        }
        if !held.contains(&want) {
            self.run("ip", &["addr", "replace", &want, "dev", &d.name])
                .await?;
        }
        Ok(())
    }

    /// Our accept rules in other tables' drop-policy forward chains, as
    /// `(family, table, chain, handle, comment)`, and those chains.
    async fn foreign_forward(&self) -> Result<ForeignForward, BackendError> {
        let listed = self.json_nft(&["list", "chains"]).await?;
        let mut found = ForeignForward::default();
        for c in listed.iter().filter_map(|o| o.get("chain")) {
            let field = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            let (family, table, name) = (field("family"), field("table"), field("name"));
            let drops = c["hook"] == "forward" && c["policy"] == "drop";
            if !drops || !["ip", "inet"].contains(&family.as_str()) || table == TABLE {
                continue;
            }
            if ![&table, &name].iter().all(|s| plain_name(s)) {
                tracing::warn!(%family, %table, chain = %name, "forward chain drops by policy; its name cannot be written, so pod traffic may be dropped");
                continue;
            }
            let rules = self
                .json_nft(&["-a", "list", "chain", &family, &table, &name])
                .await?;
            for r in rules.iter().filter_map(|o| o.get("rule")) {
                let comment = r["comment"].as_str().unwrap_or_default();
                if let (true, Some(handle)) = (comment.starts_with(TABLE), r["handle"].as_u64()) {
                    let at = (family.clone(), table.clone(), name.clone());
                    found.ours.push((at, handle, comment.to_string()));
                }
            }
            found.chains.push((family, table, name));
        }
        Ok(found)
    }

    /// `nft -j args`, the objects of its `nftables` list.
    async fn json_nft(&self, args: &[&str]) -> Result<Vec<Value>, BackendError> {
        let out = self.output("nft", &[&["-j"], args].concat()).await?;
        let parsed: Value = serde_json::from_str(&out).map_err(|e| BackendError::Output {
            command: format!("nft -j {}", args.join(" ")),
            what: e.to_string(),
        })?;
        Ok(parsed["nftables"].as_array().cloned().unwrap_or_default())
    }

    /// Makes the accept rules in foreign drop-policy forward chains name `cluster` only
    /// (None: removes them all).
    async fn sync_forward_accepts(&self, cluster: Option<Cidr>) -> Result<(), BackendError> {
        let found = self.foreign_forward().await?;
        let want = cluster.map(|c| format!("{TABLE} {c}"));
        let mut script = String::new();
        for ((family, table, chain), handle, comment) in &found.ours {
            if want.as_deref() != Some(comment.as_str()) {
                let _ = writeln!(
                    script,
                    "delete rule {family} {table} {chain} handle {handle}"
                );
            }
        }
        if let (Some(c), Some(want)) = (cluster, &want) {
            for (family, table, chain) in &found.chains {
                let at = (family.clone(), table.clone(), chain.clone());
                if found.ours.iter().any(|(a, _, cm)| *a == at && cm == want) {
                    continue;
                }
                for dir in ["saddr", "daddr"] {
                    let _ = writeln!(
                        script,
                        "add rule {family} {table} {chain} ip {dir} {c} accept comment \"{want}\""
                    );
                }
            }
        }
        if script.is_empty() {
            return Ok(());
        }
        Ok(self.nft.nft(&script).await?)
    }
}

#[derive(Default)]
struct ForeignForward {
    /// (family, table, chain) of each foreign forward chain that drops by policy.
    chains: Vec<(String, String, String)>,
    /// Our rules in them: where, handle, comment.
    ours: Vec<((String, String, String), u64, String)>,
}

/// A table or chain name that nft's grammar takes unquoted.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Whether iproute2's error says the device does not exist.
fn missing(stderr: &str) -> bool {
    stderr.contains("does not exist") || stderr.contains("Cannot find device")
}

/// The masquerade table's script: replaced whole, atomically. A bridge name nft could not
/// take is left out of it (and logged).
pub fn masquerade_script(m: &Masquerade) -> String {
    let (cluster, bridge) = (m.cluster, &m.bridge);
    let bridge = if plain_name(bridge) {
        format!("oifname \"{bridge}\" return\n    ")
    } else {
        tracing::warn!(%bridge, "the pod bridge's name cannot be written in nft");
        String::new()
    };
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n  \
         chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         {bridge}ip saddr {cluster} ip daddr {cluster} return\n    \
         ip saddr {cluster} ip daddr 224.0.0.0/4 return\n    \
         ip saddr {cluster} masquerade\n  }}\n}}\n"
    )
}

fn parse<T: std::str::FromStr>(v: &Value) -> Option<T> {
    v.as_str()?.parse().ok()
}

/// Whether the device is a VXLAN device with these parameters (MTU and address are set
/// in place, anything else needs a new device).
fn vxlan_matches(link: &Value, d: &VxlanDevice) -> bool {
    let info = &link["linkinfo"];
    let data = &info["info_data"];
    info["info_kind"] == "vxlan"
        && data["id"].as_u64() == Some(u64::from(d.vni))
        && data["port"].as_u64() == Some(u64::from(d.port))
        && parse::<Ipv4Addr>(&data["local"]) == Some(d.local)
        && data["learning"] == false
}

#[async_trait::async_trait]
impl PodNetBackend for IpRoute {
    async fn route_to(&self, ip: Ipv4Addr) -> Result<Option<Reach>, BackendError> {
        let routes = match self
            .json("ip", &["-j", "route", "get", &ip.to_string()])
            .await
        {
            Ok(r) => r,
            // "Network is unreachable" and the like.
            Err(BackendError::Command { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(routes.first().and_then(|r| {
            Some(Reach {
                dev: r["dev"].as_str()?.to_string(),
                direct: r.get("gateway").is_none(),
            })
        }))
    }

    async fn ensure_vxlan(&self, d: &VxlanDevice) -> Result<Mac, BackendError> {
        match self.link(&d.name).await? {
            Some(link) if vxlan_matches(&link, d) => {}
            Some(_) => {
                self.run("ip", &["link", "del", &d.name]).await?;
                self.create_vxlan(d).await?;
            }
            None => self.create_vxlan(d).await?,
        }
        let mtu = d.mtu.to_string();
        self.run("ip", &["link", "set", &d.name, "mtu", &mtu, "up"])
            .await?;
        self.set_address(d).await?;
        let link = self.link(&d.name).await?;
        link.as_ref()
            .and_then(|l| parse(&l["address"]))
            .ok_or_else(|| BackendError::Output {
                command: format!("ip -j -d link show dev {}", d.name),
                what: "no MAC address".into(),
            })
    }

    async fn remove_vxlan(&self, name: &str) -> Result<(), BackendError> {
        match self.link(name).await? {
            Some(_) => self.run("ip", &["link", "del", name]).await,
            None => Ok(()),
        }
    }

    async fn routes(&self) -> Result<BTreeSet<Route>, BackendError> {
        let proto = ROUTE_PROTOCOL.to_string();
        let listed = self
            .json("ip", &["-j", "-4", "route", "show", "proto", &proto])
            .await?;
        Ok(listed
            .iter()
            .filter_map(|r| {
                let flags = r["flags"].as_array();
                Some(Route {
                    dst: parse(&r["dst"]).or_else(|| Cidr::new(parse(&r["dst"])?, 32))?,
                    via: parse(&r["gateway"])?,
                    dev: r["dev"].as_str()?.to_string(),
                    onlink: flags.is_some_and(|f| f.iter().any(|f| f == "onlink")),
                })
            })
            .collect())
    }

    async fn replace_route(&self, r: &Route) -> Result<(), BackendError> {
        let (dst, via, proto) = (
            r.dst.to_string(),
            r.via.to_string(),
            ROUTE_PROTOCOL.to_string(),
        );
        let mut args = vec!["route", "replace", &dst, "via", &via, "dev", &r.dev];
        if r.onlink {
            args.push("onlink");
        }
        args.extend(["proto", &proto]);
        self.run("ip", &args).await
    }

    async fn delete_route(&self, r: &Route) -> Result<(), BackendError> {
        let (dst, proto) = (r.dst.to_string(), ROUTE_PROTOCOL.to_string());
        self.run("ip", &["route", "del", &dst, "proto", &proto])
            .await
    }

    async fn neighbours(&self, dev: &str) -> Result<BTreeSet<Neighbour>, BackendError> {
        if self.link(dev).await?.is_none() {
            return Ok(BTreeSet::new());
        }
        let args = ["-j", "-4", "neigh", "show", "dev", dev, "nud", "permanent"];
        let listed = self.json("ip", &args).await?;
        Ok(listed
            .iter()
            .filter_map(|n| {
                Some(Neighbour {
                    ip: parse(&n["dst"])?,
                    mac: parse(&n["lladdr"])?,
                })
            })
            .collect())
    }

    async fn replace_neighbour(&self, dev: &str, n: &Neighbour) -> Result<(), BackendError> {
        let (ip, mac) = (n.ip.to_string(), n.mac.to_string());
        let args = [
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ];
        self.run("ip", &args).await
    }

    async fn delete_neighbour(&self, dev: &str, n: &Neighbour) -> Result<(), BackendError> {
        self.run("ip", &["neigh", "del", &n.ip.to_string(), "dev", dev])
            .await
    }

    async fn fdb(&self, dev: &str) -> Result<BTreeSet<FdbEntry>, BackendError> {
        if self.link(dev).await?.is_none() {
            return Ok(BTreeSet::new());
        }
        let listed = self
            .json("bridge", &["-j", "fdb", "show", "dev", dev])
            .await?;
        Ok(listed
            .iter()
            .filter_map(|e| {
                Some(FdbEntry {
                    mac: parse(&e["mac"])?,
                    dst: parse(&e["dst"])?,
                })
            })
            .filter(|e| e.mac != Mac([0; 6]))
            .collect())
    }

    async fn replace_fdb(&self, dev: &str, e: &FdbEntry) -> Result<(), BackendError> {
        let (mac, dst) = (e.mac.to_string(), e.dst.to_string());
        let args = [
            "fdb",
            "replace",
            &mac,
            "dev",
            dev,
            "dst",
            &dst,
            "self",
            "permanent",
        ];
        self.run("bridge", &args).await
    }

    async fn delete_fdb(&self, dev: &str, e: &FdbEntry) -> Result<(), BackendError> {
        let (mac, dst) = (e.mac.to_string(), e.dst.to_string());
        self.run(
            "bridge",
            &["fdb", "del", &mac, "dev", dev, "dst", &dst, "self"],
        )
        .await
    }

    async fn sync_masquerade(&self, m: &Masquerade) -> Result<(), BackendError> {
        self.nft.enable_sysctl("net/ipv4/ip_forward").await?;
        self.nft.nft(&masquerade_script(m)).await?;
        self.sync_forward_accepts(Some(m.cluster)).await
    }

    async fn remove_masquerade(&self) -> Result<(), BackendError> {
        self.sync_forward_accepts(None).await?;
        let script = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
        Ok(self.nft.nft(&script).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerades_only_what_leaves_the_cluster() {
        let s = masquerade_script(&Masquerade {
            cluster: "10.42.0.0/16".parse().expect("cidr"),
            bridge: "krust0".into(),
        });
        assert!(
            s.starts_with("table ip krust-podnet\ndelete table ip krust-podnet\n"),
            "{s}"
        );
        let chain = s.split("chain postrouting").nth(1).expect("chain");
        let order = [
            "type nat hook postrouting priority srcnat; policy accept;",
            "oifname \"krust0\" return",
            "ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 return",
            "ip saddr 10.42.0.0/16 ip daddr 224.0.0.0/4 return",
            "ip saddr 10.42.0.0/16 masquerade",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|r| chain.find(r).unwrap_or_else(|| panic!("{r}: {s}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{s}");
    }

    #[test]
    fn reads_vxlan_parameters() {
        let link: Value = serde_json::json!({"linkinfo": {"info_kind": "vxlan", "info_data":
            {"id": 1, "local": "10.199.0.1", "port": 8472, "learning": false}}});
        let mut d = VxlanDevice {
            name: "krust.vxlan".into(),
            vni: 1,
            port: 8472,
            local: "10.199.0.1".parse().expect("ip"),
            address: "10.42.1.0".parse().expect("ip"),
            mtu: 1450,
        };
        assert!(vxlan_matches(&link, &d));
        d.vni = 2;
        assert!(!vxlan_matches(&link, &d));
        assert!(plain_name("FORWARD") && plain_name("filter"));
        assert!(!plain_name("a b") && !plain_name("") && !plain_name("x;y"));
    }
}
