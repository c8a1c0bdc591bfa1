//! `networking.k8s.io/v1`: Ingress (and its status), IngressClass and NetworkPolicy, as
//! upstream's `pkg/apis/networking/validation`. Objects arrive defaulted, so a NetworkPolicy
//! port has a protocol and IngressClass parameters have a scope; a path's `pathType` that
//! the client left out reads as `""` after the typed round trip, and counts as unset.

use serde_json::{json, Value};

use super::cluster::validate_cross_version_ref;
use super::field::{self, Path};
use super::meta::validate_label_selector;
use super::names::{self, check_name, NameRule};
use super::{arr, int, opt_str, str_of, sub};
use crate::status::Cause;

/// The legacy annotation that named an Ingress's class before `spec.ingressClassName`.
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const MAX_CONTROLLER_LEN: usize = 250;
const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];
const PARAMETER_SCOPES: &[&str] = &["Cluster", "Namespace"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const POLICY_TYPES: &[&str] = &["Ingress", "Egress"];
const NOT_AN_IP: &str = "must be a DNS name, not an IP address";
/// RFC 3986 path characters, as upstream's `IsDomainPrefixedPath` quotes them.
const HTTP_PATH_FMT: &str = "[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+";

fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// One `Invalid value` per message of a format check.
fn invalid_each(path: &Path, value: &str, msgs: Vec<String>) -> Vec<Cause> {
    msgs.iter()
        .map(|m| field::invalid_str(path, value, m))
        .collect()
}

/// What an update tolerates because the stored object already had it.
#[derive(Clone, Copy, Default)]
struct IngressOptions {
    allow_invalid_secret_name: bool,
    allow_invalid_wildcard_host_rule: bool,
}

fn update_options(old: &Value) -> IngressOptions {
    let spec = sub(old, "spec");
    IngressOptions {
        allow_invalid_secret_name: arr(spec, "tls")
            .iter()
            .any(|t| !secret_name_errors(str_of(t, "secretName")).is_empty()),
        allow_invalid_wildcard_host_rule: arr(spec, "rules").iter().any(|r| {
            str_of(r, "host").contains('*') && !validate_rule_value(r, &Path::new("")).is_empty()
        }),
    }
}

/// `ValidateIngressCreate` / `ValidateIngressUpdate` beyond ObjectMeta.
pub fn validate_ingress(ing: &Value, old: Option<&Value>) -> Vec<Cause> {
    let opts = old.map(update_options).unwrap_or_default();
    let spec = sub(ing, "spec");
    let mut errs = validate_ingress_spec(spec, &Path::new("spec"), opts);
    if old.is_none() {
        let annotation = ing
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(INGRESS_CLASS_ANNOTATION))
            .and_then(Value::as_str);
        if let (Some(ann), Some(class)) = (annotation, opt_str(spec, "ingressClassName")) {
            if ann != class {
                errs.push(field::invalid_str(
                    &Path::new("annotations").child(INGRESS_CLASS_ANNOTATION),
                    ann,
                    "must match `ingressClassName` when both are specified",
                ));
            }
        }
    }
    errs
}

fn validate_ingress_spec(spec: &Value, path: &Path, opts: IngressOptions) -> Vec<Cause> {
    let mut errs = Vec::new();
    let rules = arr(spec, "rules");
    let default_backend = present(spec, "defaultBackend");
    if rules.is_empty() && default_backend.is_none() {
        // upstream prints the internal Go slice with %#v
        let shown = if spec.get("rules").is_some_and(Value::is_array) {
            "[]networking.IngressRule{}"
        } else {
            "[]networking.IngressRule(nil)"
        };
        errs.push(field::invalid_raw(
            path,
            shown,
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = default_backend {
        errs.extend(validate_backend(b, &path.child("defaultBackend")));
    }
    for (i, rule) in rules.iter().enumerate() {
        errs.extend(validate_rule(rule, &path.child("rules").index(i), opts));
    }
    for (i, tls) in arr(spec, "tls").iter().enumerate() {
        errs.extend(validate_tls(tls, &path.child("tls").index(i), opts));
    }
    if let Some(class) = opt_str(spec, "ingressClassName") {
        let msgs = check_name(NameRule::Subdomain, class, false);
        errs.extend(invalid_each(&path.child("ingressClassName"), class, msgs));
    }
    errs
}

/// Hosts: a DNS-1123 subdomain, or `*.` and one, never an IP address.
fn host_errors(host: &str) -> Vec<String> {
    if host.contains('*') {
        names::is_wildcard_dns1123_subdomain(host)
    } else {
        names::is_dns1123_subdomain(host)
    }
}

fn validate_rule(rule: &Value, path: &Path, opts: IngressOptions) -> Vec<Cause> {
    let mut errs = Vec::new();
    let host = str_of(rule, "host");
    let hp = path.child("host");
    if !host.is_empty() {
        if names::is_valid_ip(host) {
            errs.push(field::invalid_str(&hp, host, NOT_AN_IP));
        }
        errs.extend(invalid_each(&hp, host, host_errors(host)));
    }
    if !host.contains('*') || !opts.allow_invalid_wildcard_host_rule {
        errs.extend(validate_rule_value(rule, path));
    }
    errs
}

fn validate_rule_value(rule: &Value, path: &Path) -> Vec<Cause> {
    let Some(http) = present(rule, "http") else {
        return Vec::new();
    };
    let hp = path.child("http").child("paths");
    let paths = arr(http, "paths");
    let mut errs = Vec::new();
    if paths.is_empty() {
        errs.push(field::required(&hp, ""));
    }
    for (i, p) in paths.iter().enumerate() {
        errs.extend(validate_http_path(p, &hp.index(i)));
    }
    errs
}

fn validate_http_path(p: &Value, path: &Path) -> Vec<Cause> {
    let path_type = str_of(p, "pathType");
    if path_type.is_empty() {
        return vec![field::required(
            &path.child("pathType"),
            "pathType must be specified",
        )];
    }
    let value = str_of(p, "path");
    let pp = path.child("path");
    let mut errs = Vec::new();
    match path_type {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.push(field::invalid_str(&pp, value, "must be an absolute path"));
            }
            for seq in INVALID_PATH_SEQUENCES.iter().filter(|s| value.contains(*s)) {
                let msg = format!("must not contain '{seq}'");
                errs.push(field::invalid_str(&pp, value, &msg));
            }
            for suffix in INVALID_PATH_SUFFIXES.iter().filter(|s| value.ends_with(*s)) {
                let msg = format!("cannot end with '{suffix}'");
                errs.push(field::invalid_str(&pp, value, &msg));
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(field::invalid_str(&pp, value, "must be an absolute path"));
            }
        }
        other => errs.push(field::not_supported_str(
            &path.child("pathType"),
            other,
            PATH_TYPES,
        )),
    }
    errs.extend(validate_backend(sub(p, "backend"), &path.child("backend")));
    errs
}

/// A backend is exactly one of a Service port or a typed resource reference.
fn validate_backend(b: &Value, path: &Path) -> Vec<Cause> {
    match (present(b, "resource"), present(b, "service")) {
        (Some(_), Some(_)) => vec![field::invalid_str(
            path,
            "",
            "cannot set both resource and service backends",
        )],
        (Some(r), None) => {
            let mut errs = Vec::new();
            validate_typed_ref(r, &path.child("resource"), &mut errs);
            errs
        }
        (None, Some(s)) => validate_service_backend(s, path),
        (None, None) => vec![field::invalid_str(
            path,
            "",
            "resource or service backend is required",
        )],
    }
}

fn validate_service_backend(s: &Value, path: &Path) -> Vec<Cause> {
    let sp = path.child("service");
    let mut errs = Vec::new();
    let name = str_of(s, "name");
    if name.is_empty() {
        errs.push(field::required(&sp.child("name"), ""));
    } else {
        let msgs = check_name(NameRule::Dns1035, name, false);
        errs.extend(invalid_each(&sp.child("name"), name, msgs));
    }
    let port = sub(s, "port");
    let port_name = str_of(port, "name");
    let number = int(port, "number").unwrap_or(0);
    match (port_name.is_empty(), number == 0) {
        (false, false) => errs.push(field::invalid_str(
            path,
            "",
            "cannot set both port name & port number",
        )),
        (false, true) => {
            let msgs = names::is_valid_port_name(port_name);
            errs.extend(invalid_each(&sp.at(&["port", "name"]), port_name, msgs));
        }
        (true, false) => {
            let np = sp.at(&["port", "number"]);
            for msg in names::is_valid_port_num(number) {
                errs.push(field::invalid_int(&np, number, &msg));
            }
        }
        (true, true) => errs.push(field::required(path, "port name or number is required")),
    }
    errs
}

/// A `TypedLocalObjectReference` or IngressClass parameters: `apiGroup`, `kind`, `name`.
fn validate_typed_ref(r: &Value, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(group) = opt_str(r, "apiGroup") {
        let msgs = names::is_dns1123_subdomain(group);
        errs.extend(invalid_each(&path.child("apiGroup"), group, msgs));
    }
    validate_cross_version_ref(r, path, errs);
}

fn secret_name_errors(name: &str) -> Vec<String> {
    if name.is_empty() {
        return Vec::new();
    }
    check_name(NameRule::Subdomain, name, false)
}

fn validate_tls(tls: &Value, path: &Path, opts: IngressOptions) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, host) in arr(tls, "hosts").iter().enumerate() {
        let host = host.as_str().unwrap_or_default();
        errs.extend(invalid_each(
            &path.child("hosts").index(i),
            host,
            host_errors(host),
        ));
    }
    if !opts.allow_invalid_secret_name {
        let name = str_of(tls, "secretName");
        errs.extend(invalid_each(
            &path.child("secretName"),
            name,
            secret_name_errors(name),
        ));
    }
    errs
}

/// `ValidateIngressStatusUpdate` beyond ObjectMeta: the load balancer's addresses.
pub fn validate_ingress_status(ing: &Value) -> Vec<Cause> {
    let path = Path::new("status").at(&["loadBalancer", "ingress"]);
    let mut errs = Vec::new();
    let lb = sub(sub(ing, "status"), "loadBalancer");
    for (i, entry) in arr(lb, "ingress").iter().enumerate() {
        let p = path.index(i);
        let ip = str_of(entry, "ip");
        if !ip.is_empty() && !names::is_valid_ip(ip) {
            errs.push(field::invalid_str(&p.child("ip"), ip, names::IP_ERROR));
        }
        let hostname = str_of(entry, "hostname");
        if !hostname.is_empty() {
            let hp = p.child("hostname");
            errs.extend(invalid_each(
                &hp,
                hostname,
                names::is_dns1123_subdomain(hostname),
            ));
            if names::is_valid_ip(hostname) {
                errs.push(field::invalid_str(&hp, hostname, NOT_AN_IP));
            }
        }
    }
    errs
}

/// `ValidateIngressClass`, and on update `ValidateIngressClassUpdate` (immutable controller).
pub fn validate_ingress_class(ic: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = sub(ic, "spec");
    let path = Path::new("spec");
    let cp = path.child("controller");
    let controller = str_of(spec, "controller");
    let mut errs = Vec::new();
    if let Some(old) = old {
        if controller != str_of(sub(old, "spec"), "controller") {
            errs.push(field::immutable(&cp, &json!(controller)));
        }
    }
    if controller.is_empty() {
        errs.push(field::required(&cp, ""));
    } else {
        if controller.len() > MAX_CONTROLLER_LEN {
            errs.push(field::too_long(&cp, MAX_CONTROLLER_LEN));
        }
        errs.extend(domain_prefixed_path(&cp, controller));
    }
    if let Some(params) = present(spec, "parameters") {
        validate_parameters(params, &path.child("parameters"), &mut errs);
    }
    errs
}

/// Upstream's `IsDomainPrefixedPath` (e.g. `acme.io/foo`) for a non-empty value.
fn domain_prefixed_path(path: &Path, v: &str) -> Vec<Cause> {
    let Some((host, rest)) = v
        .split_once('/')
        .filter(|(h, r)| !h.is_empty() && !r.is_empty())
    else {
        return vec![field::invalid_str(
            path,
            v,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )];
    };
    let mut errs = invalid_each(path, host, names::is_dns1123_subdomain(host));
    let http_path_char = |c: u8| c.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&c);
    if !rest.bytes().all(http_path_char) {
        let msg = names::regex_error("Invalid path", HTTP_PATH_FMT, &[]);
        errs.push(field::invalid_str(path, rest, &msg));
    }
    errs
}

fn validate_parameters(p: &Value, path: &Path, errs: &mut Vec<Cause>) {
    validate_typed_ref(p, path, errs);
    let Some(scope) = opt_str(p, "scope") else {
        errs.push(field::required(&path.child("scope"), ""));
        return;
    };
    let np = path.child("namespace");
    match (scope, opt_str(p, "namespace")) {
        (s, _) if !PARAMETER_SCOPES.contains(&s) => errs.push(field::not_supported_str(
            &path.child("scope"),
            s,
            PARAMETER_SCOPES,
        )),
        ("Namespace", None) => errs.push(field::required(
            &np,
            "`parameters.scope` is set to 'Namespace'",
        )),
        ("Namespace", Some(ns)) => errs.extend(invalid_each(
            &np,
            ns,
            check_name(NameRule::Label, ns, false),
        )),
        ("Cluster", Some(_)) => errs.push(field::forbidden(
            &np,
            "`parameters.scope` is set to 'Cluster'",
        )),
        _ => {}
    }
}

/// `ValidateNetworkPolicy` (and its update, which checks the same spec) beyond ObjectMeta.
pub fn validate_network_policy(np: &Value) -> Vec<Cause> {
    let spec = sub(np, "spec");
    let path = Path::new("spec");
    let mut errs = validate_label_selector(sub(spec, "podSelector"), &path.child("podSelector"));
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in arr(spec, direction).iter().enumerate() {
            let rp = path.child(direction).index(i);
            for (j, port) in arr(rule, "ports").iter().enumerate() {
                validate_policy_port(port, &rp.child("ports").index(j), &mut errs);
            }
            for (j, peer) in arr(rule, peers).iter().enumerate() {
                validate_peer(peer, &rp.child(peers).index(j), &mut errs);
            }
        }
    }
    validate_policy_types(spec, &path.child("policyTypes"), &mut errs);
    errs
}

fn validate_policy_port(port: &Value, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(proto) = opt_str(port, "protocol") {
        if !PROTOCOLS.contains(&proto) {
            errs.push(field::not_supported_str(
                &path.child("protocol"),
                proto,
                PROTOCOLS,
            ));
        }
    }
    let (pp, ep) = (path.child("port"), path.child("endPort"));
    let end = int(port, "endPort");
    match present(port, "port") {
        Some(Value::String(name)) => {
            if let Some(e) = end {
                errs.push(field::invalid_int(
                    &ep,
                    e,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            errs.extend(invalid_each(&pp, name, names::is_valid_port_name(name)));
        }
        Some(n) => {
            let n = n.as_i64().unwrap_or(0);
            for msg in names::is_valid_port_num(n) {
                errs.push(field::invalid_int(&pp, n, &msg));
            }
            if let Some(e) = end {
                if e < n {
                    errs.push(field::invalid_int(
                        &ep,
                        e,
                        "must be greater than or equal to `port`",
                    ));
                }
                for msg in names::is_valid_port_num(e) {
                    errs.push(field::invalid_int(&ep, e, &msg));
                }
            }
        }
        None => {
            if let Some(e) = end {
                errs.push(field::invalid_int(
                    &ep,
                    e,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

fn validate_peer(peer: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let mut peers = 0;
    for key in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = present(peer, key) {
            peers += 1;
            errs.extend(validate_label_selector(sel, &path.child(key)));
        }
    }
    let ip_block = present(peer, "ipBlock");
    if let Some(block) = ip_block {
        peers += 1;
        validate_ip_block(block, &path.child("ipBlock"), errs);
    }
    if peers == 0 {
        errs.push(field::required(path, "must specify a peer"));
    } else if peers > 1 && ip_block.is_some() {
        errs.push(field::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
}

/// Whether `inner` is a strictly smaller network inside `outer` (same family).
fn strict_subset(outer: (std::net::IpAddr, u8), inner: (std::net::IpAddr, u8)) -> bool {
    use std::net::IpAddr;
    let bits = |a: IpAddr| match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32u32),
        IpAddr::V6(v) => (u128::from(v), 128u32),
    };
    let ((o, width), (i, inner_width)) = (bits(outer.0), bits(inner.0));
    if width != inner_width || inner.1 <= outer.1 {
        return false;
    }
    let shift = width - u32::from(outer.1);
    let network = |x: u128| x.checked_shr(shift).unwrap_or(0);
    network(o) == network(i)
}

fn validate_ip_block(block: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let cidr = str_of(block, "cidr");
    let cp = path.child("cidr");
    if cidr.is_empty() {
        errs.push(field::required(&cp, ""));
        return;
    }
    let Some(net) = names::parse_cidr(cidr) else {
        errs.push(field::invalid_str(&cp, cidr, names::CIDR_ERROR));
        return;
    };
    for (i, except) in arr(block, "except").iter().enumerate() {
        let except = except.as_str().unwrap_or_default();
        let xp = path.child("except").index(i);
        match names::parse_cidr(except) {
            None => errs.push(field::invalid_str(&xp, except, names::CIDR_ERROR)),
            Some(x) if !strict_subset(net, x) => errs.push(field::invalid_str(
                &xp,
                except,
                "must be a strict subset of `cidr`",
            )),
            Some(_) => {}
        }
    }
}

fn validate_policy_types(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let types = arr(spec, "policyTypes");
    if types.len() > POLICY_TYPES.len() {
        let shown = field::go_string_slice("networking.PolicyType", spec.get("policyTypes"));
        errs.push(field::invalid_raw(
            path,
            &shown,
            "may not specify more than two policyTypes",
        ));
        return;
    }
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or_default();
        if !POLICY_TYPES.contains(&t) {
            errs.push(field::not_supported_str(&path.index(i), t, POLICY_TYPES));
        }
    }
}

#[cfg(test)]
mod tests;
