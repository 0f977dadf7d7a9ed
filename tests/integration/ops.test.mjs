// The operations log (issue 14): every link, proxy call and management write gets an operation
// id in X-Latch-Operation-Id, its row shows up in GET /latch/operations (filters, cursor
// pagination, newest first) and GET /latch/operations/:id, scoped to the key's environment.
// Retention keeps the table bounded (LATCH_OPS_MAX_ROWS) while operations keep coming.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack } from './lib/stack.mjs';
import { request } from './lib/load.mjs';

const PCK = 'ninjaone-rmm';
let s;
let conn;
let linkOp;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until the background writer has stored operation id (it writes in batches). */
async function opById(id) {
  for (let i = 0; i < 50; i++) {
    const r = await s.api('GET', `/latch/operations/${id}`);
    if (r.status === 200) return r.json.data;
    assert.equal(r.status, 404, r.text);
    await sleep(100);
  }
  throw new Error(`operation ${id} never appeared`);
}

function px(endpoint, headers = {}) {
  return request(`${s.latchUrl}/proxy${endpoint}`, {
    method: 'GET',
    headers: { authorization: `Bearer ${s.secretKey}`, 'connection-id': conn, 'provider-config-key': PCK, ...headers },
  });
}

before(async () => {
  s = await startStack({ env: { LATCH_OPS_MAX_ROWS: '50', LATCH_OPS_PRUNE_INTERVAL_S: '1' } });
  const d = await s.createSession({ end_user: { id: 'ops-user', email: 'ops@example.com' } });
  const r = await s.link(d.token);
  assert.equal(r.status, 200, r.text);
  conn = r.json.connectionId;
  linkOp = r.headers.get('x-latch-operation-id');
});
after(async () => { await s?.stop(); });

test('a link gets an operation id, and its row has provider, integration, connection, end user', async () => {
  assert.match(linkOp ?? '', /^[0-9a-f]{26}$/);
  const op = await opById(linkOp);
  assert.equal(op.kind, 'link');
  assert.equal(op.outcome, 'success');
  assert.equal(op.integration, PCK);
  assert.equal(op.provider, 'ninjaone-rmm');
  assert.equal(op.connection_id, conn);
  assert.equal(op.end_user_id, 'ops-user');
  assert.equal(op.error, null);
  assert.ok(op.duration_ms >= 0);
});

test('a failed link is recorded with its error code', async () => {
  const d = await s.createSession({ end_user: { id: 'ops-bad' } });
  const r = await s.link(d.token, { client_secret: 'wrong-secret-value' });
  assert.ok(r.status >= 400);
  const op = await opById(r.headers.get('x-latch-operation-id'));
  assert.equal(op.kind, 'link');
  assert.equal(op.outcome, 'failure');
  assert.equal(op.error, 'client_credentials_fetch_error');
  assert.equal(typeof op.details.reason, 'string');
});

test('a proxy call: method, path without the query, upstream status, bytes, retries', async () => {
  const r = await px('/v2/organizations?pageSize=2&after=0');
  assert.equal(r.status, 200);
  const id = r.headers['x-latch-operation-id'];
  const op = await opById(id);
  assert.equal(op.kind, 'proxy');
  assert.equal(op.outcome, 'success');
  assert.equal(op.connection_id, conn);
  assert.equal(op.details.method, 'GET');
  assert.equal(op.details.endpoint, '/v2/organizations');
  assert.equal(op.details.upstream_status, 200);
  assert.equal(op.details.retries, 0);
  assert.ok(op.details.bytes_out > 0);
  assert.ok(!JSON.stringify(op).includes('pageSize'), 'no query values');
  const nf = await px('/v2/device/18');
  assert.equal(nf.status, 404);
  const bad = await opById(nf.headers['x-latch-operation-id']);
  assert.equal(bad.outcome, 'failure');
  assert.equal(bad.details.upstream_status, 404);
});

test('webhook deliveries and refreshes are recorded', async () => {
  // the link's creation webhook
  let r;
  for (let i = 0; i < 50; i++) {
    r = await s.api('GET', `/latch/operations?kind=webhook&connection_id=${conn}`);
    if (r.json.data.length > 0) break;
    await sleep(100);
  }
  const wh = r.json.data[0];
  assert.ok(wh, 'a webhook operation');
  assert.equal(wh.outcome, 'success');
  assert.equal(wh.details.status, 200);
  assert.equal(wh.details.attempt, 1);
  assert.equal(wh.details.operation, 'creation');
  assert.equal(wh.details.next_retry_at, null);
  // a forced refresh through the token read: the read quotes the refresh operation
  const g = await s.api('GET', `/connections/${conn}?provider_config_key=${PCK}&force_refresh=true`);
  assert.equal(g.status, 200, g.text);
  const id = g.headers.get('x-latch-operation-id');
  assert.match(id ?? '', /^[0-9a-f]{26}$/);
  const op = await opById(id);
  assert.equal(op.kind, 'refresh');
  assert.equal(op.outcome, 'success');
  assert.equal(op.details.why, 'forced');
  assert.equal(op.connection_id, conn);
  // an ordinary read makes no token request and no operation
  const plain = await s.api('GET', `/connections/${conn}?provider_config_key=${PCK}`);
  assert.equal(plain.headers.get('x-latch-operation-id'), null);
});

test('management writes are recorded with what and actor', async () => {
  const r = await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ops-extra' });
  assert.equal(r.status, 200, r.text);
  const op = await opById(r.headers.get('x-latch-operation-id'));
  assert.equal(op.kind, 'management');
  assert.equal(op.details.what, 'integration.create');
  assert.equal(op.details.actor, 'secret_key');
  // which key: its label (the test stack pins LATCH_SECRET_KEY, stored with that label)
  assert.equal(op.details.key_label, 'LATCH_SECRET_KEY');
  assert.equal(op.integration, 'ops-extra');
});

test('list: filters, newest first, cursor pagination, bounded limit, validation', async () => {
  for (let i = 0; i < 5; i++) assert.equal((await px(`/v2/echo?i=${i}`)).status, 200);
  await sleep(600);
  let r = await s.api('GET', `/latch/operations?kind=proxy&connection_id=${conn}&limit=2`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.data.length, 2);
  assert.ok(r.json.data[0].id > r.json.data[1].id, 'newest first');
  const seen = new Set(r.json.data.map((o) => o.id));
  let cursor = r.json.next_cursor;
  assert.ok(cursor);
  while (cursor) {
    r = await s.api('GET', `/latch/operations?kind=proxy&connection_id=${conn}&limit=2&cursor=${cursor}`);
    assert.equal(r.status, 200);
    for (const o of r.json.data) {
      assert.ok(!seen.has(o.id), 'pages do not overlap');
      assert.equal(o.kind, 'proxy');
      seen.add(o.id);
    }
    cursor = r.json.next_cursor;
  }
  assert.ok(seen.size >= 7);
  r = await s.api('GET', '/latch/operations?outcome=failure');
  assert.ok(r.json.data.every((o) => o.outcome === 'failure'));
  assert.ok(r.json.data.length >= 2);
  r = await s.api('GET', `/latch/operations?integration=${PCK}&kind=link`);
  assert.ok(r.json.data.length >= 2);
  const future = new Date(Date.now() + 3600e3).toISOString();
  r = await s.api('GET', `/latch/operations?from=${future}`);
  assert.equal(r.json.data.length, 0);
  r = await s.api('GET', `/latch/operations?to=${Date.now() - 3600e3}`);
  assert.equal(r.json.data.length, 0);
  for (const q of ['limit=0', 'limit=1001', 'kind=nope', 'outcome=x', 'cursor=zz', 'from=yesterday', 'secret=1']) {
    const b = await s.api('GET', `/latch/operations?${q}`);
    assert.equal(b.status, 400, q);
  }
});

test('read API: secret key only, scoped to the environment', async () => {
  const r = await request(`${s.latchUrl}/latch/operations`, { method: 'GET' });
  assert.equal(r.status, 401);
  const w = await request(`${s.latchUrl}/latch/operations/${linkOp}`, { method: 'GET', headers: { authorization: 'Bearer 00000000-0000-4000-8000-000000000000' } });
  assert.equal(w.status, 401);
  const nf = await s.api('GET', '/latch/operations/0123456789abcdef0123456789');
  assert.equal(nf.status, 404);
});

test('retention keeps the table bounded while operations keep coming', async () => {
  for (let round = 0; round < 4; round++) {
    await Promise.all(Array.from({ length: 40 }, (_, i) => px(`/v2/echo?r=${round}&i=${i}`)));
  }
  // the writer prunes every second, in batches; the newest rows stay
  let n = Infinity;
  for (let i = 0; i < 40 && n > 50; i++) {
    await sleep(250);
    const r = await s.api('GET', '/latch/operations?limit=1000');
    n = r.json.data.length;
  }
  assert.ok(n <= 50, `at most LATCH_OPS_MAX_ROWS rows kept (got ${n})`);
  assert.ok(n >= 40, `the newest are kept (got ${n})`);
});
