//! Service account tokens end to end with the real kubectl: `kubectl create token`, bearer
//! authentication (`kubectl --token ... auth whoami`), tokens that stop working when their
//! ServiceAccount or Pod goes, the ServiceAccount admission's `kube-api-access-*` volume and
//! the `kube-root-ca.crt` ConfigMap.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{eventually, Server, KUBECTL};

/// A kubeconfig that carries only `token` (no client certificate), so the server must
/// authenticate the request by its bearer token.
fn token_kubeconfig(s: &Server, token: &str, name: &str) -> PathBuf {
    let (ca, _, _) = s.client_files();
    let path = s.data_dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
            s.url,
            ca.display()
        ),
    )
    .expect("write kubeconfig");
    path
}

/// kubectl with the token's kubeconfig: (success, stdout, stderr).
fn as_token(s: &Server, token: &str, args: &[&str]) -> (bool, String, String) {
    let kc = token_kubeconfig(s, token, "token");
    let out = Command::new(KUBECTL)
        .env("KUBECONFIG", &kc)
        .env("HOME", &s.data_dir)
        .args(args)
        .output()
        .expect("kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl with a bearer token and no client certificate: (code, body).
fn curl_bearer(s: &Server, token: &str, path: &str) -> (u16, String) {
    let (ca, _, _) = s.client_files();
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"])
        .arg("--cacert")
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{}{path}", s.url))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn create_token(s: &Server, args: &[&str]) -> String {
    let mut all = vec!["create", "token"];
    all.extend_from_slice(args);
    s.kubectl(&all).trim().to_string()
}

#[test]
fn kubectl_create_token_and_bearer_authentication() {
    let s = Server::start();
    // The serviceaccount controller makes `default`.
    assert!(eventually(Duration::from_secs(20), || {
        s.kubectl_with(KUBECTL, &["get", "sa", "default"], None)
            .status
            .success()
    }));
    let token = create_token(&s, &["default"]);
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let (ok, out, err) = as_token(&s, &token, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "whoami failed: {err}");
    let who: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    let groups = who["status"]["userInfo"]["groups"].to_string();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ] {
        assert!(groups.contains(&format!("\"{g}\"")), "{groups}");
    }
    let (ok, _, err) = as_token(&s, &token, &["get", "pods"]);
    assert!(ok, "get pods with the token: {err}");

    // Garbage, another audience's token: 401 Unauthorized, as a Status.
    let (ok, _, err) = as_token(&s, "not.a.jwt", &["get", "pods"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    let (code, body) = curl_bearer(&s, "garbage", "/api/v1/namespaces/default/pods");
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    let vault = create_token(&s, &["default", "--audience", "vault"]);
    assert_eq!(curl_bearer(&s, &vault, "/api/v1/pods").0, 401);
    // ... which TokenReview confirms is good for that audience.
    let review = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": vault, "audiences": ["vault"]}});
    let (code, body) = s.curl(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(("application/json", review.to_string().as_bytes())),
        true,
    );
    assert_eq!(code, 201, "{body}");
    let review: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );

    // Upstream's bounds on the lifetime.
    let err = s.kubectl_err(&["create", "token", "default", "--duration", "1m"], None);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = s.kubectl_err(&["create", "token", "nobody"], None);
    assert!(err.contains("not found"), "{err}");

    // A token dies with its ServiceAccount (a new one of the same name has another uid).
    s.kubectl(&["create", "serviceaccount", "robot"]);
    let robot = create_token(&s, &["robot"]);
    assert_eq!(curl_bearer(&s, &robot, "/api/v1/pods").0, 200);
    s.kubectl(&["delete", "serviceaccount", "robot"]);
    assert_eq!(curl_bearer(&s, &robot, "/api/v1/pods").0, 401);
    s.kubectl(&["create", "serviceaccount", "robot"]);
    assert_eq!(curl_bearer(&s, &robot, "/api/v1/pods").0, 401);

    // A pod-bound token dies with its pod. The pod got the kube-api-access volume.
    s.kubectl_ok(
        KUBECTL,
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n"),
    );
    let pod: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["get", "pod", "p", "-o", "json"])).expect("json");
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    let vol = &spec["volumes"][0];
    let name = vol["name"].as_str().unwrap_or_default();
    assert!(
        name.starts_with("kube-api-access-") && name.len() == 21,
        "{vol}"
    );
    assert_eq!(
        vol["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3607
    );
    assert_eq!(
        spec["containers"][0]["volumeMounts"][0],
        serde_json::json!({"name": name, "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    );
    let bound = create_token(
        &s,
        &[
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p",
        ],
    );
    let (code, body) = curl_bearer(&s, &bound, "/api/v1/namespaces/default/pods/p");
    assert_eq!(code, 200, "{body}");
    s.kubectl(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert_eq!(curl_bearer(&s, &bound, "/api/v1/pods").0, 401);

    // A pod that opts out gets no volume.
    s.kubectl_ok(
        KUBECTL,
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: q\nspec:\n  automountServiceAccountToken: false\n  containers:\n  - name: c\n    image: busybox\n"),
    );
    assert_eq!(
        s.kubectl(&["get", "pod", "q", "-o", "jsonpath={.spec.volumes}"]),
        ""
    );

    // Issuer discovery, for those who verify tokens elsewhere.
    let (code, body) = curl_bearer(&s, &token, "/.well-known/openid-configuration");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("https://kubernetes.default.svc.cluster.local"));
    let (code, body) = curl_bearer(&s, &token, "/openid/v1/jwks");
    assert_eq!(code, 200);
    assert!(body.contains("\"ES256\""), "{body}");
}

#[test]
fn root_ca_configmap_in_every_namespace() {
    let s = Server::start();
    let ca = std::fs::read_to_string(s.client_files().0).expect("ca");
    s.kubectl(&["create", "namespace", "team"]);
    for ns in ["default", "kube-system", "team"] {
        assert!(
            eventually(Duration::from_secs(20), || {
                let out = s.kubectl_with(
                    KUBECTL,
                    &[
                        "get",
                        "configmap",
                        "kube-root-ca.crt",
                        "-n",
                        ns,
                        "-o",
                        "jsonpath={.data.ca\\.crt}",
                    ],
                    None,
                );
                String::from_utf8_lossy(&out.stdout) == ca
            }),
            "kube-root-ca.crt in {ns}"
        );
    }
    // Changed or deleted, it is put back.
    s.kubectl(&["-n", "team", "delete", "configmap", "kube-root-ca.crt"]);
    assert!(eventually(Duration::from_secs(20), || {
        s.kubectl_with(
            KUBECTL,
            &["-n", "team", "get", "configmap", "kube-root-ca.crt"],
            None,
        )
        .status
        .success()
    }));
}
