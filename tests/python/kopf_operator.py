"""An operator written with kopf (https://kopf.readthedocs.io): a Greeter becomes a
Deployment of busybox replicas owned by it, and the handler's result lands in the
Greeter's status. Run by crates/krust/tests/customresources.rs with
`python3 -m kopf run --standalone --namespace=default kopf_operator.py`.
"""
import kopf
import kubernetes

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: greeters.example.com
spec:
  group: example.com
  names: {plural: greeters, singular: greeter, kind: Greeter}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              replicas: {type: integer, default: 1}
              message: {type: string}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"""


@kopf.on.startup()
def configure(settings, **_):
    settings.posting.enabled = True
    settings.persistence.finalizer = "example.com/greeter"


@kopf.on.create("example.com", "v1", "greeters")
def create_greeter(spec, name, namespace, **_):
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-greeter", "labels": {"greeter": name}},
        "spec": {
            "replicas": spec.get("replicas", 1),
            "selector": {"matchLabels": {"greeter": name}},
            "template": {
                "metadata": {"labels": {"greeter": name}},
                "spec": {"containers": [{
                    "name": "greeter",
                    "image": "busybox",
                    "command": ["sh", "-c", f"echo {spec.get('message', '')}; sleep 3600"],
                }]},
            },
        },
    }
    kopf.adopt(deployment)
    kubernetes.config.load_kube_config()
    kubernetes.client.AppsV1Api().create_namespaced_deployment(namespace, deployment)
    return {"deployment": deployment["metadata"]["name"]}
