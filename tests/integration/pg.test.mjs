// latch on PostgreSQL: the API on the libpq backend, two `latch serve` nodes sharing one database
// (cross-node reads, one token request for a stampede split across nodes, no lost write when a
// node is SIGKILLed), and a database outage under load (clean 503s, recovery without restart).
// The server is a throwaway PostgreSQL started by tests/pg/start-pg (Unix socket only).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startStack, startLatch, tmpDir, api, LATCH_BIN, importBody } from './lib/stack.mjs';
import { burst, request } from './lib/load.mjs';
import { startPg } from './lib/pg.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const run = promisify(execFile);
let pg;
let s; // node A (with the fake NinjaOne and the webhook receiver)
let b; // node B: another `latch serve` on the same database

const getPath = (id, force = false) => `/connections/${encodeURIComponent(id)}?provider_config_key=ninjaone-rmm&force_refresh=${force}`;

/** A request that never throws: network errors become status 0; a hang becomes status -1. */
async function tryRequest(url, opts = {}, timeoutMs = 10000) {
  let timer;
  const timeout = new Promise((r) => { timer = setTimeout(() => r({ status: -1, json: null, body: Buffer.alloc(0) }), timeoutMs); });
  try {
    return await Promise.race([request(url, opts).catch((e) => ({ status: 0, error: e, json: null, body: Buffer.alloc(0) })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

before(async () => {
  pg = await startPg();
  const shared = {
    LATCH_DATABASE_URL: pg.url,
    // every node must open the same ciphertexts and hash API keys the same way
    LATCH_ENCRYPTION_KEY: crypto.randomBytes(32).toString('base64'),
    LATCH_REFRESH_MARGIN_S: '2',
    LATCH_BACKGROUND_REFRESH: 'false',
    LATCH_TOKEN_TIMEOUT_MS: '5000',
    LATCH_LOG_LEVEL: 'info',
    // the outage test reads as fast as it can for seconds; it measures store outages, not the
    // per-environment limit (2000/s), whose 429s it would otherwise count as failures
    LATCH_RATE_LIMIT_ENV: '1000000',
  };
  // tokens live 8 s and are due 2 s before that: the new token of a refresh stays fresh for 6 s,
  // so a commit slowed by a busy disk cannot make it due again before the last waiter sees it
  s = await startStack({ tokenLifetime: 8, env: shared });
  // node B starts after A created the shared state (dev environment, index key)
  b = await startLatch({ dir: tmpDir('latch-b-'), env: s.env });
});

after(async () => {
  await b?.stop();
  await s?.stop();
  await pg?.destroy();
});

const apiB = (method, p, body) => api(b.url, s.secretKey, method, p, body);

test('the API works on PostgreSQL: import, get, list, link through a session; latch migrate', async () => {
  let r = await s.api('POST', '/connections', importBody('pg-1', { tags: { team: 'blue' }, end_user: { id: 'u-1', email: 'u1@example.com' } }));
  assert.equal(r.status, 201, r.text);
  r = await s.api('POST', '/connections', importBody('pg-2'));
  assert.equal(r.status, 201, r.text);
  r = await s.api('GET', `${getPath('pg-1')}&refresh_token=false`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.credentials.token, 'tok-pg-1');
  assert.equal(r.json.tags.team, 'blue');
  r = await s.api('GET', '/connections?search=U1@EXAMPLE');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.connections.map((c) => c.connection_id), ['pg-1']);
  r = await s.api('GET', '/connections');
  assert.deepEqual(r.json.connections.map((c) => c.connection_id).slice(0, 2), ['pg-2', 'pg-1'], 'newest first');

  const d = await s.createSession({ end_user: { id: 'msp-pg', email: 'ops@msp.example' } });
  r = await s.link(d.token);
  assert.equal(r.status, 200, r.text);
  r = await s.api('GET', getPath(r.json.connectionId));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.connection_config.instance, 'eu.ninjarmm.com');

  // `latch migrate` against the live database: idempotent, reports the version
  const { stdout } = await run(LATCH_BIN, ['migrate'], { env: { PATH: process.env.PATH, ...s.env, LATCH_KEY_FILE: `${s.dir}/unused.key` }, cwd: s.dir });
  assert.match(stdout, /schema version 5/);
  assert.equal(await pg.query('SELECT count(*) FROM schema_migrations'), '5');
});

test('two nodes: a connection linked through node A is read through node B', async () => {
  const d = await s.createSession({ end_user: { id: 'cross-node' } });
  const l = await s.link(d.token);
  assert.equal(l.status, 200, l.text);
  const a = await s.api('GET', getPath(l.json.connectionId));
  const r = await apiB('GET', getPath(l.json.connectionId));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.credentials.token, a.json.credentials.token);
  assert.equal(r.json.credentials.client_id, s.client.client_id);
  // and a write through B is visible through A
  const m = await apiB('POST', '/connection/metadata', { connection_id: l.json.connectionId, provider_config_key: 'ninjaone-rmm', metadata: { via: 'B' } });
  assert.ok(m.status >= 200 && m.status < 300, m.text);
  const back = await s.api('GET', getPath(l.json.connectionId));
  assert.deepEqual(back.json.metadata, { via: 'B' });
});

test('1,000 concurrent reads split across both nodes on an expired token: one token request', async () => {
  const d = await s.createSession({ end_user: { id: 'stampede' } });
  const l = await s.link(d.token);
  assert.equal(l.status, 200, l.text);
  const id = l.json.connectionId;
  const old = (await s.api('GET', getPath(id))).json.credentials.token;
  await sleep(8300); // expired (lifetime 8 s)
  const before = (await s.fake.stats()).token_requests;
  const t0 = Date.now();
  const results = await burst(1000, (i, agent) => request(`${i % 2 ? b.url : s.latchUrl}${getPath(id)}`,
    { agent, headers: { authorization: `Bearer ${s.secretKey}` } }));
  const ms = Date.now() - t0;
  const requests = (await s.fake.stats()).token_requests - before;
  const tokens = new Set();
  for (const r of results) {
    assert.equal(r.status, 200, r.body.toString().slice(0, 300));
    tokens.add(r.json.credentials.token);
  }
  console.log(`# stampede: 1000 requests over 2 nodes in ${ms} ms, ${requests} token request(s)`);
  assert.equal(requests, 1, 'exactly one token request across both nodes');
  assert.equal(tokens.size, 1, 'every caller on both nodes got the same new token');
  assert.ok(!tokens.has(old));
});

test('SIGKILL of a node mid-load loses no acknowledged write; the other node keeps serving', async () => {
  const c = await startLatch({ dir: tmpDir('latch-c-'), env: s.env });
  const acked = [];
  const fromA = [];
  let killed = false;
  const N = 600;
  const load = burst(N, async (i, agent) => {
    const id = `kill-${i}`;
    const onC = i % 2 === 1;
    const r = await tryRequest(`${onC ? c.url : s.latchUrl}/connections`, {
      agent, method: 'POST', body: JSON.stringify(importBody(id)),
      headers: { authorization: `Bearer ${s.secretKey}`, 'content-type': 'application/json' },
    });
    if (r.status >= 200 && r.status < 300) acked.push(id);
    if (!onC) fromA.push(r.status);
    return r;
  }, { sockets: 32 });
  // kill node C once it has acknowledged a good number of writes (it is mid-load then)
  const killBy = Date.now() + 10000;
  while (acked.filter((id) => Number(id.split('-')[1]) % 2 === 1).length < 40 && Date.now() < killBy) await sleep(5);
  c.child.kill('SIGKILL');
  killed = true;
  await load;
  assert.ok(killed);
  const ackedOnC = acked.filter((id) => Number(id.split('-')[1]) % 2 === 1).length;
  console.log(`# kill: ${acked.length}/${N} writes acknowledged (${ackedOnC} by the killed node)`);
  assert.ok(ackedOnC > 0 && ackedOnC < N / 2, `the kill landed mid-load (node C acked ${ackedOnC})`);
  assert.deepEqual([...new Set(fromA)], [201], 'node A answered every one of its writes');
  // every acknowledged write is there, read through the surviving node
  const reads = await burst(acked.length, (i, agent) => request(`${s.latchUrl}${getPath(acked[i])}&refresh_token=false`,
    { agent, headers: { authorization: `Bearer ${s.secretKey}` } }), { sockets: 32 });
  reads.forEach((r, i) => {
    assert.equal(r.status, 200, `${acked[i]}: ${r.body.toString().slice(0, 200)}`);
    assert.equal(r.json.credentials.token, `tok-${acked[i]}`);
  });
  // and node A still takes writes
  const after = await s.api('POST', '/connections', importBody('after-kill'));
  assert.equal(after.status, 201, after.text);
});

test('PostgreSQL stopped under load: clean 503s, no hang, no crash; back without restarting latch', async () => {
  const r0 = await s.api('POST', '/connections', importBody('outage'));
  assert.equal(r0.status, 201, r0.text);
  const statuses = new Map();
  const bodies = new Set();
  let stop = false;
  let downAt = 0;
  const worker = async (k) => {
    while (!stop) {
      const url = `${k % 2 ? b.url : s.latchUrl}${getPath('outage')}`;
      const t = Date.now();
      const r = await tryRequest(url, { headers: { authorization: `Bearer ${s.secretKey}` } }, 8000);
      const key = r.status === 503 && downAt ? `503 in ${Date.now() - t < 1000 ? '<1s' : '>=1s'}` : String(r.status);
      statuses.set(key, (statuses.get(key) || 0) + 1);
      if (r.status === 503) bodies.add(r.json?.error?.code);
    }
  };
  const workers = Array.from({ length: 16 }, (_, k) => worker(k));
  await sleep(300);
  downAt = Date.now();
  await pg.stop(); // pg_ctl stop -m fast
  await sleep(2500);
  // latch is still alive and answering (503) while the database is down
  const down = await s.api('GET', getPath('outage'));
  assert.equal(down.status, 503, down.text);
  assert.equal(down.json.error.code, 'service_unavailable');
  const downB = await apiB('POST', '/connections', importBody('while-down'));
  assert.equal(downB.status, 503, downB.text);
  assert.equal(s.latch.child.exitCode, null);
  assert.equal(b.child.exitCode, null);
  await pg.start();
  const upAt = Date.now();
  // both nodes recover by themselves
  let okA = null;
  let okB = null;
  while (Date.now() - upAt < 10000 && (!okA || !okB)) {
    okA = okA || ((await s.api('GET', getPath('outage'))).status === 200 ? Date.now() - upAt : null);
    okB = okB || ((await apiB('GET', getPath('outage'))).status === 200 ? Date.now() - upAt : null);
    if (!okA || !okB) await sleep(100);
  }
  stop = true;
  await Promise.all(workers);
  console.log(`# outage: statuses ${JSON.stringify(Object.fromEntries(statuses))}; recovered A in ${okA} ms, B in ${okB} ms`);
  assert.ok(okA !== null && okB !== null, 'both nodes serve again after PostgreSQL restarts');
  for (const k of statuses.keys()) assert.ok(['200', '503 in <1s'].includes(k), `unexpected outcome ${k} (500, hang, reset or slow 503)`);
  assert.ok((statuses.get('503 in <1s') || 0) > 0, 'the outage was observed');
  assert.deepEqual([...bodies], ['service_unavailable']);
  const w = await apiB('POST', '/connections', importBody('after-outage'));
  assert.equal(w.status, 201, w.text);
  const rd = await s.api('GET', `${getPath('after-outage')}&refresh_token=false`);
  assert.equal(rd.status, 200, rd.text);
});
