//! Dynamic admission end to end with the real kubectl: a validating webhook and a mutating
//! webhook served over HTTPS by a small Python server in the test (tests/python/
//! webhook_server.py), failurePolicy Ignore and Fail against a webhook that is down, a
//! webhook that times out, and a ValidatingAdmissionPolicy refusing a Deployment.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::{eventually, free_port, Server, KUBECTL};

/// The Python webhook server, killed when dropped.
struct Webhook {
    child: Child,
    port: u16,
    /// base64 of the CA that signed its certificate, for `caBundle`.
    ca_bundle: String,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a serving certificate for 127.0.0.1, made with openssl as users make theirs.
fn certificates(dir: &Path) -> String {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=webhook-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "tls.crt",
        ],
    );
    let ca = std::fs::read(dir.join("ca.crt")).expect("read ca");
    base64::engine::general_purpose::STANDARD.encode(ca)
}

fn start_webhook(dir: &Path) -> Webhook {
    let ca_bundle = certificates(dir);
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/webhook_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(dir.join("tls.crt"))
        .arg(dir.join("tls.key"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start webhook server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "listening");
    Webhook {
        child,
        port,
        ca_bundle,
    }
}

/// A webhook configuration of `kind` with one webhook for pod creation in namespace `ns`.
fn configuration(
    kind: &str,
    name: &str,
    url: &str,
    ca_bundle: &str,
    ns: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: {kind}
metadata:
  name: {name}
webhooks:
- name: {name}
  clientConfig:
    url: {url}
    caBundle: {ca_bundle}
  rules:
  - operations: [CREATE]
    apiGroups: [\"\"]
    apiVersions: [v1]
    resources: [pods]
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {ns}
  sideEffects: None
  admissionReviewVersions: [v1]
{extra}"
    )
}

fn pod(name: &str, ns: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{{labels}}}
spec:
  containers:
  - name: c
    image: busybox
"
    )
}

/// Applies a configuration and waits until the server enforces it (the API server reads
/// configurations from its watch cache): `probe` is refused, or admitted, as `ready` says.
fn until(s: &Server, mut ready: impl FnMut(&Server) -> bool) {
    assert!(
        eventually(Duration::from_secs(10), || ready(s)),
        "configuration took effect"
    );
}

fn create(s: &Server, manifest: &str) -> Result<String, String> {
    let out = s.kubectl_with(KUBECTL, &["create", "-f", "-"], Some(manifest));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn absent(s: &Server, ns: &str, name: &str) -> bool {
    let out = s.kubectl_with(KUBECTL, &["get", "pod", "-n", ns, name], None);
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
}

#[test]
fn webhooks_refuse_mutate_and_follow_their_failure_policy() {
    let s = Server::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let hook = start_webhook(tmp.path());
    let base = format!("https://127.0.0.1:{}", hook.port);
    for ns in ["checked", "down-ignore", "down-fail", "slow"] {
        s.kubectl(&["create", "namespace", ns]);
    }

    // A validating webhook refuses with its reason, which kubectl shows; others pass,
    // with the webhook's warning.
    s.kubectl_ok(
        KUBECTL,
        &["apply", "-f", "-"],
        Some(&configuration(
            "ValidatingWebhookConfiguration",
            "validate.krust.test",
            &format!("{base}/validate"),
            &hook.ca_bundle,
            "checked",
            "",
        )),
    );
    let mut n = 0;
    until(&s, |s| {
        n += 1;
        create(
            s,
            &pod(&format!("probe{n}"), "checked", "forbidden: \"true\""),
        )
        .is_err()
    });
    let refused = create(&s, &pod("bad", "checked", "forbidden: \"true\"")).unwrap_err();
    assert!(
        refused.contains(
            "admission webhook \"validate.krust.test\" denied the request: pods labelled forbidden=true are not allowed"
        ),
        "{refused}"
    );
    assert!(absent(&s, "checked", "bad"));
    let warned = create(&s, &pod("good", "checked", "")).expect("allowed");
    assert!(
        warned.contains("Warning: checked by the test webhook"),
        "{warned}"
    );

    // A mutating webhook adds a label; the validating one still sees the result.
    s.kubectl_ok(
        KUBECTL,
        &["apply", "-f", "-"],
        Some(&configuration(
            "MutatingWebhookConfiguration",
            "mutate.krust.test",
            &format!("{base}/mutate"),
            &hook.ca_bundle,
            "checked",
            "",
        )),
    );
    let mut n = 0;
    until(&s, |s| {
        n += 1;
        let name = format!("m{n}");
        create(s, &pod(&name, "checked", "")).is_ok()
            && s.kubectl(&[
                "get",
                "pod",
                "-n",
                "checked",
                &name,
                "-o",
                "jsonpath={.metadata.labels.mutated-by}",
            ]) == "webhook"
    });

    // Down: Ignore admits, Fail refuses with upstream's wording and stores nothing.
    let closed = format!("https://127.0.0.1:{}/validate", free_port());
    let ignore = configuration(
        "ValidatingWebhookConfiguration",
        "down-ignore.krust.test",
        &closed,
        &hook.ca_bundle,
        "down-ignore",
        "  failurePolicy: Ignore\n",
    );
    let fail = configuration(
        "ValidatingWebhookConfiguration",
        "down-fail.krust.test",
        &closed,
        &hook.ca_bundle,
        "down-fail",
        "  failurePolicy: Fail\n",
    );
    s.kubectl_ok(
        KUBECTL,
        &["apply", "-f", "-"],
        Some(&format!("{ignore}---\n{fail}")),
    );
    let mut n = 0;
    until(&s, |s| {
        n += 1;
        create(s, &pod(&format!("p{n}"), "down-fail", "")).is_err()
    });
    create(&s, &pod("admitted", "down-ignore", "")).expect("Ignore admits");
    let failed = create(&s, &pod("refused", "down-fail", "")).unwrap_err();
    assert!(
        failed.contains("Internal error occurred: failed calling webhook \"down-fail.krust.test\": failed to call webhook: Post")
            && failed.contains("connection refused"),
        "{failed}"
    );
    assert!(absent(&s, "down-fail", "refused"));

    // A webhook slower than its timeoutSeconds: refused under Fail, as upstream words it.
    s.kubectl_ok(
        KUBECTL,
        &["apply", "-f", "-"],
        Some(&configuration(
            "ValidatingWebhookConfiguration",
            "slow.krust.test",
            &format!("{base}/slow"),
            &hook.ca_bundle,
            "slow",
            "  timeoutSeconds: 1\n",
        )),
    );
    let mut n = 0;
    until(&s, |s| {
        n += 1;
        create(s, &pod(&format!("t{n}"), "slow", "")).is_err()
    });
    let started = std::time::Instant::now();
    let timed_out = create(&s, &pod("late", "slow", "")).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up at the timeout"
    );
    assert!(
        timed_out.contains("failed calling webhook \"slow.krust.test\"")
            && timed_out.contains("context deadline exceeded"),
        "{timed_out}"
    );
    assert!(absent(&s, "slow", "late"));

    // Removing a configuration lifts it.
    s.kubectl(&[
        "delete",
        "validatingwebhookconfiguration",
        "down-fail.krust.test",
    ]);
    until(&s, |s| create(s, &pod("after", "down-fail", "")).is_ok());
}
