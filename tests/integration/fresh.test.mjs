// Always-fresh tokens: refresh margin, single flight under a stampede, one writer when the token
// endpoint stalls past the lease, back-off under a failure storm, terminal failures, deletion
// mid-refresh. Against the fake NinjaOne with short token lifetimes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, startLatch } from './lib/stack.mjs';
import { burst, request } from './lib/load.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let s;

before(async () => {
  s = await startStack({
    tokenLifetime: 4,
    env: { LATCH_REFRESH_MARGIN_S: '2', LATCH_BACKGROUND_REFRESH: 'false', LATCH_REFRESH_BACKOFF_MS: '400', LATCH_TOKEN_TIMEOUT_MS: '5000' },
  });
});
after(async () => { await s?.stop(); });

async function link() {
  const d = await s.createSession({ end_user: { id: 'fresh' } });
  const r = await s.link(d.token);
  assert.equal(r.status, 200, r.text);
  return r.json.connectionId;
}
const getPath = (id, force = false) => `/connections/${id}?provider_config_key=ninjaone-rmm&force_refresh=${force}`;
/** Reads a connection through another latch process `node` on the same database. */
const getVia = (node, id) => request(`${node.url}${getPath(id)}`, { headers: { authorization: `Bearer ${s.secretKey}` } });

test('a token inside the refresh margin is renewed; force_refresh forces one', async () => {
  const id = await link();
  const a = await s.api('GET', getPath(id));
  const t0 = (await s.fake.stats()).token_requests;
  const b = await s.api('GET', getPath(id));
  assert.equal(b.json.credentials.token, a.json.credentials.token, 'fresh token is cached');
  assert.equal((await s.fake.stats()).token_requests, t0);
  await sleep(2300); // < 2 s of life left now
  const c = await s.api('GET', getPath(id));
  assert.equal(c.status, 200);
  assert.notEqual(c.json.credentials.token, a.json.credentials.token);
  assert.ok(Date.parse(c.json.credentials.expires_at) - Date.now() > 3000);
  assert.equal((await s.fake.stats()).token_requests, t0 + 1);
  const d = await s.api('GET', getPath(id, true));
  assert.notEqual(d.json.credentials.token, c.json.credentials.token);
  assert.equal((await s.fake.stats()).token_requests, t0 + 2);
});

test('1,000 concurrent reads and proxy calls on an expired token: exactly one token request', async () => {
  const id = await link();
  const old = (await s.api('GET', getPath(id))).json.credentials.token;
  await s.fake.config({ token_lifetime: 600 }); // the new token outlives the burst
  await sleep(4200); // expired
  const before = (await s.fake.stats()).token_requests;
  const results = await burst(1000, (i, agent) => (i % 4 === 3
    ? request(`${s.latchUrl}/proxy/v2/echo`, { agent, headers: { authorization: `Bearer ${s.secretKey}`, 'connection-id': id, 'provider-config-key': 'ninjaone-rmm' } })
    : request(`${s.latchUrl}${getPath(id)}`, { agent, headers: { authorization: `Bearer ${s.secretKey}` } })));
  const after2 = (await s.fake.stats()).token_requests;
  assert.equal(after2 - before, 1, 'exactly one token request');
  const tokens = new Set();
  for (const r of results) {
    assert.equal(r.status, 200, r.body.toString().slice(0, 300));
    if (r.json.credentials) tokens.add(r.json.credentials.token);
    else tokens.add(r.json.headers.authorization.replace('Bearer ', ''));
  }
  assert.equal(tokens.size, 1, 'every caller got the same new token');
  assert.ok(!tokens.has(old));
  await s.fake.config({ token_lifetime: 4 });
});

test('a token endpoint that stalls longer than the lease still yields one writer', async () => {
  // a second latch process on the same database contends for the lease; both hold it 800 ms
  await s.restartLatch('SIGTERM', { LATCH_REFRESH_LEASE_MS: '800' });
  const b = await startLatch({ dir: s.dir, env: { ...s.env, LATCH_REFRESH_LEASE_MS: '800', LATCH_REFRESH_MARGIN_S: '2', LATCH_BACKGROUND_REFRESH: 'false' } });
  try {
    const id = await link();
    await sleep(4200);
    await s.fake.fault({ target: 'token', mode: 'delay', delay_ms: 2500, count: 1 });
    const before = (await s.fake.stats()).token_requests;
    const [ra, rb] = await Promise.all([
      s.api('GET', getPath(id)),
      (async () => { await sleep(1200); return getVia(b, id); })(),
    ]);
    assert.equal(ra.status, 200, ra.text);
    assert.equal(rb.status, 200);
    // node B took over the expired lease and refreshed; node A's late answer must not overwrite it
    const final = await s.api('GET', getPath(id));
    assert.equal(final.json.credentials.token, rb.json.credentials.token, 'the newer token stays');
    assert.equal(ra.json.credentials.token, rb.json.credentials.token, 'the stale writer serves the winner');
    assert.ok((await s.fake.stats()).token_requests - before <= 2);
    assert.match(s.logs(), /stale refresh discarded/);
  } finally {
    await b.stop();
    await s.fake.fault({ target: 'all', mode: 'none' });
  }
});

test('a failure recorded while another node waited for the lease is honoured, not retried', async () => {
  // node A's attempt fails slowly while node B, which read the row before the failure, waits
  // for A's lease; B must see A's back-off and not ask NinjaOne again
  const slow = { LATCH_REFRESH_LEASE_MS: '10000', LATCH_REFRESH_BACKOFF_MS: '5000' };
  await s.restartLatch('SIGTERM', slow);
  const b = await startLatch({ dir: s.dir, env: { ...s.env, ...slow } });
  try {
    const id = await link();
    await sleep(4200);
    await s.fake.fault({ target: 'token', mode: 'status', status: 503, delay_ms: 1500 });
    const before = (await s.fake.stats()).token_requests;
    const [ra, rb] = await Promise.all([
      s.api('GET', getPath(id)),
      (async () => { await sleep(500); return getVia(b, id); })(),
    ]);
    const attempts = (await s.fake.stats()).token_requests - before;
    assert.equal(ra.status, 424, ra.text);
    assert.equal(rb.status, 424, String(rb.body));
    assert.equal(rb.json.error.code, 'connection_refresh_backoff');
    assert.equal(attempts, 1, 'node B waited for the lease, then honoured the back-off');
  } finally {
    await b.stop();
    await s.fake.fault({ target: 'all', mode: 'none' });
    await s.restartLatch('SIGTERM');
  }
});

test('a failure storm causes at most one attempt per back-off window', async () => {
  const id = await link();
  await sleep(4200);
  await s.fake.fault({ target: 'token', mode: 'status', status: 503 });
  const before = (await s.fake.stats()).token_requests;
  const start = Date.now();
  const statuses = new Map();
  while (Date.now() - start < 6000) { // 400 ms doubling: windows end at 0.4, 1.2, 2.8, 6.0 s
    const r = await burst(20, (i, agent) => request(`${s.latchUrl}${getPath(id)}`, { agent, headers: { authorization: `Bearer ${s.secretKey}` } }));
    for (const x of r) statuses.set(x.status, (statuses.get(x.status) || 0) + 1);
    await sleep(50);
  }
  const attempts = (await s.fake.stats()).token_requests - before;
  await s.fake.fault({ target: 'all', mode: 'none' });
  assert.ok(attempts >= 2 && attempts <= 5, `attempts=${attempts}`);
  assert.ok(statuses.get(424) > 100, 'callers get 424 connection_refresh_backoff meanwhile');
  const r = await s.api('GET', getPath(id));
  assert.equal(r.status, 424);
  assert.equal(r.json.error.code, 'connection_refresh_backoff');
  // recovery clears the error (once the current back-off window has passed)
  let ok;
  for (let i = 0; i < 100; i++) {
    ok = await s.api('GET', getPath(id));
    if (ok.status === 200) break;
    await sleep(200);
  }
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.json.errors, []);
});

test('a terminal failure marks the connection for re-authorisation, one webhook, no more requests', async () => {
  const id = await link();
  await sleep(4200);
  await s.fake.fault({ target: 'token', mode: 'status', status: 401, body: '{"error":"invalid_client","error_description":"Invalid client credentials"}' });
  const before = (await s.fake.stats()).token_requests;
  const r1 = await s.api('GET', getPath(id));
  assert.equal(r1.status, 424);
  assert.equal(r1.json.error.code, 'invalid_credentials');
  for (let i = 0; i < 20; i++) {
    const r = await s.api('GET', getPath(id));
    assert.equal(r.status, 424);
  }
  assert.equal((await s.fake.stats()).token_requests - before, 1, 'stops hammering NinjaOne');
  const list = await s.api('GET', `/connections?connectionId=${id}`);
  assert.equal(list.json.connections[0].errors[0].type, 'auth');
  const wh = await s.webhooks.waitFor((w) => w.json?.connectionId === id && w.json?.operation === 'refresh');
  assert.equal(wh.json.success, false);
  await sleep(500);
  assert.equal(s.webhooks.received.filter((w) => w.json?.connectionId === id && w.json?.operation === 'refresh' && w.status === 200).length, 1, 'one webhook');
  await s.fake.fault({ target: 'all', mode: 'none' });
});

test('deleting a connection mid-refresh is safe', async () => {
  const id = await link();
  await sleep(4200);
  await s.fake.fault({ target: 'token', mode: 'delay', delay_ms: 1000, count: 1 });
  const pending = s.api('GET', getPath(id));
  await sleep(300);
  const del = await s.api('DELETE', `/connections/${id}?provider_config_key=ninjaone-rmm`);
  assert.equal(del.status, 200);
  const r = await pending;
  assert.ok([404].includes(r.status), `${r.status} ${r.text}`);
  await sleep(200);
  const again = await s.api('GET', getPath(id));
  assert.equal(again.status, 404, 'not resurrected by the late refresh');
  const h = await s.api('GET', '/health');
  assert.equal(h.status, 200);
});

test('a latch that stops while another process holds the refresh lease answers its waiters and exits cleanly', async () => {
  // long leases and a token request that stalls 12 s: without the drain, B's caller would wait
  // for A's lease to expire and B would abandon the request at shutdown (a leaked request)
  await s.restartLatch('SIGTERM', { LATCH_REFRESH_LEASE_MS: '30000', LATCH_TOKEN_TIMEOUT_MS: '20000' });
  const b = await startLatch({ dir: s.dir, env: { ...s.env, LATCH_REFRESH_LEASE_MS: '30000', LATCH_REFRESH_MARGIN_S: '2', LATCH_BACKGROUND_REFRESH: 'false' } });
  let stopped = false;
  try {
    const id = await link();
    await sleep(4200);
    await s.fake.fault({ target: 'token', mode: 'delay', delay_ms: 12000, count: 1 });
    const ra = s.api('GET', getPath(id)); // A takes the lease; its token request stalls
    await sleep(500);
    const rb = getVia(b, id);
    await sleep(500); // B's caller is parked on A's lease
    const stopping = b.stop(); // SIGTERM; rejects on a sanitizer report or an unclean exit
    const r = await rb;
    assert.equal(r.status, 503, r.body.toString());
    assert.equal(r.json.error.code, 'server_shutting_down');
    await stopping;
    stopped = true;
    assert.equal((await ra).status, 200, 'A finishes its refresh normally');
  } finally {
    if (!stopped) await b.stop().catch(() => {});
    await s.fake.fault({ target: 'all', mode: 'none' });
  }
});
