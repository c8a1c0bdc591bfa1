"""The Python kubernetes client against krust: create, list, watch, patch, delete.

Usage: python3 client_e2e.py KUBECONFIG
"""
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


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
    print("python client scenario: ok")


if __name__ == "__main__":
    main(sys.argv[1])
