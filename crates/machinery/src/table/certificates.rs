//! `kubectl get` columns of `certificates.k8s.io/v1` CertificateSigningRequests, as
//! upstream's printer: Name, Age, SignerName, Requestor, RequestedDuration and Condition
//! (`Pending`, `Approved`, `Denied`, then `,Failed` and `,Issued` as they apply).

use k8s_openapi::api::certificates::v1 as certificates;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{age_col, at, created, doc, human_duration, list, name_col, s, text, Column};

/// The columns, or `None` for a kind not printed here.
pub(super) fn columns(kind: &str) -> Option<Vec<Column>> {
    if kind != "CertificateSigningRequest" {
        return None;
    }
    type Spec = certificates::CertificateSigningRequestSpec;
    Some(vec![
        name_col(),
        age_col(),
        s("SignerName", doc::<Spec>("signerName")),
        // upstream describes the requestor with the request's doc
        s("Requestor", doc::<Spec>("request")),
        s("RequestedDuration", doc::<Spec>("expirationSeconds")),
        s(
            "Condition",
            doc::<certificates::CertificateSigningRequestStatus>("conditions"),
        ),
    ])
}

/// The cells of one row, or `None` for a kind not printed here.
pub(super) fn row(kind: &str, obj: &Value, now: OffsetDateTime) -> Option<Vec<Value>> {
    if kind != "CertificateSigningRequest" {
        return None;
    }
    let signer = Some(text(obj, "spec.signerName"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into());
    let duration = at(obj, "spec.expirationSeconds")
        .as_i64()
        .map(|s| human_duration(time::Duration::seconds(s)))
        .unwrap_or_else(|| "<none>".into());
    Some(vec![
        json!(text(obj, "metadata.name")),
        created(obj, now),
        json!(signer),
        json!(text(obj, "spec.username")),
        json!(duration),
        json!(condition(obj)),
    ])
}

/// `extractCSRStatus`: Denied over Approved over Pending, then Failed and Issued.
pub fn condition(obj: &Value) -> String {
    let has = |t: &str| {
        list(obj, "status.conditions")
            .iter()
            .any(|c| c.get("type").and_then(Value::as_str) == Some(t))
    };
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if !text(obj, "status.certificate").is_empty() {
        out.push_str(",Issued");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{columns, row};
    use crate::Registry;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn csr_rows() {
        let info = Registry::builtin()
            .by_kind("certificates.k8s.io/v1", "CertificateSigningRequest")
            .cloned()
            .expect("csr served");
        let names: Vec<String> = columns(&info).iter().map(|c| c.name.clone()).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Age",
                "SignerName",
                "Requestor",
                "RequestedDuration",
                "Condition"
            ]
        );
        assert!(columns(&info).iter().all(|c| !c.description.is_empty()));
        let now = datetime!(2024-01-10 12:00:00 UTC);
        let mut csr = json!({"metadata": {"name": "c", "creationTimestamp": "2024-01-10T11:59:00Z"},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client", "username": "admin"}});
        assert_eq!(
            row(&info, &csr, now),
            [
                json!("c"),
                json!("60s"),
                json!("kubernetes.io/kube-apiserver-client"),
                json!("admin"),
                json!("<none>"),
                json!("Pending")
            ]
        );
        csr["spec"]["expirationSeconds"] = json!(86400);
        csr["status"] =
            json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"});
        let cells = row(&info, &csr, now);
        assert_eq!(
            (&cells[4], &cells[5]),
            (&json!("24h"), &json!("Approved,Issued"))
        );
        csr["status"] =
            json!({"conditions": [{"type": "Approved"}, {"type": "Denied"}, {"type": "Failed"}]});
        assert_eq!(row(&info, &csr, now)[5], json!("Denied,Failed"));
    }
}
