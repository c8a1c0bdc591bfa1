use serde_json::{json, Value};

use crate::status::Cause;
use crate::validation::names;
use crate::validation::testutil::{create, info, update};

const NET: &str = "networking.k8s.io/v1";

/// `base` with the value at JSON pointer `at` replaced (parents created as objects).
fn with(mut base: Value, at: &str, value: Value) -> Value {
    let mut cur = &mut base;
    for part in at.trim_start_matches('/').split('/') {
        if cur.is_array() {
            let i: usize = part.parse().expect("index");
            cur = &mut cur[i];
        } else {
            if cur.get(part).is_none() {
                cur[part] = json!({});
            }
            cur = &mut cur[part];
        }
    }
    *cur = value;
    base
}

fn subdomain_err(field: &str, value: &str) -> String {
    let msg = &names::is_dns1123_subdomain(value)[0];
    format!("{field}: Invalid value: \"{value}\": {msg}")
}

fn wildcard_err(field: &str, value: &str) -> String {
    format!(
        "{field}: Invalid value: \"{value}\": a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    )
}

fn ingress() -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
    "ingressClassName": "nginx",
    "tls": [{"hosts": ["*.example.com", "example.com"], "secretName": "example-tls"}],
    "rules": [
        {"host": "*.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "/api", "pathType": "Exact",
             "backend": {"service": {"name": "api", "port": {"name": "http"}}}},
            {"pathType": "ImplementationSpecific",
             "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "static"}}}
        ]}},
        {"host": "example.com"}
    ]}})
}

fn ing(at: &str, value: Value) -> Vec<String> {
    create(NET, "Ingress", with(ingress(), at, value))
}

const PATH0: &str = "spec.rules[0].http.paths[0]";

#[test]
fn a_good_ingress_passes() {
    assert_eq!(create(NET, "Ingress", ingress()), Vec::<String>::new());
    let only_backend = json!({"metadata": {"name": "d", "namespace": "default"},
        "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 8080}}}}});
    assert_eq!(create(NET, "Ingress", only_backend), Vec::<String>::new());
}

#[test]
fn ingress_needs_rules_or_a_default_backend() {
    let base = json!({"metadata": {"name": "web", "namespace": "default"}});
    assert_eq!(
        create(NET, "Ingress", base.clone()),
        ["spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified"]
    );
    assert_eq!(
        create(NET, "Ingress", with(base, "/spec/rules", json!([]))),
        ["spec: Invalid value: []networking.IngressRule{}: either `defaultBackend` or `rules` must be specified"]
    );
}

#[test]
fn ingress_rule_hosts() {
    assert_eq!(
        ing("/spec/rules/0/host", json!("1.2.3.4")),
        ["spec.rules[0].host: Invalid value: \"1.2.3.4\": must be a DNS name, not an IP address"]
    );
    assert_eq!(
        ing("/spec/rules/0/host", json!("foo.*.example.com")),
        [wildcard_err("spec.rules[0].host", "foo.*.example.com")]
    );
    assert_eq!(
        ing("/spec/rules/1/host", json!("Bad_Host")),
        [subdomain_err("spec.rules[1].host", "Bad_Host")]
    );
}

#[test]
fn ingress_paths() {
    assert_eq!(
        ing("/spec/rules/0/http/paths", json!([])),
        ["spec.rules[0].http.paths: Required value"]
    );
    let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
    let path = |p: Value| ing("/spec/rules/0/http/paths/0", p);
    assert_eq!(
        path(json!({"path": "/", "backend": backend})),
        [format!(
            "{PATH0}.pathType: Required value: pathType must be specified"
        )]
    );
    assert_eq!(
        path(json!({"path": "/", "pathType": "Regex", "backend": backend})),
        [format!("{PATH0}.pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"")]
    );
    assert_eq!(
        path(json!({"path": "foo", "pathType": "Prefix", "backend": backend})),
        [format!(
            "{PATH0}.path: Invalid value: \"foo\": must be an absolute path"
        )]
    );
    assert_eq!(
        path(json!({"pathType": "Exact", "backend": backend})),
        [format!(
            "{PATH0}.path: Invalid value: \"\": must be an absolute path"
        )]
    );
    assert_eq!(
        path(json!({"path": "/a//b/%2F/..", "pathType": "Exact", "backend": backend})),
        [
            format!("{PATH0}.path: Invalid value: \"/a//b/%2F/..\": must not contain '//'"),
            format!("{PATH0}.path: Invalid value: \"/a//b/%2F/..\": must not contain '%2F'"),
            format!("{PATH0}.path: Invalid value: \"/a//b/%2F/..\": cannot end with '/..'"),
        ]
    );
    assert_eq!(
        path(json!({"path": "/x/./y/.", "pathType": "Prefix", "backend": backend})),
        [
            format!("{PATH0}.path: Invalid value: \"/x/./y/.\": must not contain '/./'"),
            format!("{PATH0}.path: Invalid value: \"/x/./y/.\": cannot end with '/.'"),
        ]
    );
    // ImplementationSpecific paths only need to be absolute, and may be empty.
    assert_eq!(
        path(json!({"path": "/a//b", "pathType": "ImplementationSpecific", "backend": backend})),
        Vec::<String>::new()
    );
    assert_eq!(
        path(json!({"path": "a", "pathType": "ImplementationSpecific", "backend": backend})),
        [format!(
            "{PATH0}.path: Invalid value: \"a\": must be an absolute path"
        )]
    );
}

#[test]
fn ingress_backends() {
    let b = |backend: Value| ing("/spec/rules/0/http/paths/0/backend", backend);
    let bp = format!("{PATH0}.backend");
    let svc = json!({"name": "web", "port": {"number": 80}});
    let res = json!({"kind": "StorageBucket", "name": "static"});
    assert_eq!(
        b(json!({"service": svc, "resource": res})),
        [format!(
            "{bp}: Invalid value: \"\": cannot set both resource and service backends"
        )]
    );
    assert_eq!(
        b(json!({})),
        [format!(
            "{bp}: Invalid value: \"\": resource or service backend is required"
        )]
    );
    assert_eq!(
        b(json!({"service": {"name": "web", "port": {"name": "http", "number": 80}}})),
        [format!(
            "{bp}: Invalid value: \"\": cannot set both port name & port number"
        )]
    );
    assert_eq!(
        b(json!({"service": {"name": "web"}})),
        [format!(
            "{bp}: Required value: port name or number is required"
        )]
    );
    assert_eq!(
        b(json!({"service": {"port": {"number": 80}}})),
        [format!("{bp}.service.name: Required value")]
    );
    let dns1035 = &names::is_dns1035_label("1web")[0];
    assert_eq!(
        b(json!({"service": {"name": "1web", "port": {"number": 80}}})),
        [format!(
            "{bp}.service.name: Invalid value: \"1web\": {dns1035}"
        )]
    );
    assert_eq!(
        b(json!({"service": {"name": "web", "port": {"number": 70000}}})),
        [format!("{bp}.service.port.number: Invalid value: 70000: must be between 1 and 65535, inclusive")]
    );
    assert_eq!(
        b(json!({"service": {"name": "web", "port": {"name": "HTTP"}}})),
        [
            format!("{bp}.service.port.name: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
            format!("{bp}.service.port.name: Invalid value: \"HTTP\": must contain at least one letter (a-z)"),
        ]
    );
    let e = create(
        NET,
        "Ingress",
        json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"defaultBackend": {"resource": {"apiGroup": "Bad_Group", "kind": "", "name": "a/b"}}}}),
    );
    assert_eq!(
        e,
        [
            subdomain_err("spec.defaultBackend.resource.apiGroup", "Bad_Group"),
            "spec.defaultBackend.resource.kind: Required value".to_string(),
            "spec.defaultBackend.resource.name: Invalid value: \"a/b\": may not contain '/'"
                .to_string(),
        ]
    );
}

#[test]
fn ingress_tls_class_and_annotation() {
    assert_eq!(
        ing("/spec/tls/0/hosts/1", json!("*.*.example.com")),
        [wildcard_err("spec.tls[0].hosts[1]", "*.*.example.com")]
    );
    assert_eq!(
        ing("/spec/tls/0/secretName", json!("Bad_Secret")),
        [subdomain_err("spec.tls[0].secretName", "Bad_Secret")]
    );
    assert_eq!(
        ing("/spec/ingressClassName", json!("Bad_Class")),
        [subdomain_err("spec.ingressClassName", "Bad_Class")]
    );
    let annotated = with(
        ingress(),
        "/metadata/annotations",
        json!({"kubernetes.io/ingress.class": "other"}),
    );
    assert_eq!(
        create(NET, "Ingress", annotated.clone()),
        ["annotations.kubernetes.io/ingress.class: Invalid value: \"other\": must match `ingressClassName` when both are specified"]
    );
    // Only checked on create.
    let old = with(ingress(), "/metadata/resourceVersion", json!("1"));
    let new = with(annotated, "/metadata/resourceVersion", json!("1"));
    assert_eq!(update(NET, "Ingress", new, old), Vec::<String>::new());
    // A matching annotation is fine.
    let same = with(
        ingress(),
        "/metadata/annotations",
        json!({"kubernetes.io/ingress.class": "nginx"}),
    );
    assert_eq!(create(NET, "Ingress", same), Vec::<String>::new());
}

#[test]
fn ingress_updates_keep_what_was_stored() {
    let stored = |v: Value| with(v, "/metadata/resourceVersion", json!("1"));
    // An invalid secret name already stored may stay; a new one may not.
    let bad_secret = stored(with(
        ingress(),
        "/spec/tls/0/secretName",
        json!("Bad_Secret"),
    ));
    assert_eq!(
        update(NET, "Ingress", bad_secret.clone(), bad_secret.clone()),
        Vec::<String>::new()
    );
    assert_eq!(
        update(NET, "Ingress", bad_secret, stored(ingress())),
        [subdomain_err("spec.tls[0].secretName", "Bad_Secret")]
    );
    // Likewise an invalid rule under a wildcard host.
    let bad_rule = stored(with(ingress(), "/spec/rules/0/http/paths", json!([])));
    assert_eq!(
        update(NET, "Ingress", bad_rule.clone(), bad_rule.clone()),
        Vec::<String>::new()
    );
    assert_eq!(
        update(NET, "Ingress", bad_rule, stored(ingress())),
        ["spec.rules[0].http.paths: Required value"]
    );
}

#[test]
fn ingress_status_addresses() {
    let info = info(NET, "Ingress");
    let old = with(ingress(), "/metadata/resourceVersion", json!("1"));
    let new = with(
        old.clone(),
        "/status/loadBalancer/ingress",
        json!([{"ip": "300.1.1.1"}, {"hostname": "10.0.0.1"}, {"hostname": "Bad_Host"},
               {"ip": "10.0.0.2", "hostname": "lb.example.com", "ports": [{"port": 80, "protocol": "TCP"}]}]),
    );
    let errs: Vec<String> = crate::validation::validate_status_update(&info, &new, &old)
        .iter()
        .map(Cause::describe)
        .collect();
    assert_eq!(
        errs,
        [
            "status.loadBalancer.ingress[0].ip: Invalid value: \"300.1.1.1\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string(),
            "status.loadBalancer.ingress[1].hostname: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address".to_string(),
            subdomain_err("status.loadBalancer.ingress[2].hostname", "Bad_Host"),
        ]
    );
}

fn ingress_class(spec: Value) -> Value {
    json!({"metadata": {"name": "nginx"}, "spec": spec})
}

fn ic(spec: Value) -> Vec<String> {
    create(NET, "IngressClass", ingress_class(spec))
}

#[test]
fn ingress_class_controller() {
    assert_eq!(
        ic(json!({"controller": "k8s.io/ingress-nginx"})),
        Vec::<String>::new()
    );
    assert_eq!(ic(json!({})), ["spec.controller: Required value"]);
    assert_eq!(
        ic(json!({"controller": "nginx"})),
        ["spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")"]
    );
    assert_eq!(
        ic(json!({"controller": "Example.com/x y"})),
        [
            subdomain_err("spec.controller", "Example.com"),
            "spec.controller: Invalid value: \"x y\": Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')".to_string(),
        ]
    );
    let long = format!("example.com/{}", "a".repeat(250));
    assert_eq!(
        ic(json!({ "controller": long })),
        ["spec.controller: Too long: may not be more than 250 bytes"]
    );
    let old = with(
        ingress_class(json!({"controller": "example.com/a"})),
        "/metadata/resourceVersion",
        json!("1"),
    );
    let new = with(old.clone(), "/spec/controller", json!("example.com/b"));
    assert_eq!(
        update(NET, "IngressClass", new, old.clone()),
        ["spec.controller: Invalid value: \"example.com/b\": field is immutable"]
    );
    let relabelled = with(old.clone(), "/metadata/labels", json!({"a": "b"}));
    assert_eq!(
        update(NET, "IngressClass", relabelled, old),
        Vec::<String>::new()
    );
}

#[test]
fn ingress_class_parameters() {
    let p = |params: Value| ic(json!({"controller": "example.com/c", "parameters": params}));
    assert_eq!(
        p(json!({"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "lb"})),
        Vec::<String>::new()
    );
    assert_eq!(
        p(
            json!({"kind": "IngressParameters", "name": "lb", "scope": "Namespace", "namespace": "infra"})
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        p(json!({"apiGroup": "", "kind": "", "name": "a/b"})),
        [
            subdomain_err("spec.parameters.apiGroup", ""),
            "spec.parameters.kind: Required value".to_string(),
            "spec.parameters.name: Invalid value: \"a/b\": may not contain '/'".to_string(),
        ]
    );
    assert_eq!(
        p(json!({"kind": "K", "name": "n", "scope": "Namespace"})),
        ["spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'"]
    );
    let label = &names::is_dns1123_label("Bad_NS")[0];
    assert_eq!(
        p(json!({"kind": "K", "name": "n", "scope": "Namespace", "namespace": "Bad_NS"})),
        [format!(
            "spec.parameters.namespace: Invalid value: \"Bad_NS\": {label}"
        )]
    );
    assert_eq!(
        p(json!({"kind": "K", "name": "n", "scope": "Cluster", "namespace": "infra"})),
        ["spec.parameters.namespace: Forbidden: `parameters.scope` is set to 'Cluster'"]
    );
    assert_eq!(
        p(json!({"kind": "K", "name": "n", "scope": "Global"})),
        ["spec.parameters.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespace\""]
    );
}

fn network_policy() -> Value {
    json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{
            "from": [
                {"podSelector": {}},
                {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"app": "web"}}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}
            ],
            "ports": [{"port": 5432}, {"port": "postgres"}, {"port": 32000, "endPort": 32768}, {"protocol": "SCTP"}]
        }],
        "egress": [{"to": [{"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}}]}],
        "policyTypes": ["Ingress", "Egress"]}})
}

fn np(at: &str, value: Value) -> Vec<String> {
    create(NET, "NetworkPolicy", with(network_policy(), at, value))
}

#[test]
fn a_good_network_policy_passes() {
    assert_eq!(
        create(NET, "NetworkPolicy", network_policy()),
        Vec::<String>::new()
    );
    let deny_all = json!({"metadata": {"name": "deny", "namespace": "default"}, "spec": {}});
    assert_eq!(create(NET, "NetworkPolicy", deny_all), Vec::<String>::new());
}

#[test]
fn network_policy_ports() {
    let port = |p: Value| np("/spec/ingress/0/ports", json!([p]));
    let pp = "spec.ingress[0].ports[0]";
    assert_eq!(
        port(json!({"protocol": "ICMP"})),
        [format!("{pp}.protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"")]
    );
    assert_eq!(
        port(json!({"port": 0})),
        [format!(
            "{pp}.port: Invalid value: 0: must be between 1 and 65535, inclusive"
        )]
    );
    assert_eq!(
        port(json!({"port": 100, "endPort": 50})),
        [format!(
            "{pp}.endPort: Invalid value: 50: must be greater than or equal to `port`"
        )]
    );
    assert_eq!(
        port(json!({"port": 80, "endPort": 70000})),
        [format!(
            "{pp}.endPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
        )]
    );
    assert_eq!(
        port(json!({"port": "http", "endPort": 90})),
        [format!(
            "{pp}.endPort: Invalid value: 90: may not be specified when `port` is non-numeric"
        )]
    );
    assert_eq!(
        port(json!({"endPort": 90})),
        [format!(
            "{pp}.endPort: Invalid value: 90: may not be specified when `port` is not specified"
        )]
    );
    assert_eq!(
        port(json!({"port": "Bad_Name"})),
        [format!("{pp}.port: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")]
    );
}

#[test]
fn network_policy_peers_and_ip_blocks() {
    let peer = |p: Value| np("/spec/ingress/0/from", json!([p]));
    assert_eq!(
        peer(json!({})),
        ["spec.ingress[0].from[0]: Required value: must specify a peer"]
    );
    assert_eq!(
        peer(json!({"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}})),
        ["spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"]
    );
    assert_eq!(
        peer(json!({"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Foo"}]}})),
        ["spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator: Invalid value: \"Foo\": not a valid selector operator"]
    );
    let block = |b: Value| np("/spec/egress/0/to", json!([{ "ipBlock": b }]));
    let bp = "spec.egress[0].to[0].ipBlock";
    assert_eq!(block(json!({})), [format!("{bp}.cidr: Required value")]);
    assert_eq!(
        block(json!({"cidr": "10.0.0.0/33", "except": ["bogus"]})),
        [format!("{bp}.cidr: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")]
    );
    let e = block(json!({"cidr": "10.0.0.0/16",
        "except": ["10.1.0.0/24", "10.0.0.0/16", "10.0.5.0/24", "bogus", "2001:db8::/64", "10.0.0.0/8"]}));
    let subset = |i: usize, v: &str| {
        format!("{bp}.except[{i}]: Invalid value: \"{v}\": must be a strict subset of `cidr`")
    };
    assert_eq!(
        e,
        [
            subset(0, "10.1.0.0/24"),
            subset(1, "10.0.0.0/16"),
            format!("{bp}.except[3]: Invalid value: \"bogus\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"),
            subset(4, "2001:db8::/64"),
            subset(5, "10.0.0.0/8"),
        ]
    );
}

#[test]
fn network_policy_selector_and_types() {
    assert_eq!(
        np("/spec/podSelector", json!({"matchExpressions": [{"key": "app", "operator": "In"}]})),
        ["spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"]
    );
    assert_eq!(
        np("/spec/policyTypes", json!(["Ingress", "Egress", "Ingress"])),
        ["spec.policyTypes: Invalid value: []networking.PolicyType{\"Ingress\", \"Egress\", \"Ingress\"}: may not specify more than two policyTypes"]
    );
    assert_eq!(
        np("/spec/policyTypes", json!(["Ingress", "Both"])),
        ["spec.policyTypes[1]: Unsupported value: \"Both\": supported values: \"Ingress\", \"Egress\""]
    );
    // Updates check the same spec.
    let old = with(network_policy(), "/metadata/resourceVersion", json!("1"));
    let new = with(old.clone(), "/spec/ingress/0/ports/0/port", json!(0));
    assert_eq!(
        update(NET, "NetworkPolicy", new, old),
        ["spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"]
    );
}
