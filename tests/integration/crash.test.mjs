// Crash consistency: latch is SIGKILLed at random moments (>= 200 times) while a load generator
// links accounts against the fake NinjaOne, imports connections, writes metadata, forces token
// refreshes, and `latch keys rotate` runs now and then in another process. After every restart:
// SQLite's integrity_check is "ok", every request latch answered 2xx is still there (a sample
// of older ones plus everything acknowledged since the previous check), and the stored secrets
// still decrypt (GET /connections/:id returns 200 with credentials). At the end, everything
// acknowledged during the whole run is checked.
//
// Env: CRASH_KILLS (default 200), CRASH_SEED.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startStack, LATCH_BIN } from './lib/stack.mjs';
import { seededRandom } from './lib/load.mjs';

const KILLS = Number(process.env.CRASH_KILLS || 200);
const SEED = Number(process.env.CRASH_SEED || Math.floor(Math.random() * 2 ** 31));
const WORKERS = 6;
const PCK = 'ninjaone-rmm';

const rnd = seededRandom(SEED);
const ri = (n) => Math.floor(rnd() * n);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let s;
/** connection_id -> { kind, metaSeq (highest acknowledged metadata seq), worker } */
const acked = new Map();
let pendingCheck = new Set();
const stats = { link: 0, import: 0, metadata: 0, refresh: 0, rotate: 0, rotateFailed: 0, errors: 0, non2xx: {} };

/** fetch with a timeout; network errors (latch being killed) resolve to null. */
async function call(method, p, body, { key = 'secret', timeoutMs = 5000 } = {}) {
  const headers = {};
  if (key === 'secret') headers.authorization = `Bearer ${s.secretKey}`;
  let payload;
  if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const r = await fetch(s.latchUrl + p, { method, headers, body: payload, signal: ctl.signal });
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    return { status: r.status, json, text };
  } catch {
    stats.errors++;
    return null;
  } finally {
    clearTimeout(t);
  }
}

function note(r, what) {
  if (r && (r.status < 200 || r.status >= 300)) {
    const k = `${what}:${r.status}`;
    stats.non2xx[k] = (stats.non2xx[k] || 0) + 1;
  }
}

function importBody(id) {
  return {
    provider_config_key: PCK,
    connection_id: id,
    connection_config: { instance: s.client.instance },
    credentials: { type: 'OAUTH2_CC', token: `tok-${id}`, client_id: s.client.client_id, client_secret: s.client.client_secret },
    metadata: { seq: 0 },
  };
}

let seq = 0;
async function loadWorker(w, stop) {
  const mine = [];
  while (!stop.done) {
    const op = ri(10);
    if (op < 3) {
      // link through a connect session, the way the Connect UI does
      const sess = await call('POST', '/connect/sessions', { end_user: { id: `crash-${w}`, email: 'crash@example.com' } });
      note(sess, 'session');
      if (sess?.status !== 201) { await sleep(20); continue; }
      const q = new URLSearchParams({ connect_session_token: sess.json.data.token, 'params[instance]': s.client.instance });
      const r = await call('POST', `/oauth2/auth/${PCK}?${q}`, { client_id: s.client.client_id, client_secret: s.client.client_secret }, { key: null });
      note(r, 'link');
      if (r?.status === 200 && r.json?.connectionId) {
        acked.set(r.json.connectionId, { kind: 'link', metaSeq: -1, worker: w });
        pendingCheck.add(r.json.connectionId);
        mine.push(r.json.connectionId);
        stats.link++;
      }
    } else if (op < 6) {
      const id = `imp-${w}-${++seq}`;
      const r = await call('POST', '/connections', importBody(id));
      note(r, 'import');
      if (r?.status === 201) {
        acked.set(id, { kind: 'import', metaSeq: 0, worker: w });
        pendingCheck.add(id);
        mine.push(id);
        stats.import++;
      }
    } else if (op < 8 && mine.length) {
      // metadata: per worker, per connection, a strictly increasing sequence number
      const id = mine[ri(mine.length)];
      const n = ++seq;
      const r = await call('POST', '/connections/metadata', { connection_id: id, provider_config_key: PCK, metadata: { seq: n } });
      note(r, 'metadata');
      if (r?.status === 201) {
        const a = acked.get(id);
        if (a && n > a.metaSeq) a.metaSeq = n;
        pendingCheck.add(id);
        stats.metadata++;
      }
    } else if (mine.length) {
      const id = mine[ri(mine.length)];
      const r = await call('GET', `/connections/${encodeURIComponent(id)}?provider_config_key=${PCK}&force_refresh=true`);
      note(r, 'refresh');
      if (r?.status === 200) { pendingCheck.add(id); stats.refresh++; }
    } else {
      await sleep(5);
    }
  }
}

function cliEnv() {
  return {
    PATH: process.env.PATH,
    LATCH_DATABASE_URL: path.join(s.dir, 'latch.db'),
    LATCH_KEY_FILE: path.join(s.dir, 'latch.key'),
    LATCH_LOG_LEVEL: 'warn',
    ...s.env,
  };
}

/** `latch keys rotate` in another process, concurrently with the load (and maybe a kill). */
function rotate() {
  return new Promise((resolve) => {
    const child = spawn(LATCH_BIN, ['keys', 'rotate'], { cwd: s.dir, env: cliEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('exit', (code) => {
      if (code === 0) stats.rotate++;
      else stats.rotateFailed++;
      resolve({ code, out });
    });
  });
}

function integrityCheck() {
  return new Promise((resolve, reject) => {
    execFile('sqlite3', [path.join(s.dir, 'latch.db'), 'PRAGMA integrity_check;'], { timeout: 30000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`sqlite3 failed: ${err.message} ${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/** Reads a connection back: it exists, its credentials decrypt, its metadata is not older. */
async function verify(id) {
  const a = acked.get(id);
  for (let attempt = 0; ; attempt++) {
    const r = await call('GET', `/connections/${encodeURIComponent(id)}?provider_config_key=${PCK}`, undefined, { timeoutMs: 10000 });
    if (r === null && attempt < 3) { await sleep(100); continue; }
    if (r === null) return `${id}: no answer`;
    if (r.status !== 200) return `${id} (${a.kind}): GET answered ${r.status} ${r.text.slice(0, 200)}`;
    const c = r.json?.credentials;
    if (!c || typeof c.token !== 'string' || !c.token || c.client_secret !== s.client.client_secret) {
      return `${id} (${a.kind}): credentials missing or not decrypted: ${JSON.stringify(c)?.slice(0, 200)}`;
    }
    const m = r.json.metadata?.seq ?? -1;
    if (a.metaSeq >= 0 && !(m >= a.metaSeq)) return `${id}: metadata seq ${m} older than acknowledged ${a.metaSeq}`;
    return null;
  }
}

before(async () => {
  s = await startStack({
    tokenLifetime: 3600,
    env: { LATCH_LOG_LEVEL: 'info', LATCH_TOKEN_TIMEOUT_MS: '3000', LATCH_WEBHOOK_BACKOFF_MS: '50' },
  });
  console.log(`crash: seed=${SEED} kills=${KILLS}`);
});

after(async () => {
  console.log('crash stats:', JSON.stringify(stats));
  await s?.stop();
});

test(`${KILLS} SIGKILLs under load: database intact, every acknowledged write survives and decrypts`, { timeout: 600000 }, async () => {
  const problems = [];
  const t0 = Date.now();
  for (let k = 0; k < KILLS; k++) {
    const stop = { done: false };
    const workers = Array.from({ length: WORKERS }, (_, w) => loadWorker(w, stop));
    const rot = k % 8 === 3 ? rotate() : null;
    await sleep(100 + ri(300));
    const pid = s.latch.child.pid;
    await s.restartLatch('SIGKILL');
    assert.notEqual(s.latch.child.pid, pid, 'latch restarted with a new process');
    stop.done = true;
    await Promise.all(workers);
    if (rot) {
      const { code, out } = await rot;
      // a rotate racing a kill may fail (database locked, server gone): never fatal by itself,
      // what matters is that every secret still opens afterwards
      if (code !== 0 && !/locked|busy|unavailable/i.test(out)) problems.push(`keys rotate exited ${code}: ${out.slice(0, 300)}`);
    }

    const ic = await integrityCheck();
    if (ic !== 'ok') problems.push(`after kill ${k + 1}: integrity_check: ${ic.slice(0, 300)}`);
    // everything acknowledged since the last check, plus a sample of older ones
    const ids = new Set(pendingCheck);
    pendingCheck = new Set();
    const all = [...acked.keys()];
    for (let i = 0; i < 8 && all.length; i++) ids.add(all[ri(all.length)]);
    for (const id of ids) {
      const p = await verify(id);
      if (p) problems.push(`after kill ${k + 1}: ${p}`);
    }
    if (problems.length > 20) break;
  }
  // the whole acknowledged history, at the end
  for (const id of acked.keys()) {
    const p = await verify(id);
    if (p) problems.push(`final: ${p}`);
    if (problems.length > 40) break;
  }
  // the listing agrees, page by page (a page holds at most 10,000; the load is stopped, so the
  // newest-first order cannot shift between pages)
  const listed = new Set();
  for (let page = 0; ; page++) {
    const list = await call('GET', `/connections?limit=10000&page=${page}`, undefined, { timeoutMs: 20000 });
    assert.equal(list?.status, 200);
    const got = list.json.connections ?? list.json.data ?? [];
    for (const c of got) listed.add(c.connection_id);
    if (got.length < 10000) break;
  }
  const missing = [...acked.keys()].filter((id) => !listed.has(id));
  if (missing.length) problems.push(`missing from GET /connections: ${missing.slice(0, 10).join(', ')}`);

  console.log(`crash: ${KILLS} kills in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${acked.size} acknowledged connections checked`);
  assert.deepEqual(problems, []);
  assert.ok(stats.link > 0 && stats.import > 0 && stats.refresh > 0 && stats.metadata > 0, `the load did all kinds of work: ${JSON.stringify(stats)}`);
  assert.ok(stats.rotate > 0, `keys rotate succeeded at least once: ${JSON.stringify(stats)}`);
  // and the server is healthy at the end
  const h = await call('GET', '/health', undefined, { key: null });
  assert.equal(h?.status, 200);
});
