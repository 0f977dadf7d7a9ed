// Credential-form providers (issue 12) as an end user and a developer meet them:
//  1. @nangohq/frontend auth() in Chromium, from a host page, unchanged SDK: an API key provider
//     (itglue: x-api-key, verification GET /organizations) and a basic-auth provider (freshdesk: the
//     API key as username, the hidden default password "X", verification GET /api/v2/settings/helpdesk).
//  2. The Connect UI in Chromium for both forms: a key the provider rejects (the fake upstream answers
//     401 on verification) is shown in words, then the right key connects. Screenshots in
//     build/test-artifacts/credential-forms-*.png.
//  3. A connection of each new kind (API_KEY, BASIC, TWO_STEP, OAUTH2_CC of a non-NinjaOne provider)
//     imported with POST /connections, read back with @nangohq/node getConnection/getToken in Nango's
//     shapes, and proxied with the provider's own templates.
// Everything upstream is the generic fake (lib/generic_upstream.mjs) at the real hosts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { Nango as NangoNode } from '@nangohq/node';
import { startLatch, api, tmpDir, BUILD } from './lib/stack.mjs';
import { startGenericUpstream } from './lib/generic_upstream.mjs';

const require = createRequire(import.meta.url);
const T = 15000;
const hex = (n) => crypto.randomBytes(n).toString('hex');
const FD_SUB = `fd${hex(3)}`;
const HOSTS = {
  itglue: 'api.itglue.com',
  freshdesk: `${FD_SUB}.freshdesk.com`,
  halo: `halo${hex(3)}.conformance.example.com`,
  datto: 'pinotage-api.centrastage.net',
};
const ITG_OK = `ITG.${hex(16)}`;
const ITG_BAD = `ITG.${hex(16)}`;
const FD_OK = `fdkey${hex(10)}`;
const FD_BAD = `fdbad${hex(10)}`;
const basic = (u, p) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

let up;
let latch;
let secretKey;
let browser;
let hostSrv;
let artifacts;

async function startHostServer() {
  const sdkDir = path.dirname(require.resolve('@nangohq/frontend'));
  const server = http.createServer(async (req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>host</title><h1>Host app</h1>');
      return;
    }
    const m = /^\/sdk\/([A-Za-z0-9_.-]+\.js)$/.exec(u.pathname);
    if (!m) { res.writeHead(404).end(); return; }
    try {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(await fs.readFile(path.join(sdkDir, m[1])));
    } catch { res.writeHead(404).end(); }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }) };
}

const call = (m, p, b, o) => api(latch.url, secretKey, m, p, b, o);

async function session(key) {
  const r = await call('POST', '/connect/sessions', { end_user: { id: `u-${hex(3)}`, email: 'forms@example.com' }, allowed_integrations: [key] });
  assert.equal(r.status, 201, r.text);
  return r.json.data.token;
}

before(async () => {
  up = await startGenericUpstream({ hosts: Object.values(HOSTS) });
  // itglue: only ITG_OK is a valid key; freshdesk: only FD_OK (password X)
  up.rule({ host: HOSTS.itglue, path: '/organizations' }, (q) => (q.headers['x-api-key'] === ITG_OK ? { status: 200, json: { data: [] } } : { status: 401, json: { errors: [{ title: 'Unauthorized' }] } }));
  up.rule({ host: HOSTS.freshdesk, path: '/api/v2/settings/helpdesk' }, (q) => (q.headers.authorization === basic(FD_OK, 'X') ? { status: 200, json: {} } : { status: 401, json: { code: 'invalid_credentials' } }));
  secretKey = crypto.randomUUID();
  latch = await startLatch({
    dir: tmpDir('forms-'),
    env: { LATCH_SECRET_KEY: secretKey, LATCH_RESOLVE: up.resolveFor().join(','), LATCH_CA_FILE: up.tls.ca, LATCH_ALLOW_PRIVATE: 'true' },
  });
  for (const p of ['itglue', 'freshdesk', 'halo-psa', 'datto-rmm-password-grant']) {
    const r = await call('POST', '/integrations', { provider: p, unique_key: p });
    assert.equal(r.status, 200, `POST /integrations ${p}: ${r.status} ${r.text}`);
  }
  artifacts = path.join(BUILD, 'test-artifacts');
  await fs.mkdir(artifacts, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  hostSrv = await startHostServer();
});

after(async () => {
  await browser?.close().catch(() => {});
  await hostSrv?.close();
  await latch?.stop();
  await up?.stop();
});

/** Runs the unchanged @nangohq/frontend auth() inside a page of the host origin. */
async function sdkAuthInBrowser(key, options) {
  const token = await session(key);
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${hostSrv.url}/`);
    return await page.evaluate(async ({ latchUrl, token: tok, key: k, options: o }) => {
      const { default: Nango } = await import('/sdk/index.js');
      const nango = new Nango({ host: latchUrl, connectSessionToken: tok });
      try { return { ok: true, value: await nango.auth(k, o) }; } catch (e) { return { ok: false, type: e.type, message: e.message }; }
    }, { latchUrl: latch.url, token, key, options });
  } finally { await context.close(); }
}

test('@nangohq/frontend auth() in Chromium: API key (itglue) and basic (freshdesk) link and are verified upstream', { timeout: 120000 }, async () => {
  let mark = up.requests.length;
  const a = await sdkAuthInBrowser('itglue', { credentials: { apiKey: ITG_OK }, params: { subdomain: 'api' } });
  assert.equal(a.ok, true, JSON.stringify(a));
  assert.equal(a.value.providerConfigKey, 'itglue');
  assert.equal(typeof a.value.connectionId, 'string');
  assert.equal(a.value.latch?.verified, true, JSON.stringify(a.value));
  const v = up.requests.slice(mark).filter((q) => q.host === HOSTS.itglue);
  assert.equal(v.length, 1, 'one verification call');
  assert.equal(v[0].path, '/organizations');
  assert.equal(v[0].headers['x-api-key'], ITG_OK);
  assert.equal(v[0].headers.authorization, undefined, 'the key goes in x-api-key only');

  // a rejected key: the SDK rejects with latch's code and words
  mark = up.requests.length;
  const bad = await sdkAuthInBrowser('itglue', { credentials: { apiKey: ITG_BAD }, params: { subdomain: 'api' } });
  assert.equal(bad.ok, false);
  assert.match(bad.message, /rejected/i, JSON.stringify(bad));
  assert.equal(up.requests.slice(mark).length, 1);

  mark = up.requests.length;
  const b = await sdkAuthInBrowser('freshdesk', { credentials: { username: FD_OK }, params: { subdomain: FD_SUB } });
  assert.equal(b.ok, true, JSON.stringify(b));
  assert.equal(b.value.providerConfigKey, 'freshdesk');
  assert.equal(b.value.latch?.verified, true);
  const w = up.requests.slice(mark).filter((q) => q.host === HOSTS.freshdesk);
  assert.equal(w.length, 1);
  assert.equal(w[0].path, '/api/v2/settings/helpdesk');
  assert.equal(w[0].headers.authorization, basic(FD_OK, 'X'), 'hidden default password X');

  // both proxy with the provider's own templates
  for (const [key, id, host, check] of [
    ['itglue', a.value.connectionId, HOSTS.itglue, (q) => assert.equal(q.headers['x-api-key'], ITG_OK)],
    ['freshdesk', b.value.connectionId, HOSTS.freshdesk, (q) => assert.equal(q.headers.authorization, basic(FD_OK, 'X'))],
  ]) {
    mark = up.requests.length;
    const r = await call('GET', '/proxy/probe/one?x=1', undefined, { headers: { 'connection-id': id, 'provider-config-key': key } });
    assert.equal(r.status, 200, r.text);
    const q = up.requests.slice(mark).find((x) => x.host === host);
    assert.ok(q, `proxied to ${host}`);
    assert.equal(q.path, '/probe/one');
    assert.equal(q.query.x, '1');
    check(q);
  }
});

async function connectUi(key, { fill, bad, good, name }) {
  const token = await session(key);
  const context = await browser.newContext({ viewport: { width: 1000, height: 820 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  try {
    await page.goto(`${latch.url}/ui/?session_token=${token}`);
    await fill(page);
    const secretInput = page.locator(bad.selector);
    await secretInput.waitFor({ state: 'visible', timeout: T });
    assert.equal(await secretInput.getAttribute('type'), 'password', 'the secret field is masked');
    await page.screenshot({ path: path.join(artifacts, `credential-forms-${name}-01-form.png`), fullPage: true });
    await secretInput.fill(bad.value);
    let mark = up.requests.length;
    await page.locator('#submit-btn').click();
    const alert = page.locator('#form-alert');
    await alert.waitFor({ state: 'visible', timeout: T });
    const text = await alert.innerText();
    await page.screenshot({ path: path.join(artifacts, `credential-forms-${name}-02-rejected.png`), fullPage: true });
    assert.match(text, /rejected/i, `the rejection is said in words: ${text}`);
    assert.doesNotMatch(text, /try again in a moment|something went wrong/i, 'a rejected key is not presented as transient');
    assert.ok(!text.includes(bad.value), 'the key is not echoed');
    assert.equal(up.requests.slice(mark).filter((q) => q.status === 401).length, 1, 'the provider was asked once');
    await secretInput.fill(good.value);
    mark = up.requests.length;
    await page.locator('#submit-btn').click();
    const ok = page.locator('#success-text');
    await ok.waitFor({ state: 'visible', timeout: T });
    assert.match(await ok.innerText(), /connected/i);
    await page.screenshot({ path: path.join(artifacts, `credential-forms-${name}-03-connected.png`), fullPage: true });
    assert.equal(up.requests.slice(mark).filter((q) => q.status === 200).length, 1);
    assert.ok(!(await page.content()).includes(good.value), 'the key is not left in the DOM');
    assert.deepEqual(errors, []);
  } finally { await context.close(); }
}

test('Connect UI in Chromium: API key form, a rejected key in words, then connected', { timeout: 120000 }, async () => {
  await connectUi('itglue', {
    name: 'api-key',
    fill: async (page) => {
      const sub = page.locator('#f-params-subdomain');
      await sub.waitFor({ state: 'visible', timeout: T });
      if (await sub.evaluate((e) => e.tagName) === 'SELECT') await sub.selectOption('api'); else await sub.fill('api');
    },
    bad: { selector: '#f-credentials-apiKey', value: ITG_BAD },
    good: { value: ITG_OK },
  });
});

test('Connect UI in Chromium: basic form (hidden default password not shown), a rejected key in words, then connected', { timeout: 120000 }, async () => {
  await connectUi('freshdesk', {
    name: 'basic',
    fill: async (page) => {
      const sub = page.locator('#f-params-subdomain');
      await sub.waitFor({ state: 'visible', timeout: T });
      await sub.fill(FD_SUB);
      assert.equal(await page.locator('#f-credentials-password').count(), 0, 'hidden password field is not drawn');
    },
    bad: { selector: '#f-credentials-username', value: FD_BAD },
    good: { value: FD_OK },
  });
});

test('import of each new kind with POST /connections, read back with @nangohq/node in Nango\'s shapes, proxied', { timeout: 60000 }, async () => {
  const nango = new NangoNode({ secretKey, host: latch.url });
  const exp = new Date(Date.now() + 3600e3).toISOString();
  const cases = [
    { key: 'itglue', id: `imp-ak-${hex(3)}`, connection_config: { subdomain: 'api' }, credentials: { type: 'API_KEY', apiKey: `ITG.${hex(12)}` },
      host: HOSTS.itglue, wantHeader: (c) => ['x-api-key', c.apiKey] },
    { key: 'freshdesk', id: `imp-basic-${hex(3)}`, connection_config: { subdomain: FD_SUB }, credentials: { type: 'BASIC', username: `u${hex(8)}`, password: `p${hex(8)}` },
      host: HOSTS.freshdesk, wantHeader: (c) => ['authorization', basic(c.username, c.password)] },
    { key: 'datto-rmm-password-grant', id: `imp-2s-${hex(3)}`, connection_config: { platform: 'pinotage' },
      credentials: { type: 'TWO_STEP', token: `tok${hex(12)}`, expires_at: exp, username: 'A'.repeat(32), password: 'B'.repeat(32) },
      host: HOSTS.datto, wantHeader: (c) => ['authorization', `Bearer ${c.token}`] },
    { key: 'halo-psa', id: `imp-cc-${hex(3)}`, connection_config: { hostname: HOSTS.halo },
      credentials: { type: 'OAUTH2_CC', token: `tok${hex(12)}`, expires_at: exp, client_id: `cid${hex(6)}`, client_secret: `sec${hex(12)}` },
      host: HOSTS.halo, wantHeader: (c) => ['authorization', `Bearer ${c.token}`] },
  ];
  for (const c of cases) {
    const r = await call('POST', '/connections', { provider_config_key: c.key, connection_id: c.id, connection_config: c.connection_config, credentials: c.credentials });
    assert.equal(r.status, 201, `import ${c.credentials.type}: ${r.status} ${r.text}`);
    const conn = await nango.getConnection(c.key, c.id);
    assert.equal(conn.connection_id, c.id);
    assert.equal(conn.provider_config_key, c.key);
    assert.deepEqual({ ...conn.connection_config }, { ...c.connection_config, ...conn.connection_config }, 'connection_config kept');
    for (const [k, v] of Object.entries(c.connection_config)) assert.equal(conn.connection_config[k], v);
    assert.equal(conn.credentials.type, c.credentials.type);
    const tok = await nango.getToken(c.key, c.id);
    // Nango's getToken returns the credentials object for every kind but OAUTH2/OAUTH1
    assert.equal(tok.type, c.credentials.type);
    for (const [k, v] of Object.entries(c.credentials)) {
      if (k === 'expires_at') assert.equal(Date.parse(tok.expires_at), Date.parse(v), 'expires_at');
      else assert.equal(tok[k], v, `${c.credentials.type} getToken().${k}`);
    }
    const mark = up.requests.length;
    const p = await call('GET', '/proxy/imported', undefined, { headers: { 'connection-id': c.id, 'provider-config-key': c.key } });
    assert.equal(p.status, 200, `proxy ${c.key}: ${p.text}`);
    const q = up.requests.slice(mark).find((x) => x.host === c.host);
    assert.ok(q, `proxied to ${c.host}`);
    const [h, v] = c.wantHeader(c.credentials);
    assert.equal(q.headers[h], v, `${c.credentials.type}: ${h}`);
  }
  // a wrong type for the provider is refused, naming both
  const wrong = await call('POST', '/connections', { provider_config_key: 'itglue', connection_id: 'imp-wrong', connection_config: { subdomain: 'api' }, credentials: { type: 'BASIC', username: 'a', password: 'b' } });
  assert.equal(wrong.status, 400, wrong.text);
});
