// The lmdb-js peer of `python -m benchmarks` (benchmarks/lmdbjs.py starts it; not run alone).
//
// node lmdbjs_peer.mjs ENV_DIR opens (creates) an environment with lmdb-js, prints one
// JSON line {"ready": true, ...}, then answers each request line read from stdin with one
// JSON line. lmdb-js 3 writes LMDB's data format 2, which neither reads nor writes the
// format-1 files of py-lmdb (it crashes on them), so the Python side first sends the data set:
// {"load": {"keys": HEX, "values": HEX, "key_size": N, "value_size": M}} stores it in one
// transaction and answers {"loaded": COUNT}.
// A request {"keys": HEX, "key_size": N, "concurrency": C} splits the keys
// round-robin over C async functions, each doing `await db.get(key)` in a loop (what an
// lmdb-js user writes: get is synchronous, the await yields to the microtask queue), and
// answers {"hits": H, "seconds": S}, S timed around the gets only. {"quit": true} or the end
// of stdin closes the environment and exits.
import { createInterface } from 'node:readline';
import { open } from 'lmdb';

const path = process.argv[2];
const db = open({ path, encoding: 'binary', keyEncoding: 'binary' });

async function worker(keys) {
  let hits = 0;
  for (const key of keys) {
    if ((await db.get(key)) !== undefined) hits++;
  }
  return hits;
}

async function getConcurrent(request) {
  const keys = split(request.keys, request.key_size);
  const concurrency = request.concurrency;
  const shares = Array.from({ length: concurrency }, () => []);
  keys.forEach((key, i) => shares[i % concurrency].push(key));
  const t0 = process.hrtime.bigint();
  const hits = (await Promise.all(shares.map(worker))).reduce((a, b) => a + b, 0);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { hits, seconds };
}

function split(hex, size) {
  const all = Buffer.from(hex, 'hex');
  const out = [];
  for (let i = 0; i * size < all.length; i++) out.push(all.subarray(i * size, (i + 1) * size));
  return out;
}

function load(request) {
  const keys = split(request.keys, request.key_size);
  const values = split(request.values, request.value_size);
  db.transactionSync(() => {
    for (let i = 0; i < keys.length; i++) db.putSync(keys[i], values[i]);
  });
  return { loaded: keys.length };
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
process.stdout.write(JSON.stringify({ ready: true, node: process.versions.node }) + '\n');
for await (const line of lines) {
  if (!line.trim()) continue;
  const request = JSON.parse(line);
  if (request.quit) break;
  try {
    const reply = request.load ? load(request.load) : await getConcurrent(request);
    process.stdout.write(JSON.stringify(reply) + '\n');
  } catch (error) {
    process.stdout.write(JSON.stringify({ error: String(error) }) + '\n');
  }
}
await db.close();
