//! The cluster's DNS records, computed from Services and EndpointSlices as the Kubernetes DNS
//! specification lays them out (and CoreDNS's `kubernetes` plugin serves them):
//!
//! - `<svc>.<ns>.svc.<domain>`: A/AAAA of a ClusterIP Service's cluster IPs; of a headless
//!   Service, its ready endpoints' addresses (all of them with `publishNotReadyAddresses`);
//!   a CNAME to `externalName` for an ExternalName Service.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV for each named port, pointing at the
//!   Service name (ClusterIP) or at each endpoint's own name (headless); the Service name
//!   itself answers SRV with all of them.
//! - `<endpoint>.<svc>.<ns>.svc.<domain>`: A/AAAA of a headless Service's endpoint, named by
//!   its `hostname` (StatefulSet pods, pods with `hostname`/`subdomain`) or its dashed address.
//! - `<a-b-c-d>.<ns>.pod.<domain>`: the address in the name (upstream's `pods insecure`).
//! - PTR for every cluster IP and headless endpoint address.
//!
//! A pure function of its inputs, so the server answers from an immutable snapshot and the
//! tests need no cluster.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The TTL of every cluster record (CoreDNS's `kubernetes` plugin default).
pub const TTL: u32 = 5;

/// What the zone says about one name and type.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Records of the asked type (or the CNAME the name is).
    Records(Vec<Record>),
    /// The name exists but has no records of that type (NOERROR, no answers, SOA).
    NoData,
    /// The name does not exist (NXDOMAIN, SOA).
    NxDomain,
    /// Not a name this zone is authoritative for: ask the upstream resolvers.
    NotOurs,
}

/// One immutable snapshot of the cluster's records.
#[derive(Debug)]
pub struct Zone {
    domain: LowerName,
    soa: Record,
    /// Every name with records, and every empty non-terminal above them (no records).
    names: HashMap<LowerName, Vec<Record>>,
}

impl Zone {
    /// An empty zone for `domain` (`cluster.local`).
    pub fn empty(domain: &str) -> Result<Zone, hickory_proto::ProtoError> {
        let origin = fqdn(domain)?;
        let soa = SOA::new(
            origin.prepend_label("ns")?.prepend_label("dns")?,
            origin.prepend_label("hostmaster")?,
            1,
            7200,
            1800,
            86400,
            TTL,
        );
        Ok(Zone {
            domain: LowerName::new(&origin),
            soa: Record::from_rdata(origin, TTL, RData::SOA(soa)),
            names: HashMap::new(),
        })
    }

    /// The zone for `domain` holding `services` and their `slices`.
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Result<Zone, hickory_proto::ProtoError> {
        let mut zone = Zone::empty(domain)?;
        let origin = Name::from(&zone.domain);
        let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
        for s in slices {
            let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            by_service.entry((ns, svc.clone())).or_default().push(s);
        }
        for svc in services {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let slices = by_service
                .get(&(ns.clone(), name.clone()))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            // A Service or namespace whose name is not a DNS label has no records.
            let Ok(base) = Name::from_labels([name.as_str(), ns.as_str(), "svc"])
                .and_then(|n| n.append_domain(&origin))
            else {
                continue;
            };
            zone.add_service(svc, &base, slices);
        }
        zone.add_non_terminals();
        Ok(zone)
    }

    /// The zone's SOA record (for negative answers' authority section).
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Whether `name` lies in this zone (the cluster domain or a reverse name it holds).
    pub fn is_authoritative(&self, name: &LowerName) -> bool {
        self.domain.zone_of(name) || self.names.contains_key(name)
    }

    /// Looks `name` up for `rtype`.
    pub fn answer(&self, name: &LowerName, rtype: RecordType) -> Answer {
        if !self.domain.zone_of(name) {
            // Reverse names: ours when we hold them, else the upstream resolvers'.
            return match self.names.get(name) {
                Some(records) => select(records, rtype),
                None => Answer::NotOurs,
            };
        }
        if *name == self.domain {
            return match rtype {
                RecordType::SOA | RecordType::ANY => Answer::Records(vec![self.soa.clone()]),
                _ => Answer::NoData,
            };
        }
        if let Some(answer) = self.pod_record(name, rtype) {
            return answer;
        }
        match self.names.get(name) {
            Some(records) => select(records, rtype),
            None => Answer::NxDomain,
        }
    }

    /// `<a-b-c-d>.<ns>.pod.<domain>` (or the IPv6 form with dashes for colons).
    fn pod_record(&self, name: &LowerName, rtype: RecordType) -> Option<Answer> {
        let n = Name::from(name);
        let labels: Vec<String> = n
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect();
        let domain_labels = self.domain.num_labels() as usize;
        if labels.len() != domain_labels + 3 || labels[2] != "pod" {
            return None;
        }
        let Some(ip) = dashed_ip(&labels[0]) else {
            return Some(Answer::NxDomain);
        };
        let rdata = match (ip, rtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
            _ => return Some(Answer::NoData),
        };
        Some(Answer::Records(vec![Record::from_rdata(n, TTL, rdata)]))
    }

    fn add(&mut self, name: &Name, rdata: RData) {
        let record = Record::from_rdata(name.clone(), TTL, rdata);
        let entry = self.names.entry(LowerName::new(name)).or_default();
        if !entry.contains(&record) {
            entry.push(record);
        }
    }

    fn add_service(&mut self, svc: &Service, base: &Name, slices: &[&EndpointSlice]) {
        let Some(spec) = &svc.spec else { return };
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().and_then(|t| fqdn(t).ok()) {
                self.add(base, RData::CNAME(CNAME(target)));
            }
            return;
        }
        let cluster_ips: Vec<IpAddr> = match spec.cluster_ips.as_ref().filter(|v| !v.is_empty()) {
            Some(ips) => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
            None => spec
                .cluster_ip
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect(),
        };
        if !cluster_ips.is_empty() {
            for ip in &cluster_ips {
                self.add(base, address(*ip));
                self.add(&reverse_name(*ip), RData::PTR(PTR(base.clone())));
            }
            for p in spec.ports.iter().flatten() {
                let Ok(port) = u16::try_from(p.port) else {
                    continue;
                };
                self.add_srv(base, p.name.as_deref(), p.protocol.as_deref(), port, base);
            }
            return;
        }
        // Headless: the endpoints themselves.
        let publish_all = spec.publish_not_ready_addresses.unwrap_or(false);
        for slice in slices {
            for e in &slice.endpoints {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !publish_all {
                    continue;
                }
                for a in &e.addresses {
                    let Ok(ip) = a.parse::<IpAddr>() else {
                        continue;
                    };
                    let label = e.hostname.clone().unwrap_or_else(|| dashed(ip));
                    let Ok(own) = base.prepend_label(label.as_str()) else {
                        continue;
                    };
                    self.add(base, address(ip));
                    self.add(&own, address(ip));
                    self.add(&reverse_name(ip), RData::PTR(PTR(own.clone())));
                    for p in slice.ports.iter().flatten() {
                        let Some(port) = p.port.and_then(|n| u16::try_from(n).ok()) else {
                            continue;
                        };
                        self.add_srv(base, p.name.as_deref(), p.protocol.as_deref(), port, &own);
                    }
                }
            }
        }
    }

    /// SRV records of one named port: at `_<port>._<proto>.<base>` and at `base` itself.
    fn add_srv(
        &mut self,
        base: &Name,
        port_name: Option<&str>,
        protocol: Option<&str>,
        port: u16,
        target: &Name,
    ) {
        let Some(port_name) = port_name.filter(|n| !n.is_empty()) else {
            return;
        };
        let proto = protocol.unwrap_or("TCP").to_ascii_lowercase();
        let Ok(name) = base
            .prepend_label(format!("_{proto}").as_str())
            .and_then(|n| n.prepend_label(format!("_{port_name}").as_str()))
        else {
            return;
        };
        let srv = RData::SRV(SRV::new(0, 100, port, target.clone()));
        self.add(&name, srv.clone());
        self.add(base, srv);
    }

    /// Every name between a record's name and the domain exists too (with no records), so
    /// that `svc.cluster.local` is NODATA rather than NXDOMAIN, as resolvers expect.
    fn add_non_terminals(&mut self) {
        let mut parents = Vec::new();
        for name in self.names.keys() {
            let mut n = name.base_name();
            while self.domain.zone_of(&n) && n != self.domain {
                parents.push(n.clone());
                n = n.base_name();
            }
        }
        for p in parents {
            self.names.entry(p).or_default();
        }
    }
}

/// The records of `rtype` among `records`; a CNAME answers every type.
fn select(records: &[Record], rtype: RecordType) -> Answer {
    let matching: Vec<Record> = records
        .iter()
        .filter(|r| {
            rtype == RecordType::ANY
                || r.record_type() == rtype
                || r.record_type() == RecordType::CNAME
        })
        .cloned()
        .collect();
    if matching.is_empty() {
        Answer::NoData
    } else {
        Answer::Records(matching)
    }
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `10.42.0.5` as `10-42-0-5`; IPv6 with dashes for colons.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn dashed_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The `in-addr.arpa` / `ip6.arpa` name of `ip`.
pub fn reverse_name(ip: IpAddr) -> Name {
    let text = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    };
    // Always a valid name: digits, hex letters and dots.
    Name::from_ascii(text).unwrap_or_default()
}

fn fqdn(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut n = Name::from_ascii(name.trim_end_matches('.'))?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, cluster_ip: &str, ports: &[(&str, i32, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ServicePort {
                            name: Some(n.to_string()),
                            port: *p,
                            protocol: Some(proto.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(svc: &str, eps: &[(&str, bool, Option<&str>)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{svc}-x")),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, ready, host)| Endpoint {
                    addresses: vec![ip.to_string()],
                    hostname: host.map(str::to_string),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn name(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).expect("name"))
    }

    fn ips(a: Answer) -> Vec<String> {
        let Answer::Records(rs) = a else {
            panic!("no records: {a:?}")
        };
        let mut out: Vec<String> = rs.iter().map(|r| r.data.to_string()).collect();
        out.sort();
        out
    }

    #[test]
    fn cluster_ip_services_answer_their_address_srv_and_ptr() {
        let web = svc("web", "10.43.0.20", &[("http", 80, "TCP"), ("", 81, "TCP")]);
        let z = Zone::build("cluster.local", [&web], []).expect("zone");
        let q = name("web.default.svc.cluster.local.");
        assert_eq!(ips(z.answer(&q, RecordType::A)), vec!["10.43.0.20"]);
        assert_eq!(
            ips(z.answer(&name("WEB.Default.svc.cluster.local."), RecordType::A)),
            vec!["10.43.0.20"],
            "names are case-insensitive"
        );
        assert_eq!(z.answer(&q, RecordType::AAAA), Answer::NoData);
        assert_eq!(
            ips(z.answer(
                &name("_http._tcp.web.default.svc.cluster.local."),
                RecordType::SRV
            )),
            vec!["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(
            ips(z.answer(&q, RecordType::SRV)).len(),
            1,
            "unnamed ports have none"
        );
        assert_eq!(
            ips(z.answer(&name("20.0.43.10.in-addr.arpa."), RecordType::PTR)),
            vec!["web.default.svc.cluster.local."]
        );
        assert_eq!(
            z.answer(&name("nope.default.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            z.answer(&name("default.svc.cluster.local."), RecordType::A),
            Answer::NoData,
            "an empty non-terminal exists"
        );
        assert_eq!(
            z.answer(
                &name("web.default.svc.cluster.local.default.svc.cluster.local."),
                RecordType::A
            ),
            Answer::NxDomain,
            "search-path expansions end quickly"
        );
        assert_eq!(
            z.answer(&name("example.com."), RecordType::A),
            Answer::NotOurs
        );
        assert_eq!(
            z.answer(&name("9.9.9.9.in-addr.arpa."), RecordType::PTR),
            Answer::NotOurs
        );
    }

    #[test]
    fn headless_services_answer_ready_endpoints_and_their_names() {
        let db = svc("db", "None", &[("http", 80, "TCP")]);
        let sl = slice(
            "db",
            &[
                ("10.42.0.5", true, Some("db-0")),
                ("10.42.0.6", true, None),
                ("10.42.0.7", false, Some("db-2")),
            ],
        );
        let z = Zone::build("cluster.local", [&db], [&sl]).expect("zone");
        assert_eq!(
            ips(z.answer(&name("db.default.svc.cluster.local."), RecordType::A)),
            vec!["10.42.0.5", "10.42.0.6"]
        );
        assert_eq!(
            ips(z.answer(&name("db-0.db.default.svc.cluster.local."), RecordType::A)),
            vec!["10.42.0.5"]
        );
        assert_eq!(
            ips(z.answer(
                &name("10-42-0-6.db.default.svc.cluster.local."),
                RecordType::A
            )),
            vec!["10.42.0.6"]
        );
        assert_eq!(
            z.answer(&name("db-2.db.default.svc.cluster.local."), RecordType::A),
            Answer::NxDomain,
            "not ready"
        );
        assert_eq!(
            ips(z.answer(
                &name("_http._tcp.db.default.svc.cluster.local."),
                RecordType::SRV
            )),
            vec![
                "0 100 8080 10-42-0-6.db.default.svc.cluster.local.",
                "0 100 8080 db-0.db.default.svc.cluster.local."
            ]
        );
        assert_eq!(
            ips(z.answer(&name("5.0.42.10.in-addr.arpa."), RecordType::PTR)),
            vec!["db-0.db.default.svc.cluster.local."]
        );

        let mut publish = db.clone();
        publish
            .spec
            .as_mut()
            .expect("spec")
            .publish_not_ready_addresses = Some(true);
        let z = Zone::build("cluster.local", [&publish], [&sl]).expect("zone");
        assert_eq!(
            ips(z.answer(&name("db.default.svc.cluster.local."), RecordType::A)).len(),
            3
        );
    }

    #[test]
    fn external_names_pods_and_the_zone_apex() {
        let mut ext = svc("ext", "", &[]);
        let spec = ext.spec.as_mut().expect("spec");
        spec.type_ = Some("ExternalName".into());
        spec.cluster_ip = None;
        spec.external_name = Some("example.com".into());
        let z = Zone::build("cluster.local", [&ext], []).expect("zone");
        assert_eq!(
            ips(z.answer(&name("ext.default.svc.cluster.local."), RecordType::A)),
            vec!["example.com."]
        );
        assert_eq!(
            ips(z.answer(&name("10-42-0-9.default.pod.cluster.local."), RecordType::A)),
            vec!["10.42.0.9"]
        );
        assert_eq!(
            z.answer(&name("bogus.default.pod.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            ips(z.answer(&name("cluster.local."), RecordType::SOA)).len(),
            1
        );
        assert!(z.is_authoritative(&name("anything.cluster.local.")));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("10.43.0.1".parse().expect("ip")).to_string(),
            "1.0.43.10.in-addr.arpa."
        );
        assert!(reverse_name("fd00::1".parse().expect("ip"))
            .to_string()
            .starts_with("1.0.0.0."));
        assert_eq!(dashed("10.1.2.3".parse().expect("ip")), "10-1-2-3");
    }
}
