//! Reliability at scale, on both stores: a restart with far more data than one store
//! response may carry (gRPC's 4 MiB), and lists paged from one consistent snapshot while
//! writes go on, until compaction takes that snapshot away (410 Expired, as upstream).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use krust_store::suite::EtcdCluster;
use serde_json::Value;

const PODS: &str = "/api/v1/namespaces/default/pods";
const EVENTS: &str = "/api/v1/namespaces/default/events";
const CMS: &str = "/api/v1/namespaces/default/configmaps";
/// Only the API server: nothing else writes.
const BARE: &[&str] = &["--disable", "controllers,scheduler"];

/// A pod of about 1 KiB encoded, like a small real one.
fn pod(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p-{i:05}","labels":{{"app":"scale","tier":"t{t}"}},"annotations":{{"note":"{pad}"}}}},"spec":{{"containers":[{{"name":"c","image":"registry.example/app:1.0","env":[{{"name":"INDEX","value":"{i}"}}],"resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}"#,
        t = i % 7,
        pad = "x".repeat(256)
    )
}

fn event(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"e-{i:05}"}},"involvedObject":{{"kind":"Pod","name":"p-{i:05}","namespace":"default"}},"reason":"Scheduled","message":"Successfully assigned default/p-{i:05} to node-{n}","type":"Normal","source":{{"component":"scale-test"}}}}"#,
        n = i % 50
    )
}

fn get_json(client: &reqwest::blocking::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().expect("get");
    let code = r.status().as_u16();
    let body = r.text().expect("body");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (code, v)
}

/// One page: its items' (name, resourceVersion, data.i), its list revision, its token.
struct Page {
    items: Vec<(String, i64, String)>,
    revision: i64,
    token: Option<String>,
}

fn page(s: &Server, client: &reqwest::blocking::Client, path: &str, q: &str) -> Page {
    let (code, v) = get_json(client, &format!("{}{path}?{q}", s.url));
    assert_eq!(code, 200, "{v}");
    let rv = |x: &Value| {
        x.as_str()
            .and_then(|r| r.parse::<i64>().ok())
            .expect("resourceVersion")
    };
    let items = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                rv(&i["metadata"]["resourceVersion"]),
                i["data"]["i"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Page {
        items,
        revision: rv(&v["metadata"]["resourceVersion"]),
        token: v["metadata"]["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string),
    }
}

/// Every object under `path`, in pages of `limit`: the pages, the first page's revision.
fn list_paged(s: &Server, path: &str, limit: usize) -> (Vec<Page>, i64) {
    let client = s.http();
    let mut pages = vec![page(s, &client, path, &format!("limit={limit}"))];
    let first = pages[0].revision;
    while let Some(t) = pages.last().and_then(|p| p.token.clone()) {
        pages.push(page(
            s,
            &client,
            path,
            &format!("limit={limit}&continue={t}"),
        ));
        assert!(pages.len() < 10_000, "pagination does not end");
    }
    (pages, first)
}

fn names(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.items.iter().map(|i| i.0.clone()))
        .collect()
}

/// The bare server's flags, then `extra`, then the store's.
fn server_args<'a>(extra: &[&'a str], store_args: &'a [String]) -> Vec<&'a str> {
    BARE.iter()
        .chain(extra)
        .copied()
        .chain(store_args.iter().map(String::as_str))
        .collect()
}

fn etcd_args(cluster: &EtcdCluster) -> Vec<String> {
    vec![
        "--store".into(),
        "etcd".into(),
        "--etcd-endpoints".into(),
        cluster.endpoints().join(","),
    ]
}

/// 20,000 pods and 10,000 events (about 30 MiB encoded), `kill -9`, start again: every
/// object is served, in pages and in one list.
fn restart_with_30k_objects(dir: &std::path::Path, store_args: &[String]) {
    const N_PODS: usize = 20_000;
    const N_EVENTS: usize = 10_000;
    let args = server_args(&[], store_args);
    let mut s = Server::start_in(dir, &args);
    let t = Instant::now();
    s.create_many(PODS, N_PODS, 16, pod);
    s.create_many(EVENTS, N_EVENTS, 16, event);
    eprintln!("created {} objects in {:?}", N_PODS + N_EVENTS, t.elapsed());
    s.kill9();

    let t = Instant::now();
    let s = Server::start_in(dir, &args);
    eprintln!("ready again after {:?}", t.elapsed());
    let (pods, _) = list_paged(&s, PODS, 500);
    let want: Vec<String> = (0..N_PODS).map(|i| format!("p-{i:05}")).collect();
    assert_eq!(names(&pods), want, "every pod, once, in order");
    let (events, _) = list_paged(&s, EVENTS, 500);
    assert_eq!(names(&events).len(), N_EVENTS);
    // One unpaged list of every pod (over 20 MiB) is served too.
    let client = s.http();
    let (code, all) = get_json(&client, &format!("{}{PODS}", s.url));
    assert_eq!(code, 200);
    assert_eq!(all["items"].as_array().map(Vec::len), Some(N_PODS));
}

#[test]
fn thirty_thousand_objects_survive_kill_9_on_the_embedded_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    restart_with_30k_objects(tmp.path(), &[]);
}

#[test]
fn thirty_thousand_objects_survive_kill_9_on_etcd() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = rt.block_on(EtcdCluster::start(1));
    let tmp = tempfile::tempdir().expect("tempdir");
    restart_with_30k_objects(tmp.path(), &etcd_args(&cluster));
}

/// Creates new ConfigMaps and patches the first `existing` ones until stopped.
fn writer(s: &Server, existing: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let (client, url) = (s.http(), s.url.clone());
    std::thread::spawn(move || {
        let mut k = 0;
        while !stop.load(Ordering::Relaxed) && k < 100_000 {
            k += 1;
            let r = if k % 2 == 0 {
                let body = format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"n-{k}"}}}}"#
                );
                client
                    .post(format!("{url}{CMS}"))
                    .header("content-type", "application/json")
                    .body(body)
            } else {
                client
                    .patch(format!("{url}{CMS}/c-{:04}", k % existing))
                    .header("content-type", "application/merge-patch+json")
                    .body(format!(r#"{{"data":{{"i":"{k}"}}}}"#))
            };
            let code = r.send().map(|r| r.status().as_u16()).unwrap_or(0);
            assert!(code == 200 || code == 201, "write {k}: {code}");
        }
        k
    })
}

/// Pages of 500 taken while another client creates and patches: each object exactly once,
/// as it was at the first page. After compaction passes the first page's revision, its
/// token gets upstream's 410, with a token that continues (inconsistently) from now.
fn paged_snapshot_then_expiry(dir: &std::path::Path, store_args: &[String]) {
    const N: usize = 1_500;
    let args = server_args(&["--etcd-compaction-interval", "2s"], store_args);
    let s = Server::start_in(dir, &args);
    s.create_many(CMS, N, 8, |i| {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c-{i:04}"}},"data":{{"i":"0"}}}}"#
        )
    });
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&s, N, stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    let (pages, first) = list_paged(&s, CMS, 500);
    assert!(pages.len() >= 3, "{} pages", pages.len());
    let all: Vec<&(String, i64, String)> = pages.iter().flat_map(|p| &p.items).collect();
    let unique: BTreeSet<&str> = all.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(unique.len(), all.len(), "an object came twice");
    let want: BTreeSet<String> = (0..N).map(|i| format!("c-{i:04}")).collect();
    let got: BTreeSet<String> = unique.iter().map(|n| n.to_string()).collect();
    let newer: Vec<&&(String, i64, String)> = all.iter().filter(|i| i.1 > first).collect();
    assert!(
        newer.is_empty(),
        "objects newer than the first page: {newer:?}"
    );
    // Objects the writer created after the first page are not there; the ones it created
    // before are.
    let created: Vec<&String> = got.iter().filter(|n| n.starts_with("n-")).collect();
    assert!(want.is_subset(&got), "an object is missing");
    assert_eq!(got.len(), N + created.len());
    assert!(
        pages.iter().all(|p| p.revision == first),
        "pages at other revisions"
    );

    // An old token, once compaction has passed its revision: 410 Expired.
    let client = s.http();
    let p1 = page(&s, &client, CMS, "limit=500");
    let token = p1.token.expect("a continue token");
    let deadline = Instant::now() + Duration::from_secs(40);
    let expired = loop {
        let (code, v) = get_json(
            &client,
            &format!("{}{CMS}?limit=500&continue={token}", s.url),
        );
        if code == 410 {
            break v;
        }
        assert_eq!(code, 200, "{v}");
        assert!(Instant::now() < deadline, "the token never expired");
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.store(true, Ordering::Relaxed);
    let writes = w.join().expect("writer");
    assert!(writes > 10, "the writer wrote {writes} times");
    assert_eq!(expired["reason"], "Expired", "{expired}");
    assert_eq!(
        expired["message"],
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
    );
    let fresh = expired["metadata"]["continue"]
        .as_str()
        .expect("a token to go on with");
    let rest = page(&s, &client, CMS, &format!("limit=500&continue={fresh}"));
    assert_eq!(rest.items.len(), 500);
    assert!(
        rest.items[0].0.as_str() > p1.items[499].0.as_str(),
        "the remainder starts after the first page"
    );
}

#[test]
fn paged_lists_are_one_snapshot_until_compacted_on_the_embedded_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    paged_snapshot_then_expiry(tmp.path(), &[]);
}

#[test]
fn paged_lists_are_one_snapshot_until_compacted_on_etcd() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = rt.block_on(EtcdCluster::start(1));
    let tmp = tempfile::tempdir().expect("tempdir");
    paged_snapshot_then_expiry(tmp.path(), &etcd_args(&cluster));
}
