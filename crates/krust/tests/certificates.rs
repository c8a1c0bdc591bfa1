//! CertificateSigningRequests, bootstrap tokens and node identities end to end with the
//! real kubectl and curl: `kubectl get csr` columns, `kubectl certificate approve|deny`
//! through the `approval` subresource, upstream's validation errors, bootstrap tokens that
//! may only request certificates, and NodeRestriction for a `system:node:a` client
//! certificate signed by the cluster CA. Keys and requests come from the `openssl` CLI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, ADDONS};
use serde_json::Value;

/// Runs openssl in `dir`, panicking on failure.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh EC key and a PEM certificate request for `subject`, as (key path, csr path).
fn key_and_request(dir: &Path, name: &str, subject: &str) -> (PathBuf, PathBuf) {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            subject,
            "-out",
            &csr,
        ],
    );
    (dir.join(key), dir.join(csr))
}

/// The request file's PEM, base64 (the CSR's `spec.request`).
fn request_b64(dir: &Path, csr: &Path) -> String {
    let csr = csr.to_str().expect("utf-8 path");
    let out = openssl(dir, &["base64", "-A", "-in", csr]);
    String::from_utf8(out).expect("base64").trim().to_string()
}

fn csr_yaml(name: &str, request: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [\"client auth\"]\n  username: someone-else\n  groups: [\"system:masters\"]\n{extra_spec}"
    )
}

/// How a curl request authenticates.
enum Auth<'a> {
    Bearer(&'a str),
    Cert(&'a Path, &'a Path),
}

fn curl(
    s: &Server,
    auth: Auth<'_>,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let (ca, _, _) = s.client_files();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"])
        .arg("--cacert")
        .arg(&ca);
    match auth {
        Auth::Bearer(t) => {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        Auth::Cert(cert, key) => {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
    }
    cmd.args(["-X", method, &format!("{}{path}", s.url)]);
    if let Some((ct, data)) = body {
        cmd.args(["-H", &format!("Content-Type: {ct}"), "--data-binary", data]);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The row of `name` in `kubectl get csr`, split on whitespace.
fn csr_row(s: &Server, name: &str) -> Vec<String> {
    let out = s.kubectl(&["get", "csr", name]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn kubectl_creates_approves_and_denies_csrs() {
    let s = Server::start_disabling(ADDONS, &[]);
    let dir = s.data_dir.clone();
    let admin = s
        .kubectl(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .trim()
        .to_string();
    let mut alice_key = PathBuf::new();
    for name in ["alice", "bob"] {
        let (key, csr) = key_and_request(&dir, name, &format!("/O=devs/CN={name}"));
        if name == "alice" {
            alice_key = key;
        }
        let yaml = csr_yaml(
            name,
            &request_b64(&dir, &csr),
            "  expirationSeconds: 86400\n",
        );
        let out = s.kubectl_ok(common::KUBECTL, &["create", "-f", "-"], Some(&yaml));
        assert!(
            out.contains(&format!(
                "certificatesigningrequest.certificates.k8s.io/{name} created"
            )),
            "{out}"
        );
    }
    // The requester is the authenticated user, whatever the client wrote.
    let row = csr_row(&s, "alice");
    assert_eq!(row[0], "alice");
    assert_eq!(
        row[2..],
        [
            "kubernetes.io/kube-apiserver-client",
            &admin,
            "24h",
            "Pending"
        ]
    );
    let stored = json(&s.kubectl(&["get", "csr", "alice", "-o", "json"]));
    assert_eq!(stored["spec"]["username"], admin.as_str());
    assert!(stored["spec"]["groups"]
        .to_string()
        .contains("system:authenticated"));

    let out = s.kubectl(&["certificate", "approve", "alice"]);
    assert!(
        out.contains("certificatesigningrequest.certificates.k8s.io/alice approved"),
        "{out}"
    );
    // The kubernetes.io/kube-apiserver-client signer issues it, and it logs alice in.
    let issued = common::eventually(std::time::Duration::from_secs(20), || {
        csr_row(&s, "alice")[5] == "Approved,Issued"
    });
    assert!(issued, "{:?}", csr_row(&s, "alice"));
    let cert_b64 = s.kubectl(&[
        "get",
        "csr",
        "alice",
        "-o",
        "jsonpath={.status.certificate}",
    ]);
    use base64::Engine;
    let cert = base64::engine::general_purpose::STANDARD
        .decode(cert_b64.trim())
        .expect("base64 certificate");
    let cert_path = dir.join("alice.crt");
    std::fs::write(&cert_path, cert).expect("write cert");
    let alice_kubeconfig = dir.join("alice.kubeconfig");
    std::fs::copy(&s.kubeconfig, &alice_kubeconfig).expect("copy kubeconfig");
    let set = Command::new(common::KUBECTL)
        .arg("--kubeconfig")
        .arg(&alice_kubeconfig)
        .args(["config", "set-credentials", "krust-admin", "--embed-certs"])
        .arg(format!("--client-certificate={}", cert_path.display()))
        .arg(format!("--client-key={}", alice_key.display()))
        .output()
        .expect("kubectl config");
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let whoami = Command::new(common::KUBECTL)
        .arg("--kubeconfig")
        .arg(&alice_kubeconfig)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ])
        .output()
        .expect("kubectl");
    let who = String::from_utf8_lossy(&whoami.stdout);
    assert!(
        who.starts_with("alice ") && who.contains("devs"),
        "{who} {}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    let out = s.kubectl(&["certificate", "deny", "bob"]);
    assert!(
        out.contains("certificatesigningrequest.certificates.k8s.io/bob denied"),
        "{out}"
    );
    assert_eq!(csr_row(&s, "bob")[5], "Denied");
    let bob = json(&s.kubectl(&["get", "csr", "bob", "-o", "json"]));
    let cond = &bob["status"]["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"]),
        (&Value::from("Denied"), &Value::from("True"))
    );
    assert!(cond["lastUpdateTime"].is_string() && cond["lastTransitionTime"].is_string());

    // An update of the object itself changes neither spec nor status.
    s.kubectl(&["label", "csr", "alice", "team=a"]);
    let alice = json(&s.kubectl(&["get", "csr", "alice", "-o", "json"]));
    assert_eq!(alice["metadata"]["labels"]["team"], "a");
    assert_eq!(alice["status"]["conditions"][0]["type"], "Approved");

    // Invalid requests are refused with upstream's words.
    let err = s.kubectl_err(&["create", "-f", "-"], Some(&csr_yaml("bad", "aGk=", "")));
    assert!(err.contains("The CertificateSigningRequest \"bad\" is invalid: spec.request: Invalid value: []byte{0x68, 0x69}: PEM block type must be CERTIFICATE REQUEST"), "{err}");
    let (_, csr) = key_and_request(&dir, "short", "/CN=short");
    let yaml = csr_yaml(
        "short",
        &request_b64(&dir, &csr),
        "  expirationSeconds: 60\n",
    )
    .replace("client auth", "bogus");
    let err = s.kubectl_err(&["create", "-f", "-"], Some(&yaml));
    assert!(
        err.contains("spec.usages[0]: Unsupported value: \"bogus\": supported values: \"any\""),
        "{err}"
    );
    assert!(err.contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)"), "{err}");
    let (code, body) = s.curl(
        "POST",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        Some(("application/json", br#"{"apiVersion":"certificates.k8s.io/v1","kind":"CertificateSigningRequest","metadata":{"name":"bad"},"spec":{"request":"aGk=","signerName":"example","usages":["client auth"]}}"#)),
        true,
    );
    assert_eq!(code, 422, "{body}");
    let status = json(&body);
    assert_eq!(status["reason"], "Invalid");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(fields, ["spec.request", "spec.signerName"]);
}

const TOKEN: &str = "abcdef.0123456789abcdef";

fn token_secret(id: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{id}\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {id}\n  token-secret: 0123456789abcdef\n  auth-extra-groups: system:bootstrappers:krust:default-node-token\n{extra}"
    )
}

#[test]
fn bootstrap_tokens_may_only_request_certificates() {
    let s = Server::start_disabling(ADDONS, &[]);
    let dir = s.data_dir.clone();
    let secrets = [
        token_secret("abcdef", "  usage-bootstrap-authentication: \"true\"\n"),
        token_secret(
            "expird",
            "  usage-bootstrap-authentication: \"true\"\n  expiration: \"2020-01-01T00:00:00Z\"\n",
        ),
        token_secret("noauth", "  usage-bootstrap-signing: \"true\"\n"),
    ];
    for yaml in &secrets {
        s.kubectl_ok(common::KUBECTL, &["create", "-f", "-"], Some(yaml));
    }
    let (_, csr) = key_and_request(&dir, "node-a", "/O=system:nodes/CN=system:node:a");
    let body = format!(
        r#"{{"apiVersion":"certificates.k8s.io/v1","kind":"CertificateSigningRequest","metadata":{{"generateName":"node-csr-"}},"spec":{{"request":"{}","signerName":"kubernetes.io/kube-apiserver-client-kubelet","usages":["digital signature","client auth"]}}}}"#,
        request_b64(&dir, &csr)
    );
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let (code, out) = curl(
        &s,
        Auth::Bearer(TOKEN),
        "POST",
        csrs,
        Some(("application/json", &body)),
    );
    assert_eq!(code, 201, "{out}");
    let created = json(&out);
    assert_eq!(created["spec"]["username"], "system:bootstrap:abcdef");
    assert_eq!(
        created["spec"]["groups"],
        serde_json::json!([
            "system:bootstrappers",
            "system:bootstrappers:krust:default-node-token",
            "system:authenticated"
        ])
    );
    let name = created["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (code, out) = curl(
        &s,
        Auth::Bearer(TOKEN),
        "GET",
        &format!("{csrs}/{name}"),
        None,
    );
    assert_eq!(code, 200, "{out}");
    let (code, _) = curl(
        &s,
        Auth::Bearer(TOKEN),
        "GET",
        "/apis/certificates.k8s.io/v1",
        None,
    );
    assert_eq!(code, 200);

    // Everything else is forbidden, in upstream's words.
    let (code, out) = curl(
        &s,
        Auth::Bearer(TOKEN),
        "GET",
        "/api/v1/namespaces/kube-system/secrets",
        None,
    );
    assert_eq!(code, 403, "{out}");
    assert_eq!(
        json(&out)["message"],
        "secrets is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
    );
    let (code, out) = curl(&s, Auth::Bearer(TOKEN), "GET", "/api/v1/nodes", None);
    assert_eq!(code, 403);
    assert_eq!(
        json(&out)["message"],
        "nodes is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    let approval = format!("{csrs}/{name}/approval");
    let (code, _) = curl(
        &s,
        Auth::Bearer(TOKEN),
        "PUT",
        &approval,
        Some(("application/json", &out)),
    );
    assert_eq!(code, 403);

    // Tokens that do not validate are 401, never another identity.
    for bad in [
        "abcdef.0123456789abcdee",
        "expird.0123456789abcdef",
        "noauth.0123456789abcdef",
        "zzzzzz.0123456789abcdef",
    ] {
        let (code, out) = curl(&s, Auth::Bearer(bad), "GET", csrs, None);
        assert_eq!(code, 401, "{bad}: {out}");
    }
}

/// A client certificate for `system:node:<node>` (O=system:nodes) signed by the cluster CA.
fn node_cert(s: &Server, node: &str) -> (PathBuf, PathBuf) {
    let dir = s.data_dir.clone();
    let name = format!("node-{node}");
    let (key, csr) = key_and_request(
        &dir,
        &name,
        &format!("/O=system:nodes/CN=system:node:{node}"),
    );
    let ext = dir.join("client.ext");
    std::fs::write(
        &ext,
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
    )
    .expect("ext");
    let cert = dir.join(format!("{name}.crt"));
    let (ca, _, _) = s.client_files();
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let ca_key = path(&ca.with_file_name("ca.key"));
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            &path(&csr),
            "-CA",
            &path(&ca),
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &path(&ext),
            "-out",
            &path(&cert),
        ],
    );
    (cert, key)
}

#[test]
fn nodes_may_modify_only_themselves() {
    let s = Server::start_disabling(ADDONS, &[]);
    for n in ["a", "b"] {
        let yaml = format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n");
        s.kubectl_ok(common::KUBECTL, &["create", "-f", "-"], Some(&yaml));
    }
    let (cert, key) = node_cert(&s, "a");
    let patch = Some((
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"example.com/x":"y"}}}"#,
    ));
    let (code, out) = curl(
        &s,
        Auth::Cert(&cert, &key),
        "PATCH",
        "/api/v1/nodes/b",
        patch,
    );
    assert_eq!(code, 403, "{out}");
    let status = json(&out);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "nodes \"b\" is forbidden: node \"a\" is not allowed to modify node \"b\""
    );
    let (code, out) = curl(
        &s,
        Auth::Cert(&cert, &key),
        "PATCH",
        "/api/v1/nodes/a",
        patch,
    );
    assert_eq!(code, 200, "{out}");
    assert_eq!(json(&out)["metadata"]["labels"]["example.com/x"], "y");
    let status_patch = Some((
        "application/merge-patch+json",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ));
    let (code, out) = curl(
        &s,
        Auth::Cert(&cert, &key),
        "PATCH",
        "/api/v1/nodes/a/status",
        status_patch,
    );
    assert_eq!(code, 200, "{out}");
    // Taints are not the node's to change.
    let taint = Some((
        "application/merge-patch+json",
        r#"{"spec":{"taints":[{"key":"k","effect":"NoSchedule"}]}}"#,
    ));
    let (code, out) = curl(
        &s,
        Auth::Cert(&cert, &key),
        "PATCH",
        "/api/v1/nodes/a",
        taint,
    );
    assert_eq!(code, 403, "{out}");
    assert_eq!(
        json(&out)["message"],
        "nodes \"a\" is forbidden: node \"a\" is not allowed to modify taints"
    );
    // Nor are other kinds; reads still work.
    let secret = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#;
    let (code, out) = curl(
        &s,
        Auth::Cert(&cert, &key),
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(("application/json", secret)),
    );
    assert_eq!(code, 403, "{out}");
    assert_eq!(
        json(&out)["message"],
        "secrets is forbidden: User \"system:node:a\" cannot create resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
    let (code, _) = curl(&s, Auth::Cert(&cert, &key), "GET", "/api/v1/nodes", None);
    assert_eq!(code, 200);
    // Its own lease only.
    let lease = |n: &str| {
        format!(
            r#"{{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{{"name":"{n}"}},"spec":{{"holderIdentity":"{n}"}}}}"#
        )
    };
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    let (code, out) = curl(
        &s,
        Auth::Cert(&cert, &key),
        "POST",
        leases,
        Some(("application/json", &lease("a"))),
    );
    assert_eq!(code, 201, "{out}");
    let (code, out) = curl(
        &s,
        Auth::Cert(&cert, &key),
        "POST",
        leases,
        Some(("application/json", &lease("b"))),
    );
    assert_eq!(code, 403, "{out}");
    assert_eq!(
        json(&out)["message"],
        "leases.coordination.k8s.io \"b\" is forbidden: can only access node lease with the same name as the requesting node"
    );
}
