"""An HTTPS admission webhook for the end-to-end tests, written as users write theirs.

Usage: webhook_server.py PORT CERT KEY

Paths:
  /validate  refuses pods labelled `forbidden: "true"` with a reason, allows the rest
  /mutate    adds the label `mutated-by: webhook` (a JSONPatch)
  /slow      answers after 5 seconds (for timeoutSeconds)
Prints "listening" once it accepts connections.
"""

import base64
import json
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def review_response(request, **fields):
    response = {"uid": request["uid"], "allowed": True}
    response.update(fields)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def validate(request):
    labels = (request.get("object") or {}).get("metadata", {}).get("labels") or {}
    if labels.get("forbidden") == "true":
        return review_response(
            request,
            allowed=False,
            status={"code": 403, "reason": "Forbidden", "message": "pods labelled forbidden=true are not allowed"},
        )
    return review_response(request, warnings=["checked by the test webhook"])


def mutate(request):
    labels = (request.get("object") or {}).get("metadata", {}).get("labels")
    ops = []
    if labels is None:
        ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
    ops.append({"op": "add", "path": "/metadata/labels/mutated-by", "value": "webhook"})
    patch = base64.b64encode(json.dumps(ops).encode()).decode()
    return review_response(request, patch=patch, patchType="JSONPatch")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        review = json.loads(body)
        path = self.path.split("?")[0]
        if path == "/slow":
            time.sleep(5)
            answer = review_response(review["request"])
        elif path == "/mutate":
            answer = mutate(review["request"])
        else:
            answer = validate(review["request"])
        out = json.dumps(answer).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def log_message(self, *args):
        pass


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
