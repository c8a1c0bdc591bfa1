//! End-to-end: service networking on a real node (issue 15). A `krust server` with its
//! add-ons (cluster DNS, ingress, load balancer) plus `krust agent --node-ip 127.0.0.1` with
//! its own containerd, driven with kubectl: pods find Services by name, headless Services
//! answer their ready pods, outside names are forwarded (to a dnsmasq the test starts on
//! loopback), NodePorts and LoadBalancer addresses answer on the node's address, Ingresses
//! route by host and SNI, NetworkPolicies block and allow. Skipped (with a message) when
//! the node's tools or dnsmasq are missing; `scripts/test.sh` installs them.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::node::*;
use common::{eventually, free_port, Server, KUBECTL};

/// Where the test's stand-in for the host's resolver listens (port 53: resolv.conf has no
/// ports).
const OUTSIDE_DNS: &str = "127.0.0.77";

/// A dnsmasq answering `outside.example` on [`OUTSIDE_DNS`], killed when dropped.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start() -> Dnsmasq {
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-dynamic",
            ])
            .arg(format!("--listen-address={OUTSIDE_DNS}"))
            .args(["--port=53", "--pid-file=", "--user=root"])
            .arg("--address=/outside.example/192.0.2.44")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        std::thread::sleep(Duration::from_millis(300));
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn skip_reason() -> Option<String> {
    let mut missing = missing_tools();
    if !on_path("dnsmasq") && !Path::new("/usr/sbin/dnsmasq").exists() {
        missing.push("dnsmasq");
    }
    (!missing.is_empty())
        .then(|| format!("not installed: {missing:?} (scripts/test.sh installs them)"))
}

/// A server with every add-on but the agent (the test starts that), on free ports, whose
/// DNS forwards to the test's dnsmasq.
fn networking_server(resolv: &Path, http: u16, https: u16) -> Server {
    let resolv = resolv.display().to_string();
    let (http, https) = (http.to_string(), https.to_string());
    Server::start_disabling(
        "agent",
        &[
            "--dns-port",
            "0",
            "--resolv-conf",
            &resolv,
            "--ingress-http-port",
            &http,
            "--ingress-https-port",
            &https,
        ],
    )
}

fn exec(s: &Server, pod: &str, script: &str) -> String {
    let out = s.kubectl_with(KUBECTL, &["exec", pod, "--", "sh", "-c", script], None);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Pods that serve their own name on port 8080.
fn web_pods(app: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
"#
    )
}

const CLIENT: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: client
  labels: {role: client}
spec:
  terminationGracePeriodSeconds: 1
  hostAliases: [{ip: 192.0.2.9, hostnames: [alias.example]}]
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
"#;

/// `kubectl get ARGS -o jsonpath=PATH`.
fn get(s: &Server, args: &[&str], path: &str) -> String {
    let jp = format!("jsonpath={path}");
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", jp.as_str()]);
    let out = s.kubectl_with(KUBECTL, &all, None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ready_pods(s: &Server, selector: &str) -> Vec<String> {
    let out = get(
        s,
        &["pods", "-l", selector],
        "{range .items[*]}{.metadata.name} {.metadata.deletionTimestamp} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    );
    out.lines()
        .filter(|l| l.ends_with(" True") && l.split_whitespace().count() == 2)
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

fn pod_ips(s: &Server, selector: &str) -> BTreeSet<String> {
    let names = ready_pods(s, selector);
    names
        .iter()
        .map(|n| jsonpath(s, &format!("pod/{n}"), "{.status.podIP}"))
        .collect()
}

/// The names of the pods that answered `n` fetches of `url` from the client.
fn answers(s: &Server, url: &str, n: usize) -> BTreeSet<String> {
    let out = exec(
        s,
        "client",
        &format!("for i in $(seq 1 {n}); do timeout 3 wget -qO- {url}; done"),
    );
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(' '))
        .map(str::to_string)
        .collect()
}

/// `nslookup` answers' addresses (the lines after the query's `Name:`).
fn looked_up(out: &str) -> BTreeSet<String> {
    out.lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect()
}

#[test]
fn pods_find_services_by_name_and_reach_them_from_outside() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let _dns = Dnsmasq::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {OUTSIDE_DNS}\nsearch corp.example\n"),
    )
    .expect("resolv.conf");
    let s = networking_server(&resolv, free_port(), free_port());
    let resolv_arg = resolv.display().to_string();
    let agent = ready_node_with(
        &s,
        "krust-net-node",
        "knet0",
        "10.42.214.0/24",
        "10.42.215.0/24",
        &["--resolv-conf", &resolv_arg],
        &[],
    );
    let services = r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-hl}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30556}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 18080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb-clash}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 18080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: sub}
spec:
  clusterIP: None
  selector: {app: named}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: named
  labels: {app: named}
spec:
  hostname: n0
  subdomain: sub
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "exec httpd -f -p 8080 -h /"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata:
  name: unready
  labels: {app: named}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    readinessProbe: {exec: {command: ["false"]}, periodSeconds: 1}
"#;
    let manifests = format!("{}---\n{services}---\n{CLIENT}", web_pods("web", 3));
    s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(&manifests));
    let ready = eventually(Duration::from_secs(90), || {
        ready_pods(&s, "app=web").len() == 3
            && ready_pods(&s, "app=named").len() == 1
            && ready_of(&s, "client").0 == "Running"
            && ready_of(&s, "unready").0 == "Running"
    });
    assert!(
        ready,
        "pods not ready: {}\nagent log:\n{}",
        s.kubectl(&["get", "pods", "-o", "wide"]),
        agent.log()
    );
    let web_pods_now: BTreeSet<String> = ready_pods(&s, "app=web").into_iter().collect();

    // resolv.conf and /etc/hosts as the kubelet writes them.
    let conf = exec(&s, "client", "cat /etc/resolv.conf; cat /etc/hosts");
    let dns_ip = get(
        &s,
        &["-n", "kube-system", "service/kube-dns"],
        "{.spec.clusterIP}",
    );
    assert_eq!(dns_ip, "10.43.0.10");
    assert!(conf.contains("nameserver 10.43.0.10"), "{conf}");
    assert!(
        conf.contains(
            "search default.svc.cluster.local svc.cluster.local cluster.local corp.example"
        ),
        "{conf}"
    );
    assert!(conf.contains("options ndots:5"), "{conf}");
    let client_ip = jsonpath(&s, "pod/client", "{.status.podIP}");
    assert!(conf.contains(&format!("{client_ip}\tclient")), "{conf}");
    assert!(conf.contains("192.0.2.9\talias.example"), "{conf}");

    // A Service by its short and full name, answered by all three pods (once the proxy
    // has the three endpoints).
    let serving = eventually(Duration::from_secs(10), || {
        get(
            &s,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
            "{.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
        )
        .split_whitespace()
        .count()
            == 3
            && !answers(&s, "http://web/", 1).is_empty()
    });
    assert!(serving, "web never answered");
    for url in ["http://web/", "http://web.default.svc.cluster.local/"] {
        let got = answers(&s, url, 30);
        assert_eq!(got, web_pods_now, "{url}: 30 fetches reach every pod");
    }
    // Headless: exactly the ready pods; a pod's own name under its subdomain; SRV; PTR.
    let hl = exec(
        &s,
        "client",
        "nslookup -type=a web-hl.default.svc.cluster.local",
    );
    assert_eq!(looked_up(&hl), pod_ips(&s, "app=web"), "{hl}");
    let sub = exec(
        &s,
        "client",
        "nslookup -type=a sub.default.svc.cluster.local",
    );
    assert_eq!(
        looked_up(&sub),
        pod_ips(&s, "app=named"),
        "only the ready pod: {sub}"
    );
    let named_ip = jsonpath(&s, "pod/named", "{.status.podIP}");
    let own = exec(
        &s,
        "client",
        "nslookup -type=a n0.sub.default.svc.cluster.local",
    );
    assert_eq!(looked_up(&own), BTreeSet::from([named_ip.clone()]), "{own}");
    let srv = exec(
        &s,
        "client",
        "nslookup -type=srv _http._tcp.web.default.svc.cluster.local",
    );
    assert!(
        srv.contains("0 100 80 web.default.svc.cluster.local"),
        "{srv}"
    );
    let web_ip = jsonpath(&s, "service/web", "{.spec.clusterIP}");
    let ptr = exec(&s, "client", &format!("nslookup {web_ip}"));
    assert!(
        ptr.contains("name = web.default.svc.cluster.local"),
        "{ptr}"
    );
    let pod_a = exec(
        &s,
        "client",
        &format!(
            "nslookup -type=a {}.default.pod.cluster.local",
            named_ip.replace('.', "-")
        ),
    );
    assert_eq!(
        looked_up(&pod_a),
        BTreeSet::from([named_ip.clone()]),
        "{pod_a}"
    );
    // Outside names go to the host's resolver; unknown cluster names are NXDOMAIN.
    let outside = exec(&s, "client", "nslookup -type=a outside.example");
    assert_eq!(
        looked_up(&outside),
        BTreeSet::from(["192.0.2.44".to_string()]),
        "{outside}"
    );
    let nx = exec(
        &s,
        "client",
        "nslookup -type=a nope.default.svc.cluster.local",
    );
    assert!(nx.contains("NXDOMAIN"), "{nx}");

    // From outside: the node port and the load balancer address on the node's address.
    let lb_ip = eventually(Duration::from_secs(10), || {
        jsonpath(&s, "service/web-lb", "{.status.loadBalancer.ingress[0].ip}") == "127.0.0.1"
    });
    assert!(
        lb_ip,
        "{}",
        s.kubectl(&["get", "svc", "web-lb", "-o", "yaml"])
    );
    for url in ["http://127.0.0.1:30556/", "http://127.0.0.1:18080/"] {
        let ok = eventually(Duration::from_secs(10), || {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "2", url])
                .output();
            out.is_ok_and(|o| web_pods_now.contains(String::from_utf8_lossy(&o.stdout).trim()))
        });
        assert!(ok, "{url} answers from a web pod");
    }
    let clash = eventually(Duration::from_secs(10), || {
        s.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web-lb-clash",
        ])
        .contains("no address in the load balancer pool has ports 18080/TCP free")
    });
    assert!(
        clash,
        "a taken port leaves the Service pending with an event"
    );
    assert_eq!(
        jsonpath(&s, "service/web-lb-clash", "{.status.loadBalancer.ingress}"),
        ""
    );

    // Scale down: the gone pods leave the answers within 2 s.
    s.kubectl(&["scale", "deployment/web", "--replicas=1"]);
    let scaled = Instant::now();
    let settled = eventually(Duration::from_secs(20), || {
        ready_pods(&s, "app=web").len() == 1
    });
    assert!(settled);
    let left: BTreeSet<String> = ready_pods(&s, "app=web").into_iter().collect();
    let mut first_clean = None;
    while scaled.elapsed() < Duration::from_secs(8) {
        let hl = looked_up(&exec(
            &s,
            "client",
            "nslookup -type=a web-hl.default.svc.cluster.local",
        ));
        if answers(&s, "http://web/", 6) == left && hl.len() == 1 {
            first_clean = Some(scaled.elapsed());
            break;
        }
    }
    let first_clean = first_clean.expect("answers never narrowed to the one pod left");
    assert!(first_clean < Duration::from_secs(2), "took {first_clean:?}");
    assert_eq!(
        answers(&s, "http://web/", 10),
        left,
        "and they stay narrowed"
    );
    drop(agent);
}

/// `curl -s` with `args`; the body, or the status code with `-w`.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn ingresses_route_hosts_and_tls_and_network_policies_filter() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {OUTSIDE_DNS}\n")).expect("resolv.conf");
    let (http, https) = (free_port(), free_port());
    let s = networking_server(&resolv, http, https);
    let agent = ready_node_with(
        &s,
        "krust-ing-node",
        "king0",
        "10.42.216.0/24",
        "10.42.217.0/24",
        &[],
        &[],
    );
    let (cert, key) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=secure.example",
            "-addext",
            "subjectAltName=DNS:secure.example",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(made.success());
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    s.kubectl(&[
        "create", "secret", "tls", "secure", "--cert", &cert_s, "--key", &key_s,
    ]);
    let services = r#"apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  selector: {app: a}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec:
  selector: {app: b}
  ports: [{name: web, port: 8000, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  tls: [{hosts: [secure.example], secretName: secure}]
  rules:
  - host: a.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]
  - host: b.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: b, port: {name: web}}}}
      - {path: /empty, pathType: Exact, backend: {service: {name: nobody, port: {number: 80}}}}
  - host: secure.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]
"#;
    let manifests = format!(
        "{}---\n{}---\n{services}",
        web_pods("a", 1),
        web_pods("b", 1)
    );
    s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(&manifests));
    let ready = eventually(Duration::from_secs(90), || {
        ready_pods(&s, "app=a").len() == 1 && ready_pods(&s, "app=b").len() == 1
    });
    assert!(ready, "pods not ready; agent log:\n{}", agent.log());
    let (a, b) = (
        ready_pods(&s, "app=a")[0].clone(),
        ready_pods(&s, "app=b")[0].clone(),
    );
    assert_eq!(
        get(
            &s,
            &["ingressclass", "krust"],
            "{.metadata.annotations.ingressclass\\.kubernetes\\.io/is-default-class}"
        ),
        "true"
    );
    let published = eventually(Duration::from_secs(15), || {
        get(
            &s,
            &["ingress", "shop"],
            "{.status.loadBalancer.ingress[0].ip}",
        ) == "127.0.0.1"
    });
    assert!(
        published,
        "{}",
        s.kubectl(&["get", "ingress", "shop", "-o", "yaml"])
    );
    let base = format!("http://127.0.0.1:{http}/");
    let routed = eventually(Duration::from_secs(10), || {
        curl(&["-H", "Host: a.example", &base]) == a
    });
    assert!(routed, "a.example reaches a");
    assert_eq!(
        curl(&["-H", "Host: b.example", &base]),
        b,
        "b.example reaches b by port name"
    );
    let code = |host: &str, path: &str| {
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Host: {host}"),
            &format!("{base}{path}"),
        ])
    };
    assert_eq!(code("unknown.example", ""), "404");
    assert_eq!(
        code("b.example", "empty"),
        "503",
        "a backend without endpoints"
    );
    // TLS: the certificate chosen by SNI verifies against the test's CA; another name
    // gets the controller's own certificate, which does not.
    let secure = format!("secure.example:{https}:127.0.0.1");
    let url = format!("https://secure.example:{https}/");
    assert_eq!(curl(&["--resolve", &secure, "--cacert", &cert_s, &url]), a);
    let other = format!("other.example:{https}:127.0.0.1");
    let wrong = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "3",
            "--resolve",
            &other,
            "--cacert",
            &cert_s,
        ])
        .arg(format!("https://other.example:{https}/"))
        .status()
        .expect("curl");
    assert!(
        !wrong.success(),
        "an unknown SNI name does not get secure.example's certificate"
    );

    // NetworkPolicy: default-deny ingress for `a`, then an allow rule for friends only.
    let clients = r#"apiVersion: v1
kind: Pod
metadata: {name: friend, labels: {role: friend}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, labels: {role: stranger}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, command: ["sleep", "3600"]}]
"#;
    s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(clients));
    let running = eventually(Duration::from_secs(60), || {
        ready_of(&s, "friend").0 == "Running" && ready_of(&s, "stranger").0 == "Running"
    });
    assert!(running, "clients not running; agent log:\n{}", agent.log());
    let a_ip = jsonpath(&s, &format!("pod/{a}"), "{.status.podIP}");
    // The answering pod's name, or "blocked".
    let fetch = |from: &str| {
        let out = exec(
            &s,
            from,
            &format!("timeout 2 wget -qO- http://{a_ip}:8080/ 2>/dev/null || echo blocked"),
        );
        if out.contains("blocked") {
            "blocked".to_string()
        } else {
            out.trim().to_string()
        }
    };
    assert_eq!(fetch("stranger"), a, "open before any policy");
    let deny = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-a}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress]
"#;
    s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(deny));
    let blocked = eventually(Duration::from_secs(10), || fetch("friend") == "blocked");
    let nft = || {
        let out = Command::new("nft")
            .args(["list", "table", "ip", "krust-netpol"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    assert!(
        blocked,
        "default deny blocks every client\n{}\n{}",
        nft(),
        agent.log()
    );
    let allow = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: friends-to-a}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: friend}}}]
    ports: [{port: http}]
"#;
    s.kubectl_ok(KUBECTL, &["apply", "-f", "-"], Some(allow));
    let allowed = eventually(Duration::from_secs(10), || fetch("friend") == a);
    assert!(
        allowed,
        "the allow rule lets the friend through (named port)"
    );
    assert_eq!(fetch("stranger"), "blocked", "and nobody else");
    assert_eq!(
        curl(&["-H", "Host: a.example", &base]),
        a,
        "the node itself (the ingress) still reaches the pod"
    );
    s.kubectl(&["delete", "networkpolicy", "deny-a", "friends-to-a"]);
    let reopened = eventually(Duration::from_secs(10), || fetch("stranger") == a);
    assert!(reopened, "removing the policies reopens the pod");
    drop(agent);
}
