#!/usr/bin/env python3
"""Regenerates the golden request bodies in this directory.

Runs each kubectl command twice against a fake API server on 127.0.0.1: kubectl 1.33 sends
protobuf (NAME.pb), kubectl 1.31 sends JSON (NAME.json) for the same command line. The server
answers discovery and the few GETs drain needs, records every write body, and fails the write.

    python3 capture.py [KUBECTL_DIR]   # default /usr/lib/google-cloud-sdk/bin
"""
import http.server
import json
import os
import shlex
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
KUBECTL = os.path.join(sys.argv[1] if len(sys.argv) > 1 else "/usr/lib/google-cloud-sdk/bin", "kubectl.{}")
BIN_FILE = os.path.join(HERE, ".binfile")

COMMANDS = {
    "configmap": f"-n default create configmap cm1 --from-literal=a=b --from-literal=c=d --from-file=bin={BIN_FILE}",
    "secret": "-n default create secret generic s1 --from-literal=user=admin --from-literal=empty= --type=Opaque",
    "secret-docker": "-n default create secret docker-registry reg --docker-server=x.io --docker-username=u --docker-password=p",
    "namespace": "create namespace ns1",
    "deployment": "-n default create deployment web --image=nginx:1.25 --image=busybox --replicas=3 --port=80",
    "deployment-zero": "-n default create deployment zero --image=nginx --replicas=0",
    "job": "-n default create job j1 --image=busybox -- echo hi",
    "cronjob": "-n default create cronjob cj --image=busybox --schedule='*/1 * * * *' --restart=OnFailure -- date",
    "svc-clusterip": "-n default create service clusterip svc1 --tcp=80:8080 --tcp=443:https",
    "svc-nodeport": "-n default create service nodeport np --tcp=80:http --node-port=30080",
    "svc-lb": "-n default create service loadbalancer lb --tcp=5678:8080",
    "svc-externalname": "-n default create service externalname ext --external-name=bar.com",
    "svc-headless": "-n default create service clusterip hl --clusterip=None",
    "serviceaccount": "-n default create serviceaccount sa1",
    "priorityclass": "create priorityclass pc --value=1000 --global-default=false --description=d --preemption-policy=Never",
    "quota": "-n default create quota q --hard=cpu=1,memory=1G,pods=10,requests.storage=500Mi --scopes=BestEffort",
    "pdb-pct": "-n default create poddisruptionbudget pdb --selector=app=x --min-available=50%",
    "pdb-int": "-n default create poddisruptionbudget pdb2 --selector=app=x --max-unavailable=1",
    "rolebinding": "-n default create rolebinding rb --role=r1 --user=u1 --serviceaccount=default:sa1 --group=g",
    "clusterrolebinding": "create clusterrolebinding crb --clusterrole=view --user=u1",
    "ingress": "-n default create ingress ing --rule=foo.com/bar=svc1:8080,tls=my-cert --class=nginx --annotation=a=b",
    "token": "-n default create token sa1 --duration=1h --audience=api",
    "role": "-n default create role r1 --verb=get,list --resource=pods,deployments.apps --resource-name=x",
    "clusterrole": "create clusterrole cr --verb=get --resource=nodes --non-resource-url=/logs",
    "clusterrole-agg": "create clusterrole agg --aggregation-rule=a=b",
    "cani": "-n default auth can-i get pods",
    "whoami": "auth whoami",
    # Without pods/eviction in discovery, drain deletes with a DeleteOptions body.
    "drain-delete": "drain node1 --force --ignore-daemonsets --grace-period=30",
}

GROUPS = ["apps", "batch", "rbac.authorization.k8s.io", "policy", "authorization.k8s.io"]
RESOURCES = {
    "v1": [("pods", "Pod", True), ("nodes", "Node", False), ("services", "Service", True)],
    "apps/v1": [("deployments", "Deployment", True)],
    "batch/v1": [("jobs", "Job", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("clusterroles", "ClusterRole", False)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "authorization.k8s.io/v1": [("selfsubjectaccessreviews", "SelfSubjectAccessReview", False)],
}
NODE = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node1", "resourceVersion": "1"}}
POD = {"kind": "Pod", "apiVersion": "v1",
       "metadata": {"name": "p1", "namespace": "default", "uid": "u1", "resourceVersion": "1"},
       "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x"}]}}
bodies = []


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": g + "/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": g + "/v1", "version": "v1"}} for g in GROUPS]})
        gv = path[len("/api/"):] if path.startswith("/api/") else path[len("/apis/"):]
        if gv in RESOURCES:
            return self.reply(200, {"kind": "APIResourceList", "groupVersion": gv, "resources": [
                {"name": n, "singularName": "", "namespaced": ns, "kind": k,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                for n, k, ns in RESOURCES[gv]]})
        if path == "/api/v1/nodes/node1":
            return self.reply(200, NODE)
        if path == "/api/v1/pods":
            return self.reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [POD]})
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

    def write(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        bodies.append((self.command, self.headers.get("Content-Type", ""), body))
        if self.command == "PATCH" and self.path.startswith("/api/v1/nodes/node1"):
            return self.reply(200, NODE)
        self.reply(500, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "captured", "code": 500})

    do_POST = do_PUT = do_PATCH = do_DELETE = write


def main():
    with open(BIN_FILE, "wb") as f:
        f.write(b"text\x00\xff\xfebin")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for name, args in COMMANDS.items():
            for version, ext, media in (("1.33", "pb", "protobuf"), ("1.31", "json", "json")):
                bodies.clear()
                argv = [KUBECTL.format(version), "--server", url] + shlex.split(args)
                subprocess.run(argv, capture_output=True, timeout=60)
                found = [b for (method, ctype, b) in bodies if method != "PATCH" and media in ctype]
                if not found:
                    print(f"{name}: no {media} body from kubectl {version}", file=sys.stderr)
                    continue
                with open(os.path.join(HERE, f"{name}.{ext}"), "wb") as f:
                    f.write(found[-1])
                print(f"{name}.{ext}: {len(found[-1])} bytes")
    finally:
        server.shutdown()
        os.remove(BIN_FILE)


if __name__ == "__main__":
    main()
