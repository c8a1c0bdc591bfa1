//! Fake pod IPs: unique per pod, from the node's podCIDR when it has one, else from
//! [`FALLBACK`]. Nothing routes them; they are only data.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// An IPv4 CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

/// Where pod IPs come from when the node has no podCIDR: 10.244.0.0/14.
pub const FALLBACK: Cidr = Cidr {
    base: 0x0af4_0000,
    prefix: 14,
};

impl Cidr {
    /// Parses `a.b.c.d/n`; IPv6 and malformed blocks give `None`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = s.trim().split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Some(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }

    fn size(self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// Offsets handed out: all but the network address, the gateway (.1) and the broadcast
    /// address, when the block is big enough to spare them.
    fn usable(self) -> (u64, u64) {
        let size = self.size();
        if size >= 8 {
            (2, size - 1)
        } else {
            (0, size)
        }
    }

    fn contains(self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip >= self.base && u64::from(ip - self.base) < self.size()
    }
}

/// Which pod holds which address.
#[derive(Debug, Default)]
pub struct IpAllocator {
    by_uid: HashMap<String, Ipv4Addr>,
    used: HashSet<Ipv4Addr>,
    cursors: HashMap<Cidr, u64>,
}

impl IpAllocator {
    /// Records that pod `uid` already holds `ip` (seen in its status).
    pub fn observe(&mut self, uid: &str, ip: Ipv4Addr) {
        if self.by_uid.get(uid) == Some(&ip) {
            return;
        }
        self.release(uid);
        self.by_uid.insert(uid.to_string(), ip);
        self.used.insert(ip);
    }

    /// The address of pod `uid` in `cidr`: the one it holds, or the next free one.
    pub fn allocate(&mut self, uid: &str, cidr: Cidr) -> Option<Ipv4Addr> {
        if let Some(&ip) = self.by_uid.get(uid) {
            if cidr.contains(ip) {
                return Some(ip);
            }
            self.release(uid);
        }
        let (lo, hi) = cidr.usable();
        let span = hi - lo;
        let cursor = self.cursors.entry(cidr).or_insert(0);
        for _ in 0..span {
            let offset = lo + *cursor % span;
            *cursor = (*cursor + 1) % span;
            let ip = Ipv4Addr::from(cidr.base.wrapping_add(offset as u32));
            if self.used.insert(ip) {
                self.by_uid.insert(uid.to_string(), ip);
                return Some(ip);
            }
        }
        None
    }

    /// Frees the address of pod `uid`.
    pub fn release(&mut self, uid: &str) {
        if let Some(ip) = self.by_uid.remove(uid) {
            self.used.remove(&ip);
        }
    }

    /// Frees the addresses of pods for which `live` is false (pods deleted behind our back).
    pub fn retain(&mut self, live: &HashSet<String>) {
        let used = &mut self.used;
        self.by_uid.retain(|uid, ip| {
            let keep = live.contains(uid);
            if !keep {
                used.remove(ip);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cidrs() {
        let c = Cidr::parse("10.42.3.0/24").expect("cidr");
        assert!(c.contains(Ipv4Addr::new(10, 42, 3, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 42, 4, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 42, 2, 255)));
        assert!(Cidr::parse("fd00::/64").is_none());
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(FALLBACK.contains(Ipv4Addr::new(10, 247, 255, 1)));
    }

    #[test]
    fn unique_stable_and_reused() {
        let c = Cidr::parse("10.42.3.0/29").expect("cidr");
        let mut a = IpAllocator::default();
        let ips: Vec<_> = (0..5)
            .map(|i| a.allocate(&format!("p{i}"), c).expect("ip"))
            .collect();
        assert_eq!(ips[0], Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(ips.iter().collect::<HashSet<_>>().len(), 5);
        // Only .2-.6 are handed out: the block is full.
        assert_eq!(a.allocate("p5", c), None);
        // The same pod keeps its address.
        assert_eq!(a.allocate("p1", c), Some(ips[1]));
        a.release("p1");
        assert_eq!(a.allocate("p5", c), Some(ips[1]));
        // Pods that vanished give their addresses back.
        let live: HashSet<String> = ["p5".to_string()].into();
        a.retain(&live);
        assert!(a.allocate("p6", c).is_some());
    }

    #[test]
    fn observed_addresses_are_skipped() {
        let c = Cidr::parse("10.42.3.0/24").expect("cidr");
        let mut a = IpAllocator::default();
        a.observe("old", Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(a.allocate("new", c), Some(Ipv4Addr::new(10, 42, 3, 3)));
    }
}
