// The proxy against the fake NinjaOne: methods, query strings, JSON and binary bodies both ways,
// streaming with flat memory, status passthrough, header rules, retries with Retry-After,
// 401-refresh-retry, insufficient_privileges, timeouts, errors, and no starvation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { Nango } from '@nangohq/node';
import { startStack } from './lib/stack.mjs';
import { expectedBytesSha256 } from './lib/fake.mjs';
import { burst, request, rssKb } from './lib/load.mjs';

let s;
let conn;
let monConn;
before(async () => {
  s = await startStack({ env: { LATCH_PROXY_TIMEOUT_MS: '4000' } });
  let d = await s.createSession({ end_user: { id: 'proxy' } });
  let r = await s.link(d.token);
  assert.equal(r.status, 200, r.text);
  conn = r.json.connectionId;
  d = await s.createSession({ end_user: { id: 'proxy-mon' } });
  r = await s.link(d.token, { client_id: s.monitoringClient.client_id, client_secret: s.monitoringClient.client_secret });
  assert.equal(r.status, 200, r.text);
  monConn = r.json.connectionId;
});
after(async () => { await s?.stop(); });

function px(method, endpoint, { body, headers = {}, id = conn } = {}) {
  return request(`${s.latchUrl}/proxy${endpoint}`, {
    method, body,
    headers: { authorization: `Bearer ${s.secretKey}`, 'connection-id': id, 'provider-config-key': 'ninjaone-rmm', ...headers },
  });
}

test('GET through the real provider definition reaches the right instance with a valid token', async () => {
  const r = await px('GET', '/v2/organizations?pageSize=2&after=0');
  assert.equal(r.status, 200, r.body.toString());
  assert.equal(r.json.length, 2);
  assert.equal(r.json[0].id, 1);
  const e = await px('GET', '/api/v2/echo?a=1&b=x%20y&c=%2F');
  assert.equal(e.json.instance, 'eu.ninjarmm.com');
  assert.equal(e.json.query, 'a=1&b=x%20y&c=%2F', 'query string forwarded as sent');
  assert.match(e.json.headers.authorization, /^Bearer .+\..+$/);
});

test('methods and bodies both ways; status passthrough (201 stays 201)', async () => {
  const json = JSON.stringify({ hello: 'world', n: [1, 2, 3] });
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
    const r = await px(method, '/v2/echo?status=201', { body: json, headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 201, `${method} ${r.body}`);
    assert.equal(r.json.method, method);
    assert.equal(r.json.body_sha256, crypto.createHash('sha256').update(json).digest('hex'));
    assert.equal(r.json.headers['content-type'], 'application/json');
  }
  const bin = crypto.randomBytes(300 * 1024);
  const raw = await px('PUT', '/v2/echo?raw=1', { body: bin, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(raw.status, 200);
  assert.ok(raw.body.equals(bin), 'binary body round trip');
  const nf = await px('GET', '/v2/device/18');
  assert.equal(nf.status, 404);
  assert.equal(nf.json.resultCode, 'FAILURE');
  const noContent = await px('PATCH', '/v2/device/17', { body: '{"displayName":"WS-renamed"}', headers: { 'content-type': 'application/json' } });
  assert.equal(noContent.status, 204);
});

test('header rules: Nango-Proxy-* forwarded, caller Authorization and cookies never, hop-by-hop stripped', async () => {
  const r = await px('GET', '/v2/echo?h=X-Upstream:%20yes&h=Set-Cookie:%20a=1', {
    headers: { 'nango-proxy-x-custom': 'v1', 'nango-proxy-authorization': 'Bearer stolen', 'nango-proxy-cookie': 'c=1', cookie: 'session=abc', 'x-not-forwarded': 'no' },
  });
  assert.equal(r.status, 200);
  const h = r.json.headers;
  assert.equal(h['x-custom'], 'v1');
  assert.ok(!h.authorization.includes(s.secretKey), 'latch secret key never sent upstream');
  assert.ok(!h.authorization.includes('stolen'));
  assert.equal(h.cookie, undefined);
  assert.equal(h['x-not-forwarded'], undefined);
  assert.equal(h['connection-id'], undefined);
  assert.equal(r.headers['x-upstream'], 'yes', 'end-to-end response headers pass through');
});

test('large download streams with flat memory', async () => {
  const pid = s.latch.child.pid;
  const n = 1024 * 1024 * 1024; // 1 GiB
  const base = rssKb(pid);
  let peak = base;
  const timer = setInterval(() => { peak = Math.max(peak, rssKb(pid)); }, 50);
  const hash = crypto.createHash('sha256');
  let got = 0;
  const status = await new Promise((resolve, reject) => {
    const req = http.request(`${s.latchUrl}/proxy/v2/bytes?n=${n}`, { headers: { authorization: `Bearer ${s.secretKey}`, 'connection-id': conn, 'provider-config-key': 'ninjaone-rmm' } }, (res) => {
      res.on('data', (c) => { got += c.length; hash.update(c); });
      res.on('end', () => resolve(res.statusCode));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
  clearInterval(timer);
  assert.equal(status, 200);
  assert.equal(got, n);
  assert.equal(hash.digest('hex'), expectedBytesSha256(n));
  const growthMb = (peak - base) / 1024;
  // under AddressSanitizer the allocator keeps a quarantine of freed blocks (16 MB in scripts/test)
  const limitMb = process.env.ASAN_OPTIONS ? 48 : 16;
  assert.ok(growthMb < limitMb, `RSS grew ${growthMb.toFixed(1)} MB while streaming 1 GiB`);
});

test('large upload streams through', async () => {
  const body = crypto.randomBytes(20 * 1024 * 1024);
  const r = await px('POST', '/v2/echo', { body, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(r.status, 201, r.body.toString().slice(0, 200));
  assert.equal(r.json.body_len, body.length);
  assert.equal(r.json.body_sha256, crypto.createHash('sha256').update(body).digest('hex'));
});

test('retries: honours Retry-After only when asked, never silently', async () => {
  await s.fake.fault({ target: 'api', mode: 'status', status: 429, retry_after: '1', count: 1 });
  let r = await px('GET', '/v2/organizations?pageSize=1');
  assert.equal(r.status, 429, 'no Retries header: the 429 is returned as is');
  assert.equal(r.headers['retry-after'], '1');
  await s.fake.fault({ target: 'api', mode: 'status', status: 429, retry_after: '1', count: 1 });
  const t0 = Date.now();
  r = await px('GET', '/v2/organizations?pageSize=1', { headers: { retries: '2' } });
  assert.equal(r.status, 200);
  assert.ok(Date.now() - t0 >= 900, 'waited for Retry-After');
  await s.fake.fault({ target: 'api', mode: 'status', status: 503, count: 2 });
  r = await px('POST', '/v2/echo', { body: '{}', headers: { retries: '3', 'content-type': 'application/json' } });
  assert.equal(r.status, 201, 'a POST is retried when the caller asks');
  await s.fake.fault({ target: 'api', mode: 'status', status: 418, count: 1 });
  r = await px('GET', '/v2/organizations', { headers: { retries: '2', 'retry-on': '418' } });
  assert.equal(r.status, 200, 'Retry-On adds statuses');
  await s.fake.clearFaults();
});

test('an upstream 401 not_authenticated refreshes once and retries once', async () => {
  await s.fake.expireAll();
  const before = (await s.fake.stats()).token_requests;
  const r = await px('GET', '/v2/organizations?pageSize=1');
  assert.equal(r.status, 200, r.body.toString());
  assert.equal((await s.fake.stats()).token_requests - before, 1, s.logs().split('\n').filter((l) => /token|refresh|organizations/.test(l)).slice(-6).join('\n'));
  // insufficient_privileges is a scope problem: returned as is, no refresh
  const warm = await px('GET', '/v2/organizations?pageSize=1', { id: monConn }); // renews its expired token
  assert.equal(warm.status, 200);
  const b2 = (await s.fake.stats()).token_requests;
  const p = await px('PATCH', '/v2/device/17', { id: monConn, body: '{"displayName":"x"}', headers: { 'content-type': 'application/json' } });
  assert.equal(p.status, 401);
  assert.equal(p.json.error, 'insufficient_privileges');
  assert.equal((await s.fake.stats()).token_requests, b2);
});

test('errors: missing headers, unknown connection or integration, timeout, unreachable', async () => {
  let r = await request(`${s.latchUrl}/proxy/v2/organizations`, { headers: { authorization: `Bearer ${s.secretKey}` } });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'invalid_headers');
  assert.deepEqual(r.json.error.errors.map((e) => e.path[0]).sort(), ['connection-id', 'provider-config-key']);
  r = await px('GET', '/v2/organizations', { id: 'nope' });
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, 'unknown_connection');
  r = await request(`${s.latchUrl}/proxy/v2/organizations`, { headers: { authorization: `Bearer ${s.secretKey}`, 'connection-id': conn, 'provider-config-key': 'nope' } });
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, 'unknown_provider_config');
  r = await px('GET', '/v2/organizations', { headers: { 'base-url-override': 'https://evil.example' } });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'base_url_override_disabled');
  await s.fake.fault({ target: 'api', mode: 'stall', count: 1 });
  r = await px('GET', '/v2/organizations');
  assert.equal(r.status, 504);
  assert.equal(r.json.error.code, 'upstream_timeout');
  await s.fake.fault({ target: 'api', mode: 'reset', count: 2 });
  r = await px('GET', '/v2/organizations');
  assert.equal(r.status, 502);
  assert.equal(r.json.error.code, 'upstream_unreachable');
  await s.fake.clearFaults();
  r = await px('GET', '/v2/organizations');
  assert.equal(r.status, 200);
});

test('slow upstream calls do not starve /health or cached-token reads', async () => {
  await s.fake.fault({ target: 'api', mode: 'delay', delay_ms: 1500 });
  const slow = burst(200, (i, agent) => request(`${s.latchUrl}/proxy/v2/organizations`, { agent, headers: { authorization: `Bearer ${s.secretKey}`, 'connection-id': conn, 'provider-config-key': 'ninjaone-rmm' } }), { sockets: 200 });
  await new Promise((r) => setTimeout(r, 300));
  const times = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    const h = await request(`${s.latchUrl}/health`);
    const g = await request(`${s.latchUrl}/connections/${conn}?provider_config_key=ninjaone-rmm`, { headers: { authorization: `Bearer ${s.secretKey}` } });
    times.push(performance.now() - t0);
    assert.equal(h.status, 200);
    assert.equal(g.status, 200);
  }
  const results = await slow;
  await s.fake.clearFaults();
  const bad = results.filter((r) => r.status !== 200);
  assert.equal(bad.length, 0, bad.slice(0, 3).map((r) => `${r.status} ${r.body}`).join('\n'));
  assert.ok(Math.max(...times) < 1000, `fast requests waited ${Math.max(...times).toFixed(0)} ms behind slow ones`);
});

test('@nangohq/node proxy/get/post reach the fake with a valid token', async () => {
  const nango = new Nango({ secretKey: s.secretKey, host: s.latchUrl });
  const g = await nango.get({ endpoint: '/v2/organizations', providerConfigKey: 'ninjaone-rmm', connectionId: conn, params: { pageSize: '1' } });
  assert.equal(g.status, 200);
  assert.equal(g.data.length, 1);
  const p = await nango.post({ endpoint: '/v2/echo', providerConfigKey: 'ninjaone-rmm', connectionId: conn, data: { a: 1 } });
  assert.equal(p.status, 201);
  assert.equal(p.data.method, 'POST');
  const x = await nango.proxy({ method: 'GET', endpoint: '/v2/echo', providerConfigKey: 'ninjaone-rmm', connectionId: conn, headers: { 'X-Trace': 't1' } });
  assert.equal(x.data.headers['x-trace'], 't1');
});

// Issue 15 item 10: upstream bytes are served from latch's origin, so nothing in them may act
// on that origin: no cookies, no Clear-Site-Data, and a sandbox CSP so HTML never runs as latch.
test('proxied responses drop Set-Cookie and carry Content-Security-Policy: sandbox', async () => {
  const r = await px('GET', '/v2/echo?raw=1&h=Set-Cookie:%20sid=upstream&h=Set-Cookie2:%20b=2&h=Clear-Site-Data:%20%22*%22&h=X-Upstream:%20yes', {
    headers: { 'content-type': 'text/html' },
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-upstream'], 'yes');
  assert.equal(r.headers['set-cookie'], undefined, 'Set-Cookie dropped');
  assert.equal(r.headers['set-cookie2'], undefined);
  assert.equal(r.headers['clear-site-data'], undefined);
  assert.match(r.headers['content-security-policy'] ?? '', /\bsandbox\b/);
  // the relayed 401 (insufficient_privileges, not a token problem) too
  const p = await px('PATCH', '/v2/device/17', { id: monConn, body: '{"displayName":"x"}', headers: { 'content-type': 'application/json' } });
  assert.equal(p.status, 401);
  assert.match(p.headers['content-security-policy'] ?? '', /\bsandbox\b/);
});

test('Base-Url-Override keeps the default port of its scheme', async () => {
  await s.restartLatch('SIGTERM', { LATCH_PROXY_BASE_URL_OVERRIDE: 'true' });
  try {
    for (const port of ['8443', '444', '1']) {
      const r = await px('GET', '/v2/organizations', { headers: { 'base-url-override': `https://eu.ninjarmm.com:${port}` } });
      assert.equal(r.status, 400, `port ${port}: ${r.status} ${r.body}`);
      assert.equal(r.json.error.code, 'invalid_proxy_target');
    }
    for (const base of ['https://eu.ninjarmm.com', 'https://eu.ninjarmm.com:443', 'https://eu.ninjarmm.com/']) {
      const r = await px('GET', '/v2/organizations?pageSize=1', { headers: { 'base-url-override': base } });
      assert.equal(r.status, 200, `${base}: ${r.status} ${r.body}`);
    }
  } finally {
    await s.restartLatch('SIGTERM');
  }
});
