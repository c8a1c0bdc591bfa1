//! The two address types the pod network needs: an IPv4 prefix ([`Cidr`], always held as
//! its network address) and a link-layer address ([`Mac`], as the VXLAN annotation and
//! `ip -j` write it).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0:?} is not an IPv4 prefix (a.b.c.d/n)")]
    Cidr(String),
    #[error("{0:?} is not a MAC address (six hex octets separated by colons)")]
    Mac(String),
}

/// An IPv4 prefix. Parsing keeps the network address only (`10.42.1.7/24` is
/// `10.42.1.0/24`), so two prefixes are equal when they cover the same addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    /// The prefix of length `prefix` (at most 32) containing `addr`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        (prefix <= 32).then(|| Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// The network address (the first address of the prefix).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The first address after the network address: the pod bridge's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).wrapping_add(1))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two prefixes share any address (one contains the other).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl FromStr for Cidr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Cidr, ParseError> {
        let bad = || ParseError::Cidr(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Cidr::new(addr, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A 48-bit link-layer address, displayed in lower case (`0a:1b:...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Mac, ParseError> {
        let bad = || ParseError::Mac(s.to_string());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for o in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            Some(_) => Err(bad()),
            None => Ok(Mac(octets)),
        }
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalized_and_compared_by_coverage() {
        let c: Cidr = "10.42.1.7/24".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.42.1.0/24");
        assert_eq!(c.network(), Ipv4Addr::new(10, 42, 1, 0));
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 42, 1, 1));
        assert!(c.contains(Ipv4Addr::new(10, 42, 1, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 42, 2, 0)));
        let cluster: Cidr = "10.42.0.0/16".parse().expect("cidr");
        assert!(cluster.overlaps(&c) && c.overlaps(&cluster));
        assert!(!c.overlaps(&"10.42.2.0/24".parse().expect("cidr")));
        assert_eq!("0.0.0.0/0".parse::<Cidr>().map(|c| c.prefix()), Ok(0));
        for bad in ["10.42.0.0", "10.42.0.0/33", "10.42.0/16", "x/8", "::1/128"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_parse_and_print_in_lower_case() {
        let m: Mac = "0A:1b:2c:3d:4e:5F".parse().expect("mac");
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:5",
            "zz:1b:2c:3d:4e:5f",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
