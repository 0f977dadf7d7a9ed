// OAuth2 authorization code, server side (issue 13): app credentials on integrations, the popup
// routes GET /oauth/connect/:key and GET /oauth/callback, against NinjaOne's own code-flow entry
// (ninjaone-rmm-oauth2 of latch's overlay) whose hosts are pinned to a small TLS authorization
// server written here (lib/generic_upstream.mjs: node https, test-CA certificate), so the
// production code path runs: LATCH_RESOLVE, LATCH_CA_FILE, outbound, the real token request.
//
// Covers: app credentials validated, sealed and never returned in full; the authorization URL
// (instance template, scopes, state, PKCE S256); success (stored OAUTH2 credentials, webhook, the
// popup page with its CSP and postMessage payload); access_denied and other provider errors in
// words; forged, replayed and expired state refused with nothing exchanged; a refused code
// (invalid_grant); bad input answered 4xx (JSON on the API, the error page in the popup).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { startLatch, api, tmpDir, BUILD, INSTANCES, startWebhookReceiver, BACKEND } from './lib/stack.mjs';
import { startGenericUpstream } from './lib/generic_upstream.mjs';

const KEY = 'ninja-oauth';
const CLIENT_ID = 'oauth-client-id-0001';
const CLIENT_SECRET = 'app-secret-DO-NOT-LEAK-4f9c2a';
const WEBHOOK_SECRET = 'webhook-secret-DO-NOT-LEAK-77';
const DISPLAY = 'NinjaOne RMM (OAuth2)';

let up, latch, secretKey, dir, webhooks, latchEnv, pg;

/** One SQL statement on latch's database (SQLite file or the test's PostgreSQL); stdout text. */
async function sql(q) {
  if (pg) return pg.query(q);
  return execFileSync('sqlite3', [path.join(dir, 'latch.db'), q]).toString();
}
const codes = new Map(); // code -> { challenge, redirect_uri, used }

const call = (method, p, body, o) => api(latch.url, secretKey, method, p, body, o);

before(async () => {
  dir = tmpDir('oauth2-');
  if (BACKEND === 'postgres') pg = await (await import('./lib/pg.mjs')).startPg();
  up = await startGenericUpstream({ hosts: INSTANCES });
  webhooks = await startWebhookReceiver();
  secretKey = randomUUID();
  // The token endpoint: a code is good once, for its PKCE verifier and redirect URI.
  up.rule({ method: 'POST', path: '/ws/oauth/token' }, (req) => {
    const f = new URLSearchParams(req.body);
    const c = codes.get(f.get('code'));
    if (f.get('client_id') !== CLIENT_ID || f.get('client_secret') !== CLIENT_SECRET) return { status: 401, json: { error: 'invalid_client' } };
    if (f.get('grant_type') !== 'authorization_code' || !c || c.used) return { status: 400, json: { error: 'invalid_grant', error_description: `secret ${CLIENT_SECRET}` } };
    const challenge = crypto.createHash('sha256').update(f.get('code_verifier') || '').digest('base64url');
    if (challenge !== c.challenge || f.get('redirect_uri') !== c.redirect_uri) return { status: 400, json: { error: 'invalid_grant' } };
    c.used = true;
    return { status: 200, json: { access_token: `at-${f.get('code')}`, refresh_token: `rt-${f.get('code')}`, expires_in: 3600, token_type: 'Bearer', scope: 'monitoring management offline_access' } };
  });
  latchEnv = {
    LATCH_SECRET_KEY: secretKey,
    LATCH_RESOLVE: [...up.resolveFor(), `${webhooks.host}:${webhooks.port}:127.0.0.1`].join(','),
    LATCH_CA_FILE: up.tls.ca,
    LATCH_ALLOW_HTTP: '1', // the plain-http webhook receiver only
    LATCH_WEBHOOK_URL: webhooks.url,
    LATCH_WEBHOOK_BACKOFF_MS: '200',
    ...(pg ? { LATCH_DATABASE_URL: pg.url } : {}),
  };
  latch = await startLatch({ dir, env: latchEnv });
});

after(async () => {
  await latch?.stop();
  await up?.stop();
  await webhooks?.close();
  await pg?.destroy();
});

async function session(extra = {}) {
  const r = await call('POST', '/connect/sessions', { end_user: { id: 'user-1', email: 'a@msp.example' }, ...extra });
  assert.equal(r.status, 201, r.text);
  return r.json.data.token;
}

/** GET /oauth/connect without following the redirect. */
async function connect(token, query = {}, key = KEY) {
  const q = new URLSearchParams({ connect_session_token: token, 'params[instance]': 'eu.ninjarmm.com', ...query });
  for (const [k, v] of Object.entries(query)) if (v === null) q.delete(k);
  const r = await fetch(`${latch.url}/oauth/connect/${encodeURIComponent(key)}?${q}`, { redirect: 'manual' });
  return { status: r.status, location: r.headers.get('location'), headers: r.headers, text: await r.text() };
}

/** What the provider's consent screen would do: hand out a code bound to the request's PKCE. */
function approve(location) {
  const u = new URL(location);
  const code = `code-${crypto.randomBytes(6).toString('hex')}`;
  codes.set(code, { challenge: u.searchParams.get('code_challenge'), redirect_uri: u.searchParams.get('redirect_uri'), used: false });
  return { code, state: u.searchParams.get('state') };
}

async function callback(query) {
  const r = await fetch(`${latch.url}/oauth/callback?${new URLSearchParams(query)}`);
  const text = await r.text();
  const m = /<script type="application\/json" id="latch-result">(.*?)<\/script>/s.exec(text);
  return { status: r.status, headers: r.headers, text, result: m ? JSON.parse(m[1]) : null };
}

const tokenRequests = () => up.requests.filter((r) => r.path === '/ws/oauth/token').length;

test('POST /integrations: OAUTH2 app credentials are validated, stored sealed and never returned in full', async () => {
  let r = await call('POST', '/integrations', { provider: 'ninjaone-rmm-oauth2', unique_key: KEY, credentials: { type: 'OAUTH2', client_id: CLIENT_ID } });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'invalid_body');
  r = await call('POST', '/integrations', { provider: 'ninjaone-rmm-oauth2', unique_key: KEY, credentials: { type: 'OAUTH2', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, scopes: 'bad scope!' } });
  assert.equal(r.status, 400, r.text);
  assert.deepEqual(r.json.error.errors.map((e) => e.path.join('.')), ['credentials.scopes']);
  r = await call('POST', '/integrations', { provider: 'ninjaone-rmm-oauth2', unique_key: KEY, credentials: { type: 'API_KEY', client_id: CLIENT_ID, client_secret: CLIENT_SECRET } });
  assert.equal(r.status, 400, r.text);
  r = await call('POST', '/integrations', { provider: 'ninjaone-rmm-oauth2', unique_key: KEY, credentials: 'x' });
  assert.equal(r.status, 400, r.text);
  r = await call('POST', '/integrations', {
    provider: 'ninjaone-rmm-oauth2', unique_key: KEY,
    credentials: { type: 'OAUTH2', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, scopes: 'monitoring,management,offline_access', webhook_secret: WEBHOOK_SECRET },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.data.auth_mode, 'OAUTH2');
  assert.equal(r.json.data.latch.linkable, true);
  for (const t of [r.text, (await call('GET', '/integrations')).text, (await call('GET', `/integrations/${KEY}?include=credentials&include=webhook`)).text]) {
    assert.ok(!t.includes(CLIENT_SECRET) && !t.includes(WEBHOOK_SECRET), `a secret leaked: ${t}`);
  }
  r = await call('GET', `/integrations/${KEY}?include=credentials`);
  assert.equal(r.status, 200);
  assert.equal(r.json.data.credentials.type, 'OAUTH2');
  assert.equal(r.json.data.credentials.client_id, CLIENT_ID);
  assert.match(r.json.data.credentials.client_secret, /^\*{8}.{4}$/);
  assert.equal(r.json.data.credentials.scopes, 'monitoring,management,offline_access');
  // at rest: sealed, not the plaintext
  const row = await sql(`SELECT credentials_sealed FROM integrations WHERE unique_key='${KEY}'`);
  assert.ok(row.length > 20 && !row.includes(CLIENT_SECRET) && !row.includes(CLIENT_ID), row);
  // an integration without app credentials, for the refusal below
  r = await call('POST', '/integrations', { provider: 'ninjaone-rmm-oauth2', unique_key: 'no-app' });
  assert.equal(r.status, 200, r.text);
});

test('a rename keeps the app credentials usable (re-sealed for the new key)', async () => {
  let r = await call('PATCH', `/integrations/${KEY}`, { unique_key: `${KEY}-2` });
  assert.equal(r.status, 200, r.text);
  r = await call('GET', `/integrations/${KEY}-2?include=credentials`);
  assert.equal(r.json.data.credentials?.client_id, CLIENT_ID, r.text);
  r = await call('PATCH', `/integrations/${KEY}-2`, { unique_key: KEY });
  assert.equal(r.status, 200, r.text);
  r = await call('GET', `/integrations/${KEY}?include=credentials`);
  assert.equal(r.json.data.credentials?.client_id, CLIENT_ID, r.text);
});

test('GET /oauth/connect redirects to the instance\'s authorization URL with state and PKCE S256', async () => {
  const token = await session();
  const r = await connect(token, { ws_client_id: 'ws-1234', 'authorization_params[prompt]': 'consent', 'authorization_params[redirect_uri]': 'https://evil.example/cb' });
  assert.equal(r.status, 302, r.text);
  const u = new URL(r.location);
  assert.equal(u.origin + u.pathname, 'https://eu.ninjarmm.com/ws/oauth/authorize');
  const q = Object.fromEntries(u.searchParams);
  assert.equal(q.response_type, 'code');
  assert.equal(q.client_id, CLIENT_ID);
  assert.equal(q.redirect_uri, `${latch.url}/oauth/callback`, 'redirect_uri is latch\'s callback, never the caller\'s');
  assert.equal(q.scope, 'monitoring management offline_access');
  assert.equal(q.prompt, 'consent');
  assert.match(q.state, /^[0-9a-f]{64}$/);
  assert.equal(q.code_challenge_method, 'S256');
  assert.match(q.code_challenge, /^[A-Za-z0-9_-]{43}$/);
  assert.ok(!r.location.includes(CLIENT_SECRET));
  // the state is kept only as a keyed hash
  const rows = await sql(`SELECT ${pg ? "encode(state_hash, 'hex')" : 'hex(state_hash)'}, ws_client_id, payload_sealed FROM oauth_states`);
  assert.ok(!rows.toLowerCase().includes(q.state) && rows.includes('ws-1234'), rows);
});

test('success: the code is exchanged once, the OAUTH2 connection stored, the page posts to the opener', async () => {
  const token = await session({ tags: { tenant: 't-1' } });
  const r = await connect(token);
  assert.equal(r.status, 302, r.text);
  const { code, state } = approve(r.location);
  const before = tokenRequests();
  const cb = await callback({ code, state });
  assert.equal(cb.status, 200, cb.text);
  assert.equal(tokenRequests(), before + 1);
  assert.match(cb.headers.get('content-type'), /^text\/html/);
  const csp = cb.headers.get('content-security-policy');
  const nonce = /script-src 'nonce-([0-9a-f]+)'/.exec(csp)?.[1];
  assert.ok(nonce && /default-src 'none'/.test(csp), csp);
  assert.ok(cb.text.includes(`<script nonce="${nonce}">`), 'the only script carries the nonce');
  assert.ok(!cb.text.includes('at-') && !cb.text.includes(CLIENT_SECRET), 'no token or secret in the page');
  assert.equal(cb.result.origin, latch.url);
  assert.equal(cb.result.message.success, true);
  assert.equal(cb.result.message.providerConfigKey, KEY);
  const connectionId = cb.result.message.connectionId;
  assert.match(connectionId, /^[0-9a-f-]{36}$/);
  const plain = await call('GET', `/connections/${connectionId}?provider_config_key=${KEY}`);
  assert.equal(plain.status, 200, plain.text);
  assert.equal(plain.json.credentials.refresh_token, undefined, 'Nango shows the refresh token only on ?refresh_token=true');
  const c = await call('GET', `/connections/${connectionId}?provider_config_key=${KEY}&refresh_token=true`);
  assert.equal(c.status, 200, c.text);
  assert.equal(c.json.credentials.type, 'OAUTH2');
  assert.equal(c.json.credentials.access_token, `at-${code}`);
  assert.equal(c.json.credentials.refresh_token, `rt-${code}`);
  assert.ok(Date.parse(c.json.credentials.expires_at) > Date.now() + 3000 * 1000);
  assert.equal(c.json.credentials.raw.token_type, 'Bearer');
  assert.equal(c.json.connection_config.instance, 'eu.ninjarmm.com');
  assert.equal(c.json.tags.tenant, 't-1');
  const hook = await webhooks.waitFor((h) => h.json?.type === 'auth' && h.json?.connectionId === connectionId);
  assert.equal(hook.json.success, true);
  assert.equal(hook.json.operation, 'creation');
  assert.ok(!hook.raw.includes(`at-${code}`));
  // the session was used up by the link
  const again = await connect(token);
  assert.equal(again.status, 401, again.text);
  // the proxy sends the access token as Bearer
  const p = await call('GET', '/proxy/v2/devices', undefined, { headers: { 'connection-id': connectionId, 'provider-config-key': KEY } });
  assert.equal(p.status, 200, p.text);
  const last = up.requests.filter((x) => x.path === '/v2/devices').at(-1);
  assert.equal(last.headers.authorization, `Bearer at-${code}`);
  assert.equal(last.host, 'eu.ninjarmm.com');
});

test('a reconnect session renews the same connection (override), with new tokens', async () => {
  const first = await session();
  const a = approve((await connect(first)).location);
  const cb1 = await callback(a);
  assert.equal(cb1.status, 200, cb1.text);
  const connectionId = cb1.result.message.connectionId;
  const rs = await call('POST', '/connect/sessions/reconnect', { connection_id: connectionId, integration_id: KEY, end_user: { id: 'user-1' } });
  assert.equal(rs.status, 201, rs.text);
  const b = approve((await connect(rs.json.data.token)).location);
  const cb2 = await callback(b);
  assert.equal(cb2.status, 200, cb2.text);
  assert.equal(cb2.result.message.connectionId, connectionId, 'the same connection');
  const c = await call('GET', `/connections/${connectionId}?provider_config_key=${KEY}`);
  assert.equal(c.json.credentials.access_token, `at-${b.code}`);
  const hook = await webhooks.waitFor((h) => h.json?.type === 'auth' && h.json?.connectionId === connectionId && h.json?.operation === 'override');
  assert.equal(hook.json.success, true);
});

test('a replayed state is refused and nothing is exchanged again', async () => {
  const token = await session();
  const { code, state } = approve((await connect(token)).location);
  assert.equal((await callback({ code, state })).status, 200);
  const before = tokenRequests();
  const again = await callback({ code, state });
  assert.equal(again.status, 400, again.text);
  assert.equal(again.result.message.success, false);
  assert.equal(again.result.message.error.type, 'invalid_state');
  assert.match(again.text, /already used/);
  assert.equal(tokenRequests(), before);
});

test('a forged or missing state is refused, nothing exchanged', async () => {
  const before = tokenRequests();
  for (const q of [{ code: 'x', state: crypto.randomBytes(32).toString('hex') }, { code: 'x' }, { code: 'x', state: '' }]) {
    const r = await callback(q);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.result.message.error.type, 'invalid_state');
  }
  assert.equal(tokenRequests(), before);
});

test('an expired state is refused (10 minutes), nothing exchanged', async () => {
  const token = await session();
  const { code, state } = approve((await connect(token)).location);
  await sql('UPDATE oauth_states SET expires_at = 1');
  const before = tokenRequests();
  const r = await callback({ code, state });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.result.message.error.type, 'expired_state');
  assert.equal(tokenRequests(), before);
});

test('access_denied and other provider errors reach the user in words, with the failure webhook', async () => {
  const token = await session();
  const c = await connect(token, { ws_client_id: 'ws-deny' });
  const { state } = approve(c.location);
  const r = await callback({ error: 'access_denied', error_description: 'The user said no', state });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.result.message.error.type, 'access_denied');
  assert.ok(r.text.includes(`Access was declined in ${DISPLAY}`), r.text);
  const hook = await webhooks.waitFor((h) => h.json?.type === 'auth' && h.json?.success === false && h.json?.error?.type === 'access_denied');
  assert.equal(hook.json.providerConfigKey, KEY);
  const token2 = await session();
  const { state: s2 } = approve((await connect(token2)).location);
  const r2 = await callback({ error: 'server_error<script>', state: s2 });
  assert.equal(r2.status, 400);
  assert.equal(r2.result.message.error.type, 'authorization_error');
  assert.ok(r2.text.includes(`${DISPLAY} refused the authorization (server_errorscript)`), r2.text);
  assert.ok(!r2.text.includes('<script>'));
});

test('a code the provider refuses (invalid_grant) is an error page in words, its text not echoed', async () => {
  const token = await session();
  const { state } = approve((await connect(token)).location);
  const r = await callback({ code: 'never-issued', state });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.result.message.error.type, 'token_exchange_failed');
  assert.ok(r.text.includes(`${DISPLAY} refused the authorization code (invalid_grant)`), r.text);
  assert.ok(!r.text.includes(CLIENT_SECRET), 'the upstream\'s error_description is not echoed');
});

test('bad input before the redirect: the error page (4xx), no state, no redirect', async () => {
  const token = await session();
  const bad = [
    [{ 'params[instance]': 'evil.example.com' }, 400, 'invalid_connection_config'],
    [{ 'params[unknown]': 'x' }, 400, 'invalid_connection_config'],
    [{ ws_client_id: 'bad id <x>' }, 400, 'invalid_query_params'],
    [{ 'credentials[oauth_client_secret_override]': 'x' }, 400, 'invalid_query_params'],
    [{ user_scope: 'a b' }, 400, 'invalid_query_params'],
  ];
  for (const [q, status, code] of bad) {
    const r = await connect(token, q);
    assert.equal(r.status, status, `${JSON.stringify(q)}: ${r.text}`);
    assert.equal(r.location, null);
    assert.match(r.headers.get('content-type'), /^text\/html/);
    assert.ok(r.text.includes(`"type":"${code}"`), `${JSON.stringify(q)}: ${r.text}`);
  }
  let r = await connect(token, {}, 'no-app');
  assert.equal(r.status, 400);
  assert.match(r.text, /has no OAuth app credentials/);
  r = await connect('nango_connect_session_' + '0'.repeat(64));
  assert.equal(r.status, 401);
  assert.match(r.headers.get('content-type'), /^text\/html/);
  r = await connect(token, {}, 'does-not-exist');
  assert.equal(r.status, 400);
  // API_KEY-style link routes of this integration refuse the mode
  const k = await api(latch.url, null, 'POST', `/api-auth/api-key/${KEY}?connect_session_token=${token}`, { apiKey: 'x' });
  assert.equal(k.status, 400);
  assert.equal(k.json.error.code, 'invalid_auth_mode');
});

test('key rotation re-seals the app credentials: after retiring the old key the flow still works', async () => {
  const env = { ...process.env, LATCH_DATABASE_URL: pg ? pg.url : path.join(dir, 'latch.db'), LATCH_KEY_FILE: path.join(dir, 'latch.key') };
  const bin = path.join(BUILD, 'latch');
  const kidOf = async () => (await sql(`SELECT credentials_sealed FROM integrations WHERE unique_key='${KEY}'`)).trim().split('.')[1];
  const oldKid = await kidOf();
  assert.match(execFileSync(bin, ['keys', 'rotate'], { cwd: dir, env }).toString(), /re-encrypted/);
  assert.notEqual(await kidOf(), oldKid, 'the app credentials are under the new key');
  execFileSync(bin, ['keys', 'retire', oldKid], { cwd: dir, env, stdio: 'pipe' });
  await latch.stop();
  latch = await startLatch({ dir, port: latch.port, env: latchEnv });
  const r = await call('GET', `/integrations/${KEY}?include=credentials`);
  assert.equal(r.json.data.credentials?.client_id, CLIENT_ID, r.text);
  const token = await session();
  const { code, state } = approve((await connect(token)).location);
  assert.equal((await callback({ code, state })).status, 200);
});

test('LATCH_OAUTH_CALLBACK_URL sets the redirect URI latch registers and sends', async () => {
  await latch.stop();
  latch = await startLatch({ dir, port: latch.port, env: { ...latchEnv, LATCH_OAUTH_CALLBACK_URL: 'https://connect.msp.example/oauth/callback' } });
  const token = await session();
  const r = await connect(token);
  assert.equal(r.status, 302, r.text);
  assert.equal(new URL(r.location).searchParams.get('redirect_uri'), 'https://connect.msp.example/oauth/callback');
  await latch.stop();
  latch = await startLatch({ dir, port: latch.port, env: latchEnv });
});

test('nothing of the flow reaches the log: no state, code, verifier or secret', async () => {
  const fs = await import('node:fs');
  const log = fs.readFileSync(latch.logPath, 'utf8');
  assert.ok(!log.includes(CLIENT_SECRET));
  for (const [code] of codes) assert.ok(!log.includes(code), `code ${code} logged`);
  assert.ok(!/state=[0-9a-f]{64}/.test(log), 'a state was logged');
});
