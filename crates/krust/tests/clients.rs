//! Client libraries against krust: kube-rs (rustls, the strictest TLS client) and the
//! Python `kubernetes` client.

mod common;

use common::Server;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};

#[test]
fn kube_rs_lists_creates_patches_and_watches() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        let client = kube::Client::try_from(config).expect("client");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(names.contains(&"kube-system".to_string()), "{names:?}");

        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let stream = watcher(cms.clone(), watcher::Config::default()).applied_objects();
        let mut stream = Box::pin(stream);
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("from-kube-rs".into());
        cm.data = Some([("k".to_string(), "v".to_string())].into());
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
        let patch = serde_json::json!({"data": {"k": "patched"}});
        let patched = cms
            .patch(
                "from-kube-rs",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("patch");
        assert_eq!(
            patched.data.and_then(|d| d.get("k").cloned()).as_deref(),
            Some("patched")
        );
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(obj) = stream.try_next().await.expect("watch") {
                if obj.metadata.name.as_deref() == Some("from-kube-rs") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(seen, "kube-rs watcher saw the created ConfigMap");
    });
}

/// The Python client: CRUD, a watch replayed from a LIST, its SharedInformer, typed models
/// of fresh workloads, upstream's AlreadyExists body and 400s (`tests/python/client_e2e.py`).
#[test]
fn python_client_create_list_watch_patch_delete() {
    let s = Server::start();
    common::client_scenario(
        "python3",
        "python/client_e2e.py",
        &[s.kubeconfig.as_os_str()],
        "python client scenario: ok",
    );
}

/// `@kubernetes/client-node`, another generated client: the same replayed watch.
#[test]
fn client_node_watch_replays_from_a_list() {
    let s = Server::start();
    common::client_scenario(
        "node",
        "node/watch_exec.mjs",
        &[s.kubeconfig.as_os_str(), "watch".as_ref()],
        "client-node watch scenario: ok",
    );
}
