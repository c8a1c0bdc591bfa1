"""The Python kubernetes client against krust: create, list, watch, patch, delete; a watch
replayed from a LIST's resourceVersion; the client's SharedInformer; typed models of fresh
workloads; an AlreadyExists body as upstream writes it.

Usage: python3 client_e2e.py KUBECONFIG
"""
import json
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.informer import SharedInformer

# What kube-apiserver answers, byte for byte, for a second create of ConfigMap `pycm`.
ALREADY_EXISTS = (
    '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
    '"message":"configmaps \\"pycm\\" already exists","reason":"AlreadyExists",'
    '"details":{"name":"pycm","kind":"configmaps"},"code":409}\n'
)


def cm(name, data=None, labels=None):
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data)


def watch_replays_from_a_list(core):
    """Events after a LIST's resourceVersion, exactly, then the end at timeoutSeconds."""
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py-replay")))
    mine = {"test": "replay"}
    core.create_namespaced_config_map("py-replay", cm("before", labels=mine))
    listed = core.list_namespaced_config_map("py-replay", label_selector="test=replay")
    rv = listed.metadata.resource_version
    assert [c.metadata.name for c in listed.items] == ["before"], listed.items
    core.create_namespaced_config_map("py-replay", cm("r", {"a": "1"}, mine))
    core.patch_namespaced_config_map("r", "py-replay", {"data": {"a": "2"}})
    core.delete_namespaced_config_map("r", "py-replay")
    w = watch.Watch()
    seen = []
    started = time.monotonic()
    for ev in w.stream(core.list_namespaced_config_map, namespace="py-replay",
                       label_selector="test=replay", resource_version=rv, timeout_seconds=3, allow_watch_bookmarks=True):
        if ev["type"] == "BOOKMARK":
            continue
        seen.append((ev["type"], ev["object"].metadata.name, (ev["object"].data or {}).get("a")))
    took = time.monotonic() - started
    assert seen == [("ADDED", "r", "1"), ("MODIFIED", "r", "2"), ("DELETED", "r", "2")], seen
    assert 2.5 <= took < 15, "the watch ended after %.1f s, not at timeoutSeconds=3" % took


def informer_follows_changes(core):
    """The client's own SharedInformer: adds, updates, deletes and periodic resyncs."""
    ns = "py-informer"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    mine = {"test": "informer"}
    core.create_namespaced_config_map(ns, cm("old", {"v": "0"}, mine))
    events = []
    lock = threading.Lock()

    def on(kind):
        def handler(obj):
            with lock:
                events.append((kind, obj.metadata.name, (obj.data or {}).get("v")))
        return handler

    inf = SharedInformer(core.list_namespaced_config_map, namespace=ns, resync_period=2,
                         label_selector="test=informer")
    for kind in ("ADDED", "MODIFIED", "DELETED"):
        inf.add_event_handler(kind, on(kind))
    inf.start()

    def wait_for(pred, what, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                if pred(list(events)):
                    return
            time.sleep(0.1)
        raise AssertionError("informer never saw %s: %s" % (what, events))

    try:
        wait_for(lambda e: ("ADDED", "old", "0") in e, "the initial list")
        core.create_namespaced_config_map(ns, cm("new", {"v": "1"}, mine))
        wait_for(lambda e: ("ADDED", "new", "1") in e, "the add")
        core.patch_namespaced_config_map("new", ns, {"data": {"v": "2"}})
        wait_for(lambda e: ("MODIFIED", "new", "2") in e, "the update")
        core.delete_namespaced_config_map("new", ns)
        wait_for(lambda e: any(k == "DELETED" and n == "new" for k, n, _ in e), "the delete")
        # A resync lists again and reports the unchanged object as MODIFIED.
        wait_for(lambda e: ("MODIFIED", "old", "0") in e, "a resync", timeout=30)
        names = sorted(o.metadata.name for o in inf.cache.list())
        assert names == ["old"], names
    finally:
        inf.stop()


def typed_models_of_fresh_workloads(core):
    """Fresh objects read back through the typed models (required fields present)."""
    ns = "py-models"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    apps, batch = client.AppsV1Api(), client.BatchV1Api()
    hpa = client.AutoscalingV2Api()

    def template(app):
        return client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": app}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        )

    meta = client.V1ObjectMeta
    apps.create_namespaced_daemon_set(ns, client.V1DaemonSet(
        metadata=meta(name="ds"), spec=client.V1DaemonSetSpec(
            selector=client.V1LabelSelector(match_labels={"app": "ds"}), template=template("ds"))))
    core.create_namespaced_replication_controller(ns, client.V1ReplicationController(
        metadata=meta(name="rc"), spec=client.V1ReplicationControllerSpec(
            replicas=0, selector={"app": "rc"}, template=template("rc"))))
    apps.create_namespaced_deployment(ns, client.V1Deployment(
        metadata=meta(name="deploy"), spec=client.V1DeploymentSpec(
            replicas=0, selector=client.V1LabelSelector(match_labels={"app": "deploy"}),
            template=template("deploy"))))
    apps.create_namespaced_stateful_set(ns, client.V1StatefulSet(
        metadata=meta(name="sts"), spec=client.V1StatefulSetSpec(
            replicas=0, service_name="sts", selector=client.V1LabelSelector(match_labels={"app": "sts"}),
            template=template("sts"))))
    job_template = template("job")
    job_template.spec.restart_policy = "Never"
    batch.create_namespaced_job(ns, client.V1Job(
        metadata=meta(name="job"), spec=client.V1JobSpec(suspend=True, template=job_template)))
    hpa.create_namespaced_horizontal_pod_autoscaler(ns, client.V2HorizontalPodAutoscaler(
        metadata=meta(name="hpa"), spec=client.V2HorizontalPodAutoscalerSpec(
            min_replicas=1, max_replicas=3, scale_target_ref=client.V2CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name="deploy"))))

    ds = apps.read_namespaced_daemon_set("ds", ns)
    assert ds.status.number_ready == 0 and ds.status.desired_number_scheduled == 0, ds.status
    rc = core.read_namespaced_replication_controller("rc", ns)
    assert rc.status.replicas == 0, rc.status
    assert apps.read_namespaced_deployment("deploy", ns).spec.replicas == 0
    assert apps.read_namespaced_stateful_set("sts", ns).status.replicas == 0
    assert batch.read_namespaced_job("job", ns).spec.suspend is True
    assert hpa.read_namespaced_horizontal_pod_autoscaler("hpa", ns).spec.max_replicas == 3
    # And through lists and watches, which decode the same models.
    for lister in (apps.list_namespaced_daemon_set, core.list_namespaced_replication_controller,
                   apps.list_namespaced_deployment, apps.list_namespaced_stateful_set,
                   batch.list_namespaced_job, hpa.list_namespaced_horizontal_pod_autoscaler):
        assert len(lister(ns).items) == 1, lister
        for ev in watch.Watch().stream(lister, ns, timeout_seconds=1):
            assert ev["type"] == "ADDED", ev["type"]


def bad_query_values_are_upstreams_400s(core):
    """A query value the parameter codec can't decode is a 400 with Go's message."""
    try:
        core.list_namespaced_config_map("default", limit="ten")
        raise AssertionError("limit=ten accepted")
    except ApiException as e:
        assert e.status == 400, e
        assert json.loads(e.body)["message"] == 'strconv.ParseInt: parsing "ten": invalid syntax', e.body


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
    names = [n.metadata.name for n in core.list_namespace().items]
    assert "py" in names and "default" in names, names

    # A watch in another thread sees the create.
    seen = threading.Event()

    def watcher():
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, namespace="py", timeout_seconds=20):
            if ev["type"] == "ADDED" and ev["object"].metadata.name == "pycm":
                seen.set()
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()
    core.create_namespaced_config_map(
        "py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="pycm", labels={"app": "py"}), data={"a": "1"})
    )
    t.join(25)
    assert seen.is_set(), "watch did not see the ConfigMap"

    listed = core.list_namespaced_config_map("py", label_selector="app=py").items
    assert [c.metadata.name for c in listed] == ["pycm"], listed

    core.patch_namespaced_config_map("pycm", "py", {"data": {"a": "2", "b": "3"}})
    got = core.read_namespaced_config_map("pycm", "py")
    assert got.data == {"a": "2", "b": "3"}, got.data

    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="pydep"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "pydep"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "pydep"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
            ),
        ),
    )
    apps.create_namespaced_deployment("py", dep)
    apps.patch_namespaced_deployment_scale("pydep", "py", {"spec": {"replicas": 5}})
    assert apps.read_namespaced_deployment("pydep", "py").spec.replicas == 5

    core.delete_namespaced_config_map("pycm", "py")
    try:
        core.read_namespaced_config_map("pycm", "py")
        raise AssertionError("deleted ConfigMap still readable")
    except ApiException as e:
        assert e.status == 404, e

    try:
        core.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name")))
        raise AssertionError("bad name accepted")
    except ApiException as e:
        assert e.status == 422, e
    try:
        core.create_namespaced_config_map("py", cm("pycm"))
        core.create_namespaced_config_map("py", cm("pycm"))
        raise AssertionError("second create accepted")
    except ApiException as e:
        assert e.status == 409, e
        assert e.body == ALREADY_EXISTS, repr(e.body)

    watch_replays_from_a_list(core)
    informer_follows_changes(core)
    typed_models_of_fresh_workloads(core)
    bad_query_values_are_upstreams_400s(core)
    print("python client scenario: ok")


if __name__ == "__main__":
    main(sys.argv[1])
