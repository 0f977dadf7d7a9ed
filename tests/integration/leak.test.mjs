// Secrets stay secret: canary client secrets and every access token the fake NinjaOne issues are
// pushed through linking, import, refresh, the proxy, webhooks and error paths with
// LATCH_LOG_LEVEL=debug. Afterwards there must be zero copies of any of them in latch's log,
// in any error body, in the webhook bodies received, in GET /connections listings, and zero
// plaintext copies in latch.db / latch.db-wal / latch.db-shm. The only place a token may appear
// is GET /connections/:id (that is how the tokens are learnt here).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startStack, api } from './lib/stack.mjs';

const PCK = 'ninjaone-rmm';
const rand = () => randomBytes(12).toString('hex');

let s;
const canaryClient = {
  client_id: `canaryid${rand()}`.slice(0, 27),
  client_secret: `CANARYsecret${rand()}${rand()}`,
  instance: 'eu.ninjarmm.com',
  scopes: ['monitoring', 'management'],
};
// '+' and '/' are legal in a NinjaOne secret and change under form-encoding, JSON escaping
// (jansson may write '\/') and base64: the echo case below checks every encoded form
const echoClient = {
  client_id: `canaryecho${rand()}`.slice(0, 27),
  client_secret: `Canary+Secret/${rand()}+${rand()}/x`,
  instance: 'eu.ninjarmm.com',
  scopes: ['monitoring', 'management'],
};
const wrongSecret = `CANARYwrong${rand()}`;
const importSecret = `CANARYimportsecret${rand()}`;
const importToken = `CANARYimporttoken${rand()}`;
const proxySecret = `CANARYproxyquery${rand()}`;
/** Everything that must never leak (grows as the fake issues tokens). */
const secrets = new Set([canaryClient.client_secret, echoClient.client_secret, wrongSecret, importSecret, importToken, proxySecret]);
/** Bodies latch sent back for non-2xx answers, and listings. */
const errorBodies = [];
const listBodies = [];

async function call(method, p, body, opts) {
  const r = await s.api(method, p, body, opts);
  if (r.status >= 400) errorBodies.push({ what: `${method} ${p} -> ${r.status}`, text: r.text });
  return r;
}

async function link(client, { instance = client.instance, secret = client.client_secret } = {}) {
  const sess = await s.createSession({ end_user: { id: 'leak-user', email: 'leak@example.com' } });
  const q = new URLSearchParams({ connect_session_token: sess.token, 'params[instance]': instance });
  const r = await api(s.latchUrl, null, 'POST', `/oauth2/auth/${PCK}?${q}`, { client_id: client.client_id, client_secret: secret });
  if (r.status >= 400) errorBodies.push({ what: `link -> ${r.status}`, text: r.text });
  return r;
}

/** GET /connections/:id is the one place credentials are returned: learn the token there. */
async function learnToken(id, query = '') {
  const r = await s.api('GET', `/connections/${encodeURIComponent(id)}?provider_config_key=${PCK}${query}`);
  if (r.status === 200 && r.json?.credentials?.token) secrets.add(r.json.credentials.token);
  else if (r.status >= 400) errorBodies.push({ what: `GET ${id}${query} -> ${r.status}`, text: r.text });
  return r;
}

/** Every form a secret could take in text: as is, JSON-escaped, URL-encoded, Basic base64. */
function needles() {
  const out = [];
  for (const v of secrets) {
    const forms = [
      v,
      encodeURIComponent(v), // form-encoding, upper-case hex
      encodeURIComponent(v).replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()),
      JSON.stringify(v).slice(1, -1).replace(/\//g, '\\/'), // JSON with escaped solidus
    ];
    for (const f of forms) {
      out.push(f);
      // a long enough slice catches truncated copies too
      if (f.length > 24) out.push(f.slice(0, 24), f.slice(-24));
    }
  }
  for (const [id, sec] of [[canaryClient.client_id, canaryClient.client_secret], [canaryClient.client_id, wrongSecret],
    [echoClient.client_id, echoClient.client_secret]]) {
    out.push(Buffer.from(`${id}:${sec}`).toString('base64'));
    out.push(Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(sec)}`).toString('base64'));
  }
  return [...new Set(out)];
}

function findIn(label, buf, found) {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(String(buf));
  for (const n of needles()) {
    const i = b.indexOf(n);
    if (i >= 0) found.push(`${label}: contains ${n.slice(0, 12)}... at byte ${i}: ${JSON.stringify(b.subarray(Math.max(0, i - 60), i + 20).toString('latin1'))}`);
  }
}

before(async () => {
  s = await startStack({ env: { LATCH_LOG_LEVEL: 'debug', LATCH_TOKEN_TIMEOUT_MS: '2000', LATCH_WEBHOOK_BACKOFF_MS: '100' } });
  await s.fake.addClient(canaryClient);
  await s.fake.addClient(echoClient);
});

after(async () => { await s?.stop(); });

test('no canary secret or token in logs, error bodies, webhooks, listings or database files', { timeout: 180000 }, async () => {
  const ids = [];

  // 1. link (creation), link again (override) -> tokens learnt from GET /connections/:id
  let r = await link(canaryClient);
  assert.equal(r.status, 200, r.text);
  ids.push(r.json.connectionId);
  await learnToken(r.json.connectionId);

  // 2. failed links: wrong secret, wrong instance (the secret is sent to the wrong region)
  r = await link(canaryClient, { secret: wrongSecret });
  assert.ok(r.status >= 400, r.text);
  r = await link(canaryClient, { instance: 'us2.ninjarmm.com' });
  assert.ok(r.status >= 400, r.text);
  // the secret as the client_id, and oversized/odd forms of it
  r = await link({ ...canaryClient, client_id: canaryClient.client_secret });
  assert.ok(r.status >= 400, r.text);
  r = await link(canaryClient, { secret: `${canaryClient.client_secret}\r\n${wrongSecret}` });
  assert.ok(r.status >= 400, r.text);

  // 3. a provider that echoes what it got in its error (hostile or buggy upstream)
  await s.fake.fault({ target: 'token', mode: 'status', status: 400, count: 1,
    body: JSON.stringify({ error: 'server_error', error_description: `bad request for secret ${canaryClient.client_secret}` }) });
  r = await link(canaryClient);
  assert.ok(r.status >= 400, r.text);
  // the endpoint quotes the form-encoded request: client_secret=Canary%2BSecret%2F...
  for (const status of [400, 401, 503]) {
    await s.fake.fault({ target: 'token', mode: 'echo', status, count: 1 });
    r = await link(echoClient);
    assert.ok(r.status >= 400, r.text);
    assert.ok(typeof r.json?.error?.message === 'string' && r.json.error.message.length > 0, r.text);
  }
  await s.fake.fault({ target: 'token', mode: 'status', status: 503, count: 1 });
  r = await link(canaryClient);
  assert.ok(r.status >= 400, r.text);
  await s.fake.fault({ target: 'token', mode: 'malformed', count: 1 });
  r = await link(canaryClient);
  assert.ok(r.status >= 400, r.text);
  await s.fake.clearFaults();

  // 4. import with canary secret and token; validation errors that carry the secret
  r = await call('POST', '/connections', {
    provider_config_key: PCK, connection_id: 'leak-import',
    connection_config: { instance: 'eu.ninjarmm.com' },
    credentials: { type: 'OAUTH2_CC', token: importToken, client_id: canaryClient.client_id, client_secret: importSecret },
    tags: { team: 'x' },
  });
  assert.equal(r.status, 201, r.text);
  ids.push('leak-import');
  r = await call('POST', '/connections', {
    provider_config_key: PCK, connection_id: 'leak-bad',
    connection_config: { instance: 'evil.example.com' },
    credentials: { type: 'OAUTH2_CC', token: importToken, client_id: canaryClient.client_id, client_secret: importSecret },
  });
  assert.equal(r.status, 400);
  r = await call('POST', '/connections', {
    provider_config_key: PCK, connection_id: importSecret,
    credentials: { type: 'BASIC', token: importToken, client_id: canaryClient.client_id, client_secret: 'x'.repeat(5000) + importSecret },
  });
  assert.equal(r.status, 400);

  // 5. refreshes: forced ones, one whose endpoint quotes the request, and one that fails
  // because the app was revoked upstream
  r = await link(echoClient);
  assert.equal(r.status, 200, r.text);
  ids.push(r.json.connectionId);
  await s.fake.fault({ target: 'token', mode: 'echo', status: 400, count: 1 });
  r = await learnToken(r.json.connectionId, '&force_refresh=true');
  assert.ok(r.status >= 400, r.text);
  await s.fake.clearFaults();
  for (let i = 0; i < 3; i++) {
    r = await learnToken(ids[0], '&force_refresh=true');
    assert.equal(r.status, 200, r.text);
  }
  r = await learnToken('leak-import', '&force_refresh=true'); // imported id + real secret? no: importSecret is wrong upstream
  assert.ok(r.status >= 400 || r.status === 200);
  await s.fake.fault({ target: 'token', mode: 'status', status: 401, count: 1,
    body: JSON.stringify({ error: 'invalid_client', error_description: `client ${canaryClient.client_secret} revoked` }) });
  r = await learnToken(ids[0], '&force_refresh=true');
  await s.fake.clearFaults();
  r = await learnToken(ids[0], '&force_refresh=true');
  assert.equal(r.status, 200, r.text);

  // 6. the proxy (the token goes upstream in Authorization; errors come back)
  r = await call('GET', '/proxy/v2/organizations', undefined, { headers: { 'connection-id': ids[0], 'provider-config-key': PCK } });
  assert.ok(r.status < 500, r.text);
  await s.fake.expireAll();
  r = await call('GET', '/proxy/v2/organizations', undefined, { headers: { 'connection-id': ids[0], 'provider-config-key': PCK } });
  await learnToken(ids[0]);
  await s.fake.fault({ target: 'api', mode: 'status', status: 401, count: 2 });
  r = await call('GET', '/proxy/v2/devices', undefined, { headers: { 'connection-id': ids[0], 'provider-config-key': PCK } });
  await s.fake.clearFaults();
  await learnToken(ids[0]);
  // a secret in the proxied query string, a forwarded header and the body: the operations
  // log keeps the path only, never values
  r = await call('POST', `/proxy/v2/echo?api_key=${proxySecret}`, JSON.stringify({ secret: proxySecret }), {
    headers: { 'connection-id': ids[0], 'provider-config-key': PCK, 'nango-proxy-x-api-key': proxySecret, 'content-type': 'application/json' },
  });

  // 7. listings
  for (const q of ['', '?search=leak', `?connectionId=${ids[0]}`, '?endUserId=leak-user']) {
    r = await s.api('GET', `/connections${q}`);
    assert.equal(r.status, 200);
    listBodies.push({ what: `GET /connections${q}`, text: r.text });
  }
  r = await s.api('GET', `/connect/session`, undefined, {});
  errorBodies.push({ what: 'GET /connect/session', text: r.text });

  // webhooks: wait for the creation one (and let failures/refresh ones arrive)
  await s.webhooks.waitFor((w) => w.json?.operation === 'creation' && w.json?.connectionId === ids[0]);
  await new Promise((res) => setTimeout(res, 1500));
  assert.ok(secrets.size >= 7, `learnt fake tokens: ${secrets.size - 4}`);

  // the operations log, dumped whole through its read API (every page)
  await new Promise((res) => setTimeout(res, 500)); // the writer flushes every 200 ms
  const ops = [];
  for (let cursor = null, first = true; first || cursor; first = false) {
    const q = cursor ? `?limit=1000&cursor=${cursor}` : '?limit=1000';
    const page = await s.api('GET', `/latch/operations${q}`);
    assert.equal(page.status, 200, page.text);
    ops.push(...page.json.data);
    cursor = page.json.next_cursor;
  }
  const kinds = new Set(ops.map((o) => o.kind));
  for (const k of ['link', 'refresh', 'proxy', 'webhook', 'management']) assert.ok(kinds.has(k), `ops log has ${k} rows`);
  assert.ok(ops.some((o) => o.kind === 'refresh' && o.outcome === 'failure'), 'a failed refresh is in the ops log');

  const found = [];
  findIn('operations log dump', JSON.stringify(ops), found);
  for (const b of errorBodies) findIn(`error body (${b.what})`, b.text, found);
  for (const b of listBodies) findIn(`listing (${b.what})`, b.text, found);
  for (const w of s.webhooks.received) {
    findIn(`webhook body ${w.json?.operation ?? ''}`, w.raw, found);
    findIn(`webhook headers`, JSON.stringify(w.headers), found);
  }
  findIn('latch.log', fs.readFileSync(s.latch.logPath), found);
  for (const f of ['latch.db', 'latch.db-wal', 'latch.db-shm', 'latch.db-journal']) {
    const p = path.join(s.dir, f);
    if (fs.existsSync(p)) findIn(f, fs.readFileSync(p), found);
  }
  // after a clean stop too (checkpointed WAL, freed pages)
  await s.restartLatch('SIGTERM');
  for (const f of ['latch.db', 'latch.db-wal', 'latch.db-shm']) {
    const p = path.join(s.dir, f);
    if (fs.existsSync(p)) findIn(`${f} (after restart)`, fs.readFileSync(p), found);
  }
  findIn('latch.log (after restart)', fs.readFileSync(s.latch.logPath), found);
  assert.deepEqual(found, [], `${found.length} leak(s)`);
  // sanity: the log is at debug level and did record the traffic (so "no copy" means something)
  const log = fs.readFileSync(s.latch.logPath, 'utf8');
  assert.match(log, /lvl=debug/);
  assert.match(log, /oauth2\/auth/);
});
