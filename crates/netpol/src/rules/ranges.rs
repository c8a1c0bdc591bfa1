//! Address and port interval arithmetic: CIDRs, `except` holes, and the normal form that
//! makes two equal policies compare equal and gives nftables interval sets without
//! overlaps (which `nft` rejects as "conflicting intervals").

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// An inclusive range of IPv4 addresses (one address, a CIDR, or what `except` leaves).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddrRange {
    /// Every IPv4 address: an empty `from`/`to`.
    pub const ALL: AddrRange = AddrRange {
        first: Ipv4Addr::UNSPECIFIED,
        last: Ipv4Addr::BROADCAST,
    };

    pub fn one(ip: Ipv4Addr) -> AddrRange {
        AddrRange {
            first: ip,
            last: ip,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    /// An IPv4 CIDR (`10.0.0.0/8`); host bits are masked off, as the kernel's prefixes do.
    /// None for anything else, IPv6 included (the data path is IPv4 only).
    pub fn parse_cidr(s: &str) -> Option<AddrRange> {
        let (ip, bits) = s.trim().split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let bits: u32 = bits.parse().ok().filter(|b| *b <= 32)?;
        let host = u32::MAX.checked_shr(bits).unwrap_or(0);
        let first = u32::from(ip) & !host;
        Some(AddrRange {
            first: first.into(),
            last: (first | host).into(),
        })
    }

    fn bounds(&self) -> (u64, u64) {
        (
            u64::from(u32::from(self.first)),
            u64::from(u32::from(self.last)),
        )
    }

    /// From inclusive numeric bounds that are known to fit.
    fn from_bounds(first: u64, last: u64) -> AddrRange {
        let clamp = |v: u64| Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX));
        AddrRange {
            first: clamp(first),
            last: clamp(last),
        }
    }
}

/// An inclusive range of ports (`port` alone, or `port` to `endPort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// A port entry without `port`: every port of its protocol.
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    pub fn one(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// Sorted, with overlapping and adjacent ranges joined.
pub(crate) fn merge(mut ranges: Vec<AddrRange>) -> Vec<AddrRange> {
    ranges.sort_unstable();
    let mut out: Vec<AddrRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if r.bounds().0 <= prev.bounds().1 + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// `range` without `holes` (an ipBlock's `except`), as sorted disjoint ranges.
pub(crate) fn subtract(range: AddrRange, holes: &[AddrRange]) -> Vec<AddrRange> {
    let (first, last) = range.bounds();
    let mut out = Vec::new();
    let mut next = first;
    for hole in merge(holes.to_vec()) {
        let (hf, hl) = hole.bounds();
        if hl < next || hf > last {
            continue;
        }
        if hf > next {
            out.push(AddrRange::from_bounds(next, hf - 1));
        }
        next = hl + 1;
        if next > last {
            return out;
        }
    }
    out.push(AddrRange::from_bounds(next, last));
    out
}

/// Sorted, with overlapping and adjacent port ranges joined.
fn merge_ports(ranges: impl IntoIterator<Item = PortRange>) -> Vec<PortRange> {
    let mut out: Vec<PortRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(prev) if u32::from(r.first) <= u32::from(prev.last) + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// The union of `rects` (address range x port range) as disjoint rectangles in a normal
/// form: address segments over which the allowed ports are the same, adjacent segments
/// with equal ports joined, each crossed with its joined port ranges. Equal unions give
/// equal output, however the rectangles were written.
pub(crate) fn disjoint_rects(rects: &[(AddrRange, PortRange)]) -> Vec<(AddrRange, PortRange)> {
    // Sweep over the addresses where a rectangle starts or ends, keeping the port ranges
    // of the rectangles that cover the current segment.
    let mut events: Vec<(u64, bool, PortRange)> = Vec::with_capacity(rects.len() * 2);
    for (a, p) in rects {
        let (first, last) = a.bounds();
        events.push((first, true, *p));
        events.push((last + 1, false, *p));
    }
    events.sort_unstable();
    let mut active: BTreeMap<PortRange, usize> = BTreeMap::new();
    let mut segments: Vec<(u64, u64, Vec<PortRange>)> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let at = events[i].0;
        while i < events.len() && events[i].0 == at {
            let (_, start, p) = events[i];
            if start {
                *active.entry(p).or_default() += 1;
            } else if let Some(n) = active.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    active.remove(&p);
                }
            }
            i += 1;
        }
        let Some(&(end, _, _)) = events.get(i) else {
            break;
        };
        if active.is_empty() {
            continue;
        }
        let ports = merge_ports(active.keys().copied());
        match segments.last_mut() {
            Some((_, last, prev)) if *last + 1 == at && *prev == ports => *last = end - 1,
            _ => segments.push((at, end - 1, ports)),
        }
    }
    segments
        .into_iter()
        .flat_map(|(first, last, ports)| {
            let a = AddrRange::from_bounds(first, last);
            ports.into_iter().map(move |p| (a, p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: &str, last: &str) -> AddrRange {
        AddrRange {
            first: first.parse().expect("ip"),
            last: last.parse().expect("ip"),
        }
    }

    fn p(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn parses_ipv4_cidrs_only() {
        assert_eq!(
            AddrRange::parse_cidr("10.1.2.3/16"),
            Some(r("10.1.0.0", "10.1.255.255"))
        );
        assert_eq!(AddrRange::parse_cidr("0.0.0.0/0"), Some(AddrRange::ALL));
        assert_eq!(
            AddrRange::parse_cidr("10.0.0.7/32"),
            Some(r("10.0.0.7", "10.0.0.7"))
        );
        assert_eq!(AddrRange::parse_cidr("10.0.0.0/33"), None);
        assert_eq!(AddrRange::parse_cidr("10.0.0.0"), None);
        assert_eq!(AddrRange::parse_cidr("fd00::/8"), None);
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let got = merge(vec![
            r("10.0.0.5", "10.0.0.9"),
            r("10.0.0.1", "10.0.0.4"),
            r("10.0.0.7", "10.0.0.12"),
            r("10.0.1.0", "10.0.1.0"),
        ]);
        assert_eq!(
            got,
            vec![r("10.0.0.1", "10.0.0.12"), r("10.0.1.0", "10.0.1.0")]
        );
        assert_eq!(
            merge(vec![AddrRange::ALL, r("1.1.1.1", "1.1.1.1")]),
            vec![AddrRange::ALL]
        );
    }

    #[test]
    fn subtracts_except_holes() {
        let block = r("10.0.0.0", "10.0.0.255");
        assert_eq!(
            subtract(
                block,
                &[r("10.0.0.16", "10.0.0.31"), r("10.0.0.0", "10.0.0.0")]
            ),
            vec![r("10.0.0.1", "10.0.0.15"), r("10.0.0.32", "10.0.0.255")]
        );
        assert_eq!(subtract(block, &[r("10.0.0.0", "10.0.1.255")]), vec![]);
        assert_eq!(subtract(block, &[r("10.9.0.0", "10.9.0.9")]), vec![block]);
        assert_eq!(
            subtract(AddrRange::ALL, &[r("255.255.255.255", "255.255.255.255")]),
            vec![r("0.0.0.0", "255.255.255.254")]
        );
    }

    #[test]
    fn rectangles_become_disjoint_in_one_normal_form() {
        let a = r("10.0.0.0", "10.0.0.255");
        let b = r("10.0.0.5", "10.0.0.5");
        let got = disjoint_rects(&[(a, p(80, 90)), (b, p(85, 100)), (b, p(443, 443))]);
        assert_eq!(
            got,
            vec![
                (r("10.0.0.0", "10.0.0.4"), p(80, 90)),
                (b, p(80, 100)),
                (b, p(443, 443)),
                (r("10.0.0.6", "10.0.0.255"), p(80, 90)),
            ]
        );
        // The same union written differently gives the same answer.
        let split = disjoint_rects(&[
            (r("10.0.0.0", "10.0.0.5"), p(80, 90)),
            (r("10.0.0.6", "10.0.0.255"), p(80, 85)),
            (r("10.0.0.6", "10.0.0.255"), p(86, 90)),
            (b, p(91, 100)),
            (b, p(443, 443)),
        ]);
        assert_eq!(split, got);
        // Adjacent single addresses with equal ports join.
        let joined = disjoint_rects(&[
            (r("10.0.0.2", "10.0.0.2"), p(80, 80)),
            (r("10.0.0.1", "10.0.0.1"), p(80, 80)),
        ]);
        assert_eq!(joined, vec![(r("10.0.0.1", "10.0.0.2"), p(80, 80))]);
        assert_eq!(
            disjoint_rects(&[(AddrRange::ALL, PortRange::ALL)]),
            vec![(AddrRange::ALL, PortRange::ALL)]
        );
        assert_eq!(disjoint_rects(&[]), vec![]);
    }
}
