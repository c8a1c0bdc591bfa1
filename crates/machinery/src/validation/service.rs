//! Services, Endpoints and EndpointSlices. Allocation (cluster IPs, node port ranges) is the
//! API server's business; this checks shape and formats.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::container::validate_port_num_or_name;
use super::field::{self, Path};
use super::meta;
use super::names;
use super::{arr, has, int, opt_str, str_of, sub};
use crate::status::Cause;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const KUBELET_PORT: i64 = 10250;

fn is_headless(spec: &Value) -> bool {
    str_of(spec, "clusterIP") == "None"
}

/// clusterIPs as the registry keeps them: derived from clusterIP when only that is set.
fn cluster_ips(spec: &Value) -> Vec<String> {
    let ips: Vec<String> = arr(spec, "clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if ips.is_empty() {
        opt_str(spec, "clusterIP")
            .filter(|s| !s.is_empty())
            .map(|s| vec![s.to_string()])
            .unwrap_or_default()
    } else {
        ips
    }
}

pub fn validate(svc: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(svc, "spec");
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    let svc_type = str_of(spec, "type");
    let headless = is_headless(spec);
    let ports = arr(spec, "ports");
    let ips = cluster_ips(spec);
    if ports.is_empty() && !headless && svc_type != "ExternalName" {
        errs.push(field::required(&sp.child("ports"), ""));
    }
    match svc_type {
        "LoadBalancer" | "NodePort" => {
            if headless {
                errs.push(field::invalid_str(
                    &sp.child("clusterIPs").index(0),
                    "None",
                    &format!("may not be set to 'None' for {svc_type} services"),
                ));
            }
            if svc_type == "LoadBalancer" {
                for (i, p) in ports.iter().enumerate() {
                    if int(p, "port") == Some(KUBELET_PORT) {
                        errs.push(field::invalid_int(
                            &sp.child("ports").index(i),
                            KUBELET_PORT,
                            "may not expose port 10250 externally since it is used by kubelet",
                        ));
                    }
                }
            }
        }
        "ExternalName" => {
            if !ips.is_empty() {
                errs.push(field::forbidden(
                    &sp.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(field::forbidden(
                    &sp.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if has(spec, "ipFamilyPolicy") {
                errs.push(field::forbidden(
                    &sp.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let cname = str_of(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(field::required(&sp.child("externalName"), ""));
            } else {
                errs.extend(
                    names::is_dns1123_subdomain(cname)
                        .iter()
                        .map(|m| field::invalid_str(&sp.child("externalName"), cname, m)),
                );
            }
        }
        _ => {}
    }
    let mut port_names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        errs.extend(validate_service_port(
            p,
            ports.len() > 1,
            &mut port_names,
            &sp.child("ports").index(i),
        ));
    }
    if spec.get("selector").is_some_and(Value::is_object) {
        errs.extend(meta::validate_labels(
            spec.get("selector"),
            &sp.child("selector"),
        ));
    }
    match str_of(spec, "sessionAffinity") {
        "" => errs.push(field::required(&sp.child("sessionAffinity"), "")),
        "ClientIP" => {
            let cfg = sub(spec, "sessionAffinityConfig");
            let cp = sp.child("sessionAffinityConfig");
            if !cfg.is_object() {
                errs.push(field::required(
                    &cp,
                    "when session affinity type is ClientIP",
                ));
            } else if !sub(cfg, "clientIP").is_object() {
                errs.push(field::required(
                    &cp.child("clientIP"),
                    "when session affinity type is ClientIP",
                ));
            } else {
                match int(sub(cfg, "clientIP"), "timeoutSeconds") {
                    None => errs.push(field::required(
                        &cp.at(&["clientIP", "timeoutSeconds"]),
                        "when session affinity type is ClientIP",
                    )),
                    Some(t) if !(1..=86400).contains(&t) => errs.push(field::invalid_int(
                        &cp.at(&["clientIP", "timeoutSeconds"]),
                        t,
                        "must be greater than 0 and less than 86400",
                    )),
                    _ => {}
                }
            }
        }
        "None" => {
            if has(spec, "sessionAffinityConfig") {
                errs.push(field::forbidden(
                    &sp.child("sessionAffinityConfig"),
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(field::not_supported_str(
            &sp.child("sessionAffinity"),
            other,
            &["ClientIP", "None"],
        )),
    }
    errs.extend(validate_cluster_ips(spec, &ips, &sp));
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or_default();
        if !names::is_valid_ip(ip) {
            errs.push(field::invalid_str(
                &sp.child("externalIPs").index(i),
                ip,
                names::IP_ERROR,
            ));
        }
    }
    if svc_type.is_empty() {
        errs.push(field::required(&sp.child("type"), ""));
    } else if !TYPES.contains(&svc_type) {
        errs.push(field::not_supported_str(&sp.child("type"), svc_type, TYPES));
    }
    if svc_type == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if int(p, "nodePort").unwrap_or(0) != 0 {
                errs.push(field::forbidden(
                    &sp.child("ports").index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = HashSet::new();
    let mut seen_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = str_of(p, "protocol");
        let np = int(p, "nodePort").unwrap_or(0);
        if np != 0 && !node_ports.insert((proto, np)) {
            errs.push(field::duplicate(
                &sp.child("ports").index(i).child("nodePort"),
                &json!(np),
            ));
        }
        let port = int(p, "port").unwrap_or(0);
        if !seen_ports.insert((proto, port)) {
            let key = json!({"Name": "", "Protocol": proto, "AppProtocol": null, "Port": port, "TargetPort": 0, "NodePort": 0});
            errs.push(field::duplicate(&sp.child("ports").index(i), &key));
        }
    }
    if !arr(spec, "loadBalancerSourceRanges").is_empty() && svc_type != "LoadBalancer" {
        errs.push(field::forbidden(
            &sp.child("LoadBalancerSourceRanges"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if has(spec, "allocateLoadBalancerNodePorts") && svc_type != "LoadBalancer" {
        errs.push(field::forbidden(
            &sp.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if svc_type == "LoadBalancer" && !has(spec, "allocateLoadBalancerNodePorts") {
        errs.push(field::required(
            &Path::new("allocateLoadBalancerNodePorts"),
            "",
        ));
    }
    if has(spec, "loadBalancerClass") && svc_type != "LoadBalancer" {
        errs.push(field::forbidden(
            &sp.child("loadBalancerClass"),
            "may only be used when service type is 'LoadBalancer'",
        ));
    }
    let external = svc_type == "NodePort" || svc_type == "LoadBalancer";
    match opt_str(spec, "externalTrafficPolicy") {
        None if external => errs.push(field::required(&sp.child("externalTrafficPolicy"), "")),
        Some(p) if !external => errs.push(field::invalid_str(
            &sp.child("externalTrafficPolicy"),
            p,
            "may only be set for externally-accessible services",
        )),
        Some(p) if p != "Cluster" && p != "Local" => errs.push(field::not_supported_str(
            &sp.child("externalTrafficPolicy"),
            p,
            &["Cluster", "Local"],
        )),
        _ => {}
    }
    if let Some(hc) = int(spec, "healthCheckNodePort").filter(|n| *n != 0) {
        if !external
            || opt_str(spec, "externalTrafficPolicy") != Some("Local")
            || svc_type != "LoadBalancer"
        {
            errs.push(field::invalid_int(&sp.child("healthCheckNodePort"), hc, "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"));
        }
    }
    match opt_str(spec, "internalTrafficPolicy") {
        None if svc_type != "ExternalName" => {
            errs.push(field::required(&sp.child("internalTrafficPolicy"), ""))
        }
        Some(p) if p != "Cluster" && p != "Local" => errs.push(field::not_supported_str(
            &sp.child("internalTrafficPolicy"),
            p,
            &["Cluster", "Local"],
        )),
        _ => {}
    }
    if let Some(td) = opt_str(spec, "trafficDistribution") {
        if td != "PreferClose" {
            errs.push(field::not_supported_str(
                &sp.child("trafficDistribution"),
                td,
                &["PreferClose"],
            ));
        }
    }
    if let Some(old) = old {
        errs.extend(validate_cluster_ip_update(spec, sub(old, "spec")));
    }
    errs
}

fn validate_service_port(
    p: &Value,
    require_name: bool,
    seen: &mut HashSet<String>,
    path: &Path,
) -> Vec<Cause> {
    let mut errs = Vec::new();
    let name = str_of(p, "name");
    if require_name && name.is_empty() {
        errs.push(field::required(&path.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(
            names::is_dns1123_label(name)
                .iter()
                .map(|m| field::invalid_str(&path.child("name"), name, m)),
        );
        if !seen.insert(name.to_string()) {
            errs.push(field::duplicate_str(&path.child("name"), name));
        }
    }
    let port = int(p, "port").unwrap_or(0);
    errs.extend(
        names::is_valid_port_num(port)
            .iter()
            .map(|m| field::invalid_int(&path.child("port"), port, m)),
    );
    match str_of(p, "protocol") {
        "" => errs.push(field::required(&path.child("protocol"), "")),
        proto if !PROTOCOLS.contains(&proto) => errs.push(field::not_supported_str(
            &path.child("protocol"),
            proto,
            PROTOCOLS,
        )),
        _ => {}
    }
    errs.extend(validate_port_num_or_name(
        sub(p, "targetPort"),
        &path.child("targetPort"),
    ));
    if let Some(ap) = opt_str(p, "appProtocol") {
        errs.extend(
            names::is_qualified_name(ap)
                .iter()
                .map(|m| field::invalid_str(&path.child("appProtocol"), ap, m)),
        );
    }
    let np = int(p, "nodePort").unwrap_or(0);
    if np != 0 {
        errs.extend(
            names::is_valid_port_num(np)
                .iter()
                .map(|m| field::invalid_int(&path.child("nodePort"), np, m)),
        );
    }
    errs
}

/// `ValidateServiceClusterIPsRelatedFields`, for the parts that do not depend on the
/// cluster's configured families.
fn validate_cluster_ips(spec: &Value, ips: &[String], sp: &Path) -> Vec<Cause> {
    let mut errs = Vec::new();
    if str_of(spec, "type") == "ExternalName" {
        return errs;
    }
    let ips_path = sp.child("clusterIPs");
    let ips_value = Value::Array(ips.iter().map(|s| Value::String(s.clone())).collect());
    let cluster_ip = str_of(spec, "clusterIP");
    if !cluster_ip.is_empty() && ips.first().is_some_and(|f| f != cluster_ip) {
        errs.push(field::invalid(
            &ips_path,
            &ips_value,
            "first value must match `clusterIP`",
        ));
    }
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" {
            if i > 0 || ips.len() > 1 {
                errs.push(field::invalid(
                    &ips_path,
                    &ips_value,
                    "'None' must be the first and only value",
                ));
            }
        } else if !names::is_valid_ip(ip) {
            errs.push(field::invalid_str(&ips_path.index(i), ip, names::IP_ERROR));
        }
    }
    if ips.len() > 2 {
        errs.push(field::invalid(
            &ips_path,
            &ips_value,
            "may only hold up to 2 values",
        ));
    }
    let policy = opt_str(spec, "ipFamilyPolicy");
    match policy {
        None | Some("SingleStack" | "PreferDualStack" | "RequireDualStack") => {}
        Some(p) => errs.push(field::not_supported_str(
            &sp.child("ipFamilyPolicy"),
            p,
            &["SingleStack", "PreferDualStack", "RequireDualStack"],
        )),
    }
    let families = arr(spec, "ipFamilies");
    let mut seen = HashSet::new();
    for (i, f) in families.iter().enumerate() {
        let f = f.as_str().unwrap_or_default();
        if f != "IPv4" && f != "IPv6" {
            errs.push(field::not_supported_str(
                &sp.child("ipFamilies").index(i),
                f,
                &["IPv4", "IPv6"],
            ));
        } else if !seen.insert(f) {
            errs.push(field::duplicate_str(&sp.child("ipFamilies").index(i), f));
        }
    }
    if families.len() > 2 {
        errs.push(field::invalid(
            &sp.child("ipFamilies"),
            sub(spec, "ipFamilies"),
            "may only hold up to 2 values",
        ));
    }
    if policy == Some("SingleStack") && (families.len() > 1 || ips.len() > 1) {
        errs.push(field::invalid_str(
            &sp.child("ipFamilyPolicy"),
            "SingleStack",
            "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
        ));
    }
    for (i, ip) in ips
        .iter()
        .enumerate()
        .filter(|(_, ip)| ip.as_str() != "None")
    {
        let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
            continue;
        };
        let want = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
        if let Some(f) = families.get(i).and_then(Value::as_str) {
            if f != want {
                errs.push(field::invalid(
                    &sp.child("clusterIPs").index(i),
                    &ips_value,
                    &format!("expected an {f} value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

/// Cluster IPs may not change once allocated (except from/to ExternalName and for releasing
/// a secondary IP).
fn validate_cluster_ip_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    if str_of(new, "type") == "ExternalName" || str_of(old, "type") == "ExternalName" {
        return errs;
    }
    if is_headless(new) && is_headless(old) {
        return errs;
    }
    let (n, o) = (cluster_ips(new), cluster_ips(old));
    let np = Path::new("spec").child("clusterIPs");
    let nv = Value::Array(n.iter().map(|s| Value::String(s.clone())).collect());
    if n.len() == o.len() {
        for (i, ip) in o.iter().enumerate() {
            if ip != &n[i] {
                errs.push(field::invalid(&np.index(i), &nv, "may not change once set"));
            }
        }
    } else if o.len() > n.len() {
        if n.is_empty() {
            errs.push(field::invalid(
                &np.index(0),
                &nv,
                "primary clusterIP can not be unset",
            ));
        } else if n[0] != o[0] {
            errs.push(field::invalid(&np.index(0), &nv, "may not change once set"));
        }
        if n.len() == 1 && opt_str(new, "ipFamilyPolicy") != Some("SingleStack") {
            errs.push(field::invalid(&np.index(0), &nv, "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary clusterIP"));
        }
    } else if !o.is_empty() && n[0] != o[0] {
        errs.push(field::invalid(&np.index(0), &nv, "may not change once set"));
    }
    errs
}

pub fn validate_endpoints(ep: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, ss) in arr(ep, "subsets").iter().enumerate() {
        let sp = Path::new("subsets").index(i);
        if arr(ss, "addresses").is_empty() && arr(ss, "notReadyAddresses").is_empty() {
            errs.push(field::required(
                &sp,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(ss, key).iter().enumerate() {
                let ap = sp.child(key).index(j);
                let ip = str_of(a, "ip");
                if !names::is_valid_ip(ip) {
                    errs.push(field::invalid_str(&ap.child("ip"), ip, names::IP_ERROR));
                }
                let host = str_of(a, "hostname");
                if !host.is_empty() {
                    errs.extend(
                        names::is_dns1123_label(host)
                            .iter()
                            .map(|m| field::invalid_str(&ap.child("hostname"), host, m)),
                    );
                }
                if let Some(node) = opt_str(a, "nodeName").filter(|n| !n.is_empty()) {
                    errs.extend(
                        names::is_dns1123_subdomain(node)
                            .iter()
                            .map(|m| field::invalid_str(&ap.child("nodeName"), node, m)),
                    );
                }
            }
        }
        let ports = arr(ss, "ports");
        let mut seen = HashSet::new();
        for (j, p) in ports.iter().enumerate() {
            let pp = sp.child("ports").index(j);
            let name = str_of(p, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(field::required(&pp.child("name"), ""));
            } else if !name.is_empty() {
                errs.extend(
                    names::is_dns1123_label(name)
                        .iter()
                        .map(|m| field::invalid_str(&pp.child("name"), name, m)),
                );
                if !seen.insert(name) {
                    errs.push(field::duplicate_str(&pp.child("name"), name));
                }
            }
            let port = int(p, "port").unwrap_or(0);
            errs.extend(
                names::is_valid_port_num(port)
                    .iter()
                    .map(|m| field::invalid_int(&pp.child("port"), port, m)),
            );
            match str_of(p, "protocol") {
                "" => errs.push(field::required(&pp.child("protocol"), "")),
                proto if !PROTOCOLS.contains(&proto) => errs.push(field::not_supported_str(
                    &pp.child("protocol"),
                    proto,
                    PROTOCOLS,
                )),
                _ => {}
            }
        }
    }
    errs
}

pub fn validate_endpoint_slice(es: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let addr_type = str_of(es, "addressType");
    let ap = Path::new("addressType");
    match addr_type {
        "" => errs.push(field::required(&ap, "")),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => errs.push(field::not_supported_str(
            &ap,
            other,
            &["FQDN", "IPv4", "IPv6"],
        )),
    }
    let endpoints = arr(es, "endpoints");
    if endpoints.len() > 1000 {
        errs.push(field::too_many(
            &Path::new("endpoints"),
            endpoints.len(),
            1000,
        ));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let p = Path::new("endpoints").index(i);
        let addrs = arr(e, "addresses");
        if addrs.is_empty() {
            errs.push(field::required(
                &p.child("addresses"),
                "must contain at least 1 address",
            ));
        } else if addrs.len() > 100 {
            errs.push(field::too_many(&p.child("addresses"), addrs.len(), 100));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or_default();
            let path = p.child("addresses").index(j);
            let ok = match addr_type {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                "FQDN" => names::is_dns1123_subdomain(a).is_empty(),
                _ => true,
            };
            if !ok {
                let msg = match addr_type {
                    "IPv4" => "must be a valid IPv4 address".to_string(),
                    "IPv6" => "must be a valid IPv6 address".to_string(),
                    _ => names::is_dns1123_subdomain(a).join(", "),
                };
                errs.push(field::invalid_str(&path, a, &msg));
            }
        }
        if let Some(host) = opt_str(e, "hostname") {
            errs.extend(
                names::is_dns1123_label(host)
                    .iter()
                    .map(|m| field::invalid_str(&p.child("hostname"), host, m)),
            );
        }
        if let Some(node) = opt_str(e, "nodeName") {
            errs.extend(
                names::is_dns1123_subdomain(node)
                    .iter()
                    .map(|m| field::invalid_str(&p.child("nodeName"), node, m)),
            );
        }
    }
    let ports = arr(es, "ports");
    if ports.len() > 20000 {
        errs.push(field::too_many(&Path::new("ports"), ports.len(), 20000));
    }
    let mut seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = Path::new("ports").index(i);
        let name = str_of(p, "name");
        if !name.is_empty() {
            errs.extend(
                names::is_dns1123_label(name)
                    .iter()
                    .map(|m| field::invalid_str(&pp.child("name"), name, m)),
            );
        }
        if !seen.insert(name) {
            errs.push(field::duplicate_str(&pp.child("name"), name));
        }
        if let Some(port) = int(p, "port") {
            if !(0..=65535).contains(&port) {
                errs.push(field::invalid_int(
                    &pp.child("port"),
                    port,
                    &names::inclusive_range_error(0, 65535),
                ));
            }
        }
        match opt_str(p, "protocol") {
            None => errs.push(field::required(&pp.child("protocol"), "")),
            Some(proto) if !PROTOCOLS.contains(&proto) => errs.push(field::not_supported_str(
                &pp.child("protocol"),
                proto,
                PROTOCOLS,
            )),
            _ => {}
        }
    }
    if let Some(old) = old {
        if str_of(old, "addressType") != addr_type && !addr_type.is_empty() {
            errs.push(field::immutable(&ap, &Value::String(addr_type.into())));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{create, has, has_prefix, update};
    use serde_json::{json, Value};

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"}, "spec": spec})
    }

    #[test]
    fn service_rules() {
        assert!(create(
            "v1",
            "Service",
            svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}))
        )
        .is_empty());
        assert!(create(
            "v1",
            "Service",
            svc(json!({"clusterIP": "None", "selector": {"app": "web"}}))
        )
        .is_empty());
        assert!(create(
            "v1",
            "Service",
            svc(json!({"type": "ExternalName", "externalName": "example.com."}))
        )
        .is_empty());
        let e = create("v1", "Service", svc(json!({"type": "Fancy"})));
        assert!(has(&e, "spec.ports: Required value"), "{e:?}");
        assert!(has(&e, "spec.type: Unsupported value: \"Fancy\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""));
        let e = create(
            "v1",
            "Service",
            svc(
                json!({"ports": [{"port": 80}, {"port": 80, "name": "b"}, {"port": 0, "protocol": "ICMP", "name": "b"}]}),
            ),
        );
        assert!(has(&e, "spec.ports[0].name: Required value"), "{e:?}");
        assert!(has(&e, "spec.ports[2].name: Duplicate value: \"b\""));
        assert!(has(
            &e,
            "spec.ports[2].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        ));
        assert!(has(&e, "spec.ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""));
        assert!(has_prefix(&e, "spec.ports[1]: Duplicate value: {"));
        let e = create(
            "v1",
            "Service",
            svc(json!({"ports": [{"port": 80, "nodePort": 30080}]})),
        );
        assert!(has(
            &e,
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        ));
        assert!(create(
            "v1",
            "Service",
            svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))
        )
        .is_empty());
        let e = create(
            "v1",
            "Service",
            svc(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]})),
        );
        assert!(has(&e, "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"), "{e:?}");
        let e = create(
            "v1",
            "Service",
            json!({"metadata": {"name": "1web", "namespace": "d"}, "spec": {"ports": [{"port": 1}]}}),
        );
        assert!(has_prefix(
            &e,
            "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of"
        ));
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let old = svc(
            json!({"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"], "ports": [{"port": 80}]}),
        );
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.43.0.11");
        new["spec"]["clusterIPs"] = json!(["10.43.0.11"]);
        assert_eq!(
            update("v1", "Service", new, old.clone()),
            vec!["spec.clusterIPs[0]: Invalid value: [\"10.43.0.11\"]: may not change once set"]
        );
        let mut ports = old.clone();
        ports["spec"]["ports"] = json!([{"port": 8080}]);
        assert!(update("v1", "Service", ports, old).is_empty());
    }

    #[test]
    fn endpoints_and_slices() {
        let e = create(
            "v1",
            "Endpoints",
            json!({"metadata": {"name": "e", "namespace": "d"}, "subsets": [{"addresses": [{"ip": "x"}], "ports": [{"port": 80}]}]}),
        );
        assert!(
            has_prefix(
                &e,
                "subsets[0].addresses[0].ip: Invalid value: \"x\": must be a valid IP address"
            ),
            "{e:?}"
        );
        let ok = json!({"metadata": {"name": "s", "namespace": "d"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "http", "port": 80}]});
        assert!(
            create("discovery.k8s.io/v1", "EndpointSlice", ok.clone()).is_empty(),
            "{:?}",
            create("discovery.k8s.io/v1", "EndpointSlice", ok)
        );
        let bad = json!({"metadata": {"name": "s", "namespace": "d"}, "addressType": "IPX", "endpoints": [{"addresses": []}]});
        let e = create("discovery.k8s.io/v1", "EndpointSlice", bad);
        assert!(has(&e, "addressType: Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""), "{e:?}");
        assert!(has(
            &e,
            "endpoints[0].addresses: Required value: must contain at least 1 address"
        ));
    }
}
