// Admin dashboard security (issue 14): every dashboard route refuses without a session; CSRF
// missing or wrong fails; the session cookie's flags; sessions end at sign-out; wrong passwords
// are slowed, then the account is locked, then the client address; strict CSP on every /admin
// answer; no secret value (canary) in any page or API answer of the dashboard.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { execFileSync } from 'node:child_process';

import { startStack, LATCH_BIN } from './lib/stack.mjs';
import { createAdmin, login, adminApi } from './lib/admin.mjs';

const EMAIL = 'sec@example.com';
const PASSWORD = 'Sec-Passw0rd-' + crypto.randomBytes(6).toString('hex');
const CANARY_META = 'CANARY-META-' + crypto.randomBytes(8).toString('hex');

let stack;
let envId;

// every dashboard route (method, path) with a body where it takes one
const ROUTES = [
  ['GET', 'session'], ['POST', 'logout'], ['GET', 'environments'], ['GET', 'providers'],
  ['GET', 'envs/1/integrations'], ['POST', 'envs/1/integrations', { unique_key: 'x', provider: 'ninjaone-rmm' }],
  ['PATCH', 'envs/1/integrations/ninjaone-rmm', { display_name: 'x' }], ['DELETE', 'envs/1/integrations/ninjaone-rmm'],
  ['GET', 'envs/1/connections'], ['GET', 'envs/1/connection?integration=ninjaone-rmm&connection_id=c1'],
  ['DELETE', 'envs/1/connection?integration=ninjaone-rmm&connection_id=c1'],
  ['GET', 'envs/1/connection/history?integration=ninjaone-rmm&connection_id=c1'],
  ['POST', 'envs/1/connect-links', { integration: 'ninjaone-rmm', end_user_id: 'u' }],
  ['GET', 'envs/1/settings'], ['PATCH', 'envs/1/settings', { webhook_url: '' }], ['POST', 'envs/1/webhook-test'],
  ['GET', 'envs/1/api-keys'], ['POST', 'envs/1/api-keys', { label: 'x' }], ['PATCH', 'envs/1/api-keys/1', { label: 'y' }],
  ['DELETE', 'envs/1/api-keys/1'], ['GET', 'envs/1/operations'], ['GET', 'nope'],
];
const WRITES = ROUTES.filter(([m]) => m !== 'GET');

before(async () => {
  stack = await startStack();
  createAdmin(stack, EMAIL, PASSWORD);
  // a linked connection whose credentials, metadata and tokens are the canaries
  const s = await stack.createSession({ end_user: { id: 'canary-user', email: 'canary@customer.example' } });
  const l = await stack.link(s.token);
  assert.equal(l.status, 200, l.text);
  const cid = l.json.connectionId;
  const m = await stack.api('POST', '/connections/metadata', { connection_id: cid, provider_config_key: 'ninjaone-rmm', metadata: { note: CANARY_META } });
  assert.equal(m.status, 201, m.text);
  const envs = await login(stack.latchUrl, EMAIL, PASSWORD);
  envId = (await adminApi(stack.latchUrl, 'GET', 'environments', envs)).json.data[0].id;
});

after(async () => { if (stack) await stack.stop().catch(() => {}); });

test('every dashboard route refuses without a session, and with a forged or ended one', async () => {
  const { cookie, csrf } = await login(stack.latchUrl, EMAIL, PASSWORD);
  await adminApi(stack.latchUrl, 'POST', 'logout', { cookie, csrf });
  const forged = 'latch_admin=' + crypto.randomBytes(32).toString('hex');
  for (const [m, p, body] of ROUTES) {
    for (const c of [undefined, forged, cookie]) {
      const r = await adminApi(stack.latchUrl, m, p, { cookie: c, csrf, body });
      assert.equal(r.status, 401, `${m} ${p} with ${c ? 'a dead cookie' : 'no cookie'} -> ${r.status} ${r.text}`);
      assert.match(r.headers.get('content-security-policy') || '', /default-src 'self'/);
    }
  }
});

test('CSRF: every state-changing route fails without the token or with a wrong one', async () => {
  const a = await login(stack.latchUrl, EMAIL, PASSWORD);
  const b = await login(stack.latchUrl, EMAIL, PASSWORD); // another session's token is wrong too
  assert.notEqual(a.csrf, b.csrf);
  for (const [m, p, body] of WRITES) {
    for (const bad of [undefined, '0'.repeat(64), b.csrf, a.csrf.slice(0, 63)]) {
      const r = await adminApi(stack.latchUrl, m, p, { cookie: a.cookie, csrf: bad, body });
      assert.equal(r.status, 403, `${m} ${p} csrf=${bad} -> ${r.status} ${r.text}`);
      assert.equal(r.json.error.code, 'csrf_failed');
    }
  }
  // with the token it works
  const ok = await adminApi(stack.latchUrl, 'PATCH', `envs/${envId}/settings`, { cookie: a.cookie, csrf: a.csrf, body: { on_auth_creation: true } });
  assert.equal(ok.status, 200, ok.text);
});

test('session cookie flags: HttpOnly, SameSite=Strict, Path=/admin; Secure behind https', async () => {
  const { setCookie } = await login(stack.latchUrl, EMAIL, PASSWORD);
  assert.match(setCookie, /^latch_admin=[0-9a-f]{64};/);
  assert.match(setCookie, /; HttpOnly/);
  assert.match(setCookie, /; SameSite=Strict/);
  assert.match(setCookie, /; Path=\/admin;/);
  assert.doesNotMatch(setCookie, /Secure/, 'plain http: no Secure flag (the browser would drop it)');
  await stack.restartLatch('SIGTERM', { LATCH_PUBLIC_URL: 'https://latch.example' });
  const s = await login(stack.latchUrl, EMAIL, PASSWORD);
  assert.match(s.setCookie, /; Secure/);
  await stack.restartLatch('SIGTERM');
});

test('CSP and friends on every /admin page and asset', async () => {
  for (const p of ['/admin/', '/admin/admin.js', '/admin/admin.css', '/admin/api/session']) {
    const r = await fetch(stack.latchUrl + p);
    const csp = r.headers.get('content-security-policy') || '';
    assert.match(csp, /default-src 'self'/, p);
    assert.match(csp, /script-src 'self';/, p);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, p);
    assert.match(csp, /frame-ancestors 'none'/, p);
    assert.equal(r.headers.get('x-frame-options'), 'DENY', p);
  }
  const html = await (await fetch(stack.latchUrl + '/admin/')).text();
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, 'no inline script');
  assert.doesNotMatch(html, /<style|\sstyle=/i, 'no inline style');
});

test('no secret value in any page or API answer of the dashboard (canary)', async () => {
  const { cookie, csrf } = await login(stack.latchUrl, EMAIL, PASSWORD);
  const whKey = execFileSync(LATCH_BIN, ['env', 'webhook-key', 'dev'], { env: stack.cliEnv(), encoding: 'utf8' }).trim();
  const encKey = fs.readFileSync(path.join(stack.dir, 'latch.key'), 'utf8');
  const canaries = {
    'API secret key': stack.secretKey,
    'client secret': stack.client.client_secret,
    'webhook signing key': whKey,
    'encryption key file': encKey.trim().split(/\s+/).pop(),
    'admin password': PASSWORD,
  };
  const bodies = [];
  for (const p of ['/admin/', '/admin/admin.js', '/admin/admin.css']) bodies.push([p, await (await fetch(stack.latchUrl + p)).text()]);
  const conns = await adminApi(stack.latchUrl, 'GET', `envs/${envId}/connections`, { cookie });
  const c = conns.json.data[0];
  const q = `integration=${encodeURIComponent(c.provider_config_key)}&connection_id=${encodeURIComponent(c.connection_id)}`;
  for (const [m, p, body] of [['GET', 'session'], ['GET', 'environments'], ['GET', 'providers'],
    ['GET', `envs/${envId}/integrations`], ['GET', `envs/${envId}/connections`], ['GET', `envs/${envId}/connection?${q}`],
    ['GET', `envs/${envId}/connection/history?${q}`], ['GET', `envs/${envId}/settings`], ['POST', `envs/${envId}/webhook-test`],
    ['GET', `envs/${envId}/api-keys`], ['GET', `envs/${envId}/operations`]]) {
    const r = await adminApi(stack.latchUrl, m, p, { cookie, csrf, body });
    assert.ok(r.status < 500, `${m} ${p} -> ${r.status}`);
    bodies.push([p, r.text + JSON.stringify([...r.headers])]);
  }
  // the connection detail does show what is not secret (metadata), so the probe is live
  assert.ok(bodies.some(([, b]) => b.includes(CANARY_META)), 'metadata is shown');
  // the connection's stored access token (read back through the public API) is a canary too
  const full = await stack.api('GET', `/connections/${encodeURIComponent(c.connection_id)}?provider_config_key=${c.provider_config_key}`);
  canaries['access token'] = full.json.credentials.token || full.json.credentials.access_token;
  assert.ok(canaries['access token']);
  // the dashboard's writes are management operations with the admin as actor (the log is
  // written within ~200 ms), and its answer carries no secret either
  let mgmt;
  for (let i = 0; i < 25 && !mgmt; i++) {
    if (i) await new Promise((r) => setTimeout(r, 200));
    const r = await adminApi(stack.latchUrl, 'GET', `envs/${envId}/operations?kind=management`, { cookie });
    assert.equal(r.status, 200);
    mgmt = r.json.data.find((o) => o.details.what === 'webhook.test');
    if (mgmt) bodies.push(['operations?kind=management', r.text]);
  }
  assert.ok(mgmt, 'the test webhook is in the operations log');
  assert.equal(mgmt.details.actor, EMAIL);
  assert.equal(mgmt.outcome, 'success');
  const noConn = await adminApi(stack.latchUrl, 'GET', `envs/${envId}/connection/history`, { cookie });
  assert.equal(noConn.status, 400, 'the history needs the connection');
  for (const [p, b] of bodies) {
    for (const [what, v] of Object.entries(canaries)) {
      assert.ok(v && v.length >= 16, what);
      assert.ok(!b.includes(v), `${what} in ${p}`);
    }
  }
});

test('wrong passwords: slowed, then the account is locked, then the client address', { timeout: 120000 }, async () => {
  const victim = 'victim@example.com';
  const vpw = 'Victim-Passw0rd-' + crypto.randomBytes(4).toString('hex');
  createAdmin(stack, victim, vpw);
  const seen = [];
  // 3 wrong passwords answer 401 at once
  for (let i = 0; i < 3; i++) {
    const r = await login(stack.latchUrl, victim, 'wrong-' + i);
    seen.push(r.res.status);
    assert.equal(r.res.status, 401);
    assert.match(r.json.error.message, /Wrong email or password/);
  }
  // now slowed: an immediate retry, even with the right password, must wait
  const slow = await login(stack.latchUrl, victim, vpw);
  assert.equal(slow.res.status, 429);
  assert.equal(slow.json.error.code, 'slow_down');
  assert.match(slow.json.error.message, /wait \d+ seconds? before trying again/);
  assert.ok(Number(slow.res.headers.get('retry-after')) >= 1);
  // keep guessing after each wait until locked
  let locked = null;
  for (let i = 0; i < 8 && !locked; i++) {
    const r = await login(stack.latchUrl, victim, 'wrong-again-' + i);
    if (r.res.status === 429 && r.json.error.code === 'slow_down') {
      await new Promise((res) => setTimeout(res, Number(r.res.headers.get('retry-after')) * 1000 + 50));
      continue;
    }
    if (/locked/.test(r.json.error.message)) locked = r;
  }
  assert.ok(locked, 'the account gets locked');
  assert.match(locked.json.error.message, /locked for 15 minutes/);
  const after = await login(stack.latchUrl, victim, vpw);
  assert.equal(after.res.status, 429, 'the right password does not open a locked account');
  assert.equal(after.json.error.code, 'locked');
  assert.match(after.json.error.message, /locked for 15 minutes/);
  assert.match(execFileSync(LATCH_BIN, ['admin', 'list'], { env: stack.cliEnv(), encoding: 'utf8' }), /victim@example.com\t.*locked=yes/);
  // the client address: unknown emails (never locked per account) until the address is slowed/locked
  let ipBlocked = null;
  for (let i = 0; i < 25 && !ipBlocked; i++) {
    const r = await login(stack.latchUrl, `nobody${i}@example.com`, 'guess');
    if (r.res.status === 429) ipBlocked = r;
  }
  assert.ok(ipBlocked, 'the client address is slowed');
  assert.match(ipBlocked.json.error.message, /from your network/);
  // even the right password of another account is refused from this address now
  const other = await login(stack.latchUrl, EMAIL, PASSWORD);
  assert.equal(other.res.status, 429);
});
