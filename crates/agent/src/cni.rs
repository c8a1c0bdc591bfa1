//! The pod network: one CNI bridge conflist that gives the node's pods addresses from its
//! pod CIDR (`bridge` with the gateway on the host, `host-local` addresses, `portmap` for
//! hostPorts). containerd's CRI plugin reads it from the node's own conf dir.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::json;

/// An IPv4 CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.trim().split_once('/')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        if !(8..=30).contains(&prefix) {
            return None;
        }
        let mask = u32::MAX << (32 - prefix);
        Some(Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// The first host address: the bridge's (the pods' gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The conflist for a bridge named `bridge` over `cidr`, keeping addresses in `ipam_dir`.
pub fn conflist(bridge: &str, cidr: Cidr, ipam_dir: &Path) -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "krust",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": cidr.to_string(), "gateway": cidr.gateway().to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir.display().to_string(),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// Writes `10-krust.conflist` into `conf_dir` (only if it changed, so containerd does not
/// reload for nothing).
pub fn write_conflist(
    conf_dir: &Path,
    bridge: &str,
    cidr: Cidr,
    ipam_dir: &Path,
) -> std::io::Result<()> {
    std::fs::create_dir_all(conf_dir)?;
    let path = conf_dir.join("10-krust.conflist");
    let text = serde_json::to_string_pretty(&conflist(bridge, cidr, ipam_dir))
        .map_err(std::io::Error::other)?;
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    std::fs::write(&path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.42.3.7/24").expect("cidr");
        assert_eq!(c.to_string(), "10.42.3.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        assert!(Cidr::parse("10.42.0.0").is_none());
        assert!(Cidr::parse("10.42.0.0/33").is_none());
        assert!(Cidr::parse("x/24").is_none());
    }

    #[test]
    fn bridge_conflist() {
        let c = Cidr::parse("10.42.0.0/24").expect("cidr");
        let v = conflist("krust0", c, Path::new("/d/ipam"));
        assert_eq!(v["plugins"][0]["bridge"], "krust0");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.0.0/24"
        );
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/d/ipam");
        assert_eq!(v["plugins"][1]["type"], "portmap");
    }
}
