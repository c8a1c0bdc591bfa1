"""The Python kubernetes client's CustomObjectsApi against krust, on the Widget definition
of tests/manifests/crd-widgets.yaml: create, get, list with a label selector, a watch
replayed from the list's resourceVersion, a merge patch, the status subresource, an
invalid object refused with a 422, delete.

Usage: python3 crd_e2e.py KUBECONFIG
"""
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

G, V, P = "example.com", "v1", "widgets"


def widget(name, replicas, labels=None):
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Widget",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"replicas": replicas},
    }


def main():
    config.load_kube_config(sys.argv[1])
    api = client.CustomObjectsApi()
    ns = "default"
    made = api.create_namespaced_custom_object(G, V, ns, P, widget("py1", 1, {"team": "a"}))
    assert made["spec"]["maxReplicas"] == 10, made
    api.create_namespaced_custom_object(G, V, ns, P, widget("py2", 2, {"team": "b"}))
    listed = api.list_namespaced_custom_object(G, V, ns, P, label_selector="team=a")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["py1"], listed
    rv = listed["metadata"]["resourceVersion"]

    api.patch_namespaced_custom_object(G, V, ns, P, "py1", {"spec": {"replicas": 4}})
    api.patch_namespaced_custom_object_status(G, V, ns, P, "py1", {"status": {"message": "ready"}})
    got = api.get_namespaced_custom_object(G, V, ns, P, "py1")
    assert got["spec"]["replicas"] == 4 and got["status"]["message"] == "ready", got

    seen = []
    w = watch.Watch()
    for ev in w.stream(api.list_namespaced_custom_object, G, V, ns, P,
                       resource_version=rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"]["metadata"]["name"]))
        if len(seen) == 2:
            w.stop()
    assert seen == [("MODIFIED", "py1"), ("MODIFIED", "py1")], seen

    try:
        api.create_namespaced_custom_object(G, V, ns, P, widget("py3", 50))
        raise AssertionError("an invalid widget was created")
    except ApiException as e:
        assert e.status == 422, e
        assert "replicas must not exceed maxReplicas" in e.body, e.body

    api.delete_namespaced_custom_object(G, V, ns, P, "py2")
    names = [i["metadata"]["name"] for i in api.list_namespaced_custom_object(G, V, ns, P)["items"]]
    assert names == ["py1"], names
    print("crd scenario: ok")


if __name__ == "__main__":
    main()
