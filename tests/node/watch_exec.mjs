// The JavaScript client (@kubernetes/client-node, a generated client) against krust: a watch
// replayed from a LIST's resourceVersion that ends at timeoutSeconds, and exec over
// WebSocket (v5.channel.k8s.io: stdout, stderr, exit codes, stdin closed at its end).
//
// Usage: node watch_exec.mjs KUBECONFIG watch
//        node watch_exec.mjs KUBECONFIG exec NAMESPACE POD
import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import * as k8s from '@kubernetes/client-node';

const [kubeconfig, mode, ...rest] = process.argv.slice(2);
const kc = new k8s.KubeConfig();
kc.loadFromFile(kubeconfig);

async function watchReplays() {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const namespace = 'js-replay';
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  const listed = await core.listNamespacedConfigMap({ namespace });
  const rv = listed.metadata.resourceVersion;
  await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: 'r' }, data: { a: '1' } } });
  await core.replaceNamespacedConfigMap({ name: 'r', namespace, body: { metadata: { name: 'r' }, data: { a: '2' } } });
  await core.deleteNamespacedConfigMap({ name: 'r', namespace });
  const seen = [];
  const started = Date.now();
  await new Promise((resolve, reject) => {
    new k8s.Watch(kc).watch(
      `/api/v1/namespaces/${namespace}/configmaps`,
      { resourceVersion: rv, allowWatchBookmarks: true, timeoutSeconds: 3 },
      (type, obj) => {
        if (type !== 'BOOKMARK') seen.push([type, obj.metadata.name, obj.data?.a]);
      },
      (err) => (err ? reject(err) : resolve()),
    ).catch(reject);
  });
  const took = (Date.now() - started) / 1000;
  assert.deepEqual(seen, [['ADDED', 'r', '1'], ['MODIFIED', 'r', '2'], ['DELETED', 'r', '2']]);
  assert.ok(took >= 2.5 && took < 15, `the watch ended after ${took} s, not at timeoutSeconds=3`);
}

function collect(stream) {
  const chunks = [];
  stream.on('data', (c) => chunks.push(c));
  return () => Buffer.concat(chunks).toString();
}

async function execOnce(namespace, pod, command, stdin) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out = collect(stdout);
  const err = collect(stderr);
  const status = await new Promise((resolve, reject) => {
    new k8s.Exec(kc)
      .exec(namespace, pod, 'c', command, stdout, stderr, stdin, false, resolve)
      .catch(reject);
    setTimeout(() => reject(new Error(`exec ${command} never ended`)), 30000);
  });
  // Output written before the status may still be in flight through the streams.
  await new Promise((r) => setTimeout(r, 200));
  let code = 0;
  if (status.status !== 'Success') {
    const cause = (status.details?.causes ?? []).find((c) => c.reason === 'ExitCode');
    code = cause ? Number(cause.message) : -1;
  }
  return [out(), err(), code];
}

async function execs(namespace, pod) {
  assert.deepEqual(
    await execOnce(namespace, pod, ['sh', '-c', 'echo out; echo err >&2; exit 3'], null),
    ['out\n', 'err\n', 3],
  );
  assert.deepEqual(
    await execOnce(namespace, pod, ['cat'], Readable.from(['line one\n', 'line two\n'])),
    ['line one\nline two\n', '', 0],
  );
}

if (mode === 'watch') {
  await watchReplays();
} else if (mode === 'exec') {
  await execs(rest[0], rest[1]);
} else {
  throw new Error(`unknown mode ${mode}`);
}
console.log(`client-node ${mode} scenario: ok`);
