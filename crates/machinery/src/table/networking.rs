//! `kubectl get` columns of `networking.k8s.io/v1`, as upstream's printers: Ingress,
//! IngressClass and NetworkPolicy.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{age_col, at, created, list, name_col, s, text, Column};
use crate::selector::format_label_selector;

/// Upstream takes this from extensions/v1beta1's NetworkPolicySpec, which k8s-openapi lacks.
const POD_SELECTOR_DOC: &str = "Selects the pods to which this NetworkPolicy object applies. The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods. In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace.";

/// The columns after Name, or `None` for a kind not printed here.
pub(super) fn columns(kind: &str) -> Option<Vec<Column>> {
    let cols = match kind {
        "Ingress" => vec![
            s("Class", "The name of the IngressClass resource that should be used for additional configuration"),
            s("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
            s("Address", "Address is a list containing ingress points for the load-balancer"),
            s("Ports", "Ports of TLS configurations that open"),
            age_col(),
        ],
        "IngressClass" => vec![
            s("Controller", "Controller that is responsible for handling this class"),
            s("Parameters", "A reference to a resource with additional parameters"),
            age_col(),
        ],
        "NetworkPolicy" => vec![s("Pod-Selector", POD_SELECTOR_DOC), age_col()],
        _ => return None,
    };
    let mut all = vec![name_col()];
    all.extend(cols);
    Some(all)
}

/// The cells of one row, or `None` for a kind not printed here.
pub(super) fn row(kind: &str, obj: &Value, now: OffsetDateTime) -> Option<Vec<Value>> {
    let name = json!(text(obj, "metadata.name"));
    let cells = match kind {
        "Ingress" => {
            let class = at(obj, "spec.ingressClassName")
                .as_str()
                .unwrap_or("<none>")
                .to_string();
            vec![
                name,
                json!(class),
                json!(hosts(list(obj, "spec.rules"))),
                json!(addresses(list(obj, "status.loadBalancer.ingress"))),
                json!(ports(list(obj, "spec.tls"))),
                created(obj, now),
            ]
        }
        "IngressClass" => vec![
            name,
            json!(text(obj, "spec.controller")),
            json!(parameters(at(obj, "spec.parameters"))),
            created(obj, now),
        ],
        "NetworkPolicy" => vec![
            name,
            json!(format_label_selector(at(obj, "spec.podSelector"))),
            created(obj, now),
        ],
        _ => return None,
    };
    Some(cells)
}

/// `formatHosts`: the first three hosts named, `*` when no rule names one; once three are
/// taken, any further rule counts as more (upstream's count: rules beyond the third).
fn hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut named = Vec::new();
    let mut more = false;
    for rule in rules {
        if named.len() == MAX {
            more = true;
            break;
        }
        let host = text(rule, "host");
        if !host.is_empty() {
            named.push(host);
        }
    }
    if named.is_empty() {
        return "*".into();
    }
    let joined = named.join(",");
    if more {
        format!("{joined} + {} more...", rules.len().saturating_sub(MAX))
    } else {
        joined
    }
}

/// `ingressLoadBalancerStatusStringer` as the server prints it (wide: never cut): each
/// entry's IP, else its hostname, sorted and without repeats.
fn addresses(ingress: &[Value]) -> String {
    let set: BTreeSet<String> = ingress
        .iter()
        .filter_map(|i| {
            let ip = text(i, "ip");
            let shown = if ip.is_empty() {
                text(i, "hostname")
            } else {
                ip
            };
            Some(shown).filter(|s| !s.is_empty())
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// `formatPorts`: 443 joins 80 once any TLS section exists.
fn ports(tls: &[Value]) -> &'static str {
    if tls.is_empty() {
        "80"
    } else {
        "80, 443"
    }
}

/// `Kind.apiGroup/name`, `<none>` without parameters.
fn parameters(p: &Value) -> String {
    if !p.is_object() {
        return "<none>".into();
    }
    let mut out = text(p, "kind");
    if let Some(group) = p.get("apiGroup").and_then(Value::as_str) {
        out = format!("{out}.{group}");
    }
    format!("{out}/{}", text(p, "name"))
}

#[cfg(test)]
mod tests {
    use super::super::{columns, row};
    use crate::Registry;
    use serde_json::{json, Value};
    use time::macros::datetime;
    use time::OffsetDateTime;

    const NOW: OffsetDateTime = datetime!(2024-01-10 12:00:00 UTC);

    fn table(kind: &str, obj: Value) -> (Vec<String>, Vec<Value>) {
        let info = Registry::builtin()
            .by_kind("networking.k8s.io/v1", kind)
            .cloned()
            .unwrap_or_else(|| panic!("{kind}"));
        let names = columns(&info).iter().map(|c| c.name.clone()).collect();
        (names, row(&info, &obj, NOW))
    }

    #[test]
    fn ingress_rows() {
        let meta = json!({"name": "web", "creationTimestamp": "2024-01-10T11:59:00Z"});
        let (cols, cells) = table(
            "Ingress",
            json!({"metadata": meta, "spec": {"defaultBackend": {"service": {"name": "s"}}}}),
        );
        assert_eq!(cols, ["Name", "Class", "Hosts", "Address", "Ports", "Age"]);
        assert_eq!(
            cells,
            [
                json!("web"),
                json!("<none>"),
                json!("*"),
                json!(""),
                json!("80"),
                json!("60s")
            ]
        );
        let (_, cells) = table(
            "Ingress",
            json!({"metadata": meta, "spec": {"ingressClassName": "nginx",
                "rules": [{"host": "a.example.com"}, {}, {"host": "b.example.com"}],
                "tls": [{"hosts": ["a.example.com"]}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}, {"hostname": "lb.example.com"}, {"ip": "10.0.0.2"}]}}}),
        );
        assert_eq!(
            cells,
            [
                json!("web"),
                json!("nginx"),
                json!("a.example.com,b.example.com"),
                json!("10.0.0.2,lb.example.com"),
                json!("80, 443"),
                json!("60s")
            ]
        );
        let rules: Vec<Value> = (0..5)
            .map(|i| json!({"host": format!("h{i}.example.com")}))
            .collect();
        let (_, cells) = table(
            "Ingress",
            json!({"metadata": meta, "spec": {"rules": rules}}),
        );
        assert_eq!(
            cells[2],
            "h0.example.com,h1.example.com,h2.example.com + 2 more..."
        );
        // Rules without a host take no place among the three.
        let rules = json!([{"host": "a.io"}, {}, {"host": "b.io"}, {"host": "c.io"}]);
        let (_, cells) = table(
            "Ingress",
            json!({"metadata": meta, "spec": {"rules": rules}}),
        );
        assert_eq!(cells[2], "a.io,b.io,c.io");
    }

    #[test]
    fn ingress_class_rows() {
        let (cols, cells) = table(
            "IngressClass",
            json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
        );
        assert_eq!(cols, ["Name", "Controller", "Parameters", "Age"]);
        assert_eq!(
            cells,
            [
                json!("nginx"),
                json!("k8s.io/ingress-nginx"),
                json!("<none>"),
                json!("<unknown>")
            ]
        );
        let (_, cells) = table(
            "IngressClass",
            json!({"metadata": {"name": "x"}, "spec": {"controller": "example.com/c",
                "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb", "scope": "Cluster"}}}),
        );
        assert_eq!(cells[2], "IngressParameters.k8s.example.com/external-lb");
        let (_, cells) = table(
            "IngressClass",
            json!({"metadata": {"name": "x"}, "spec": {"controller": "example.com/c",
                "parameters": {"kind": "ConfigMap", "name": "cfg"}}}),
        );
        assert_eq!(cells[2], "ConfigMap/cfg");
    }

    #[test]
    fn network_policy_rows() {
        let (cols, cells) = table(
            "NetworkPolicy",
            json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}),
        );
        assert_eq!(cols, ["Name", "Pod-Selector", "Age"]);
        assert_eq!(cells, [json!("deny"), json!("<none>"), json!("<unknown>")]);
        let (_, cells) = table(
            "NetworkPolicy",
            json!({"metadata": {"name": "db"}, "spec": {"podSelector": {"matchLabels": {"app": "db"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}}),
        );
        assert_eq!(cells[1], "app=db,tier in (a,b)");
    }
}
