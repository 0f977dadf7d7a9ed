// OAUTH2 (authorization code) connections: the always-fresh read and the proxy refresh them with
// the refresh_token grant against the fake NinjaOne's code flow (rotation: every refresh token is
// single-use). Rotation persisted across restarts, exactly one refresh under a stampede and across
// two latch processes, invalid_grant -> needs re-authorisation + failure webhook, 5xx -> back-off,
// proxy 401 -> forced refresh, no refresh token -> reconnect, Basic auth + refresh_url/params.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startStack, startLatch } from './lib/stack.mjs';
import { burst, request } from './lib/load.mjs';
import { DEFAULT_CLIENT } from './lib/fake.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const KEY = 'ninja-oauth2';
const BASIC_KEY = 'ninja-oauth2-basic';
const PROVIDERS = path.join(import.meta.dirname, 'fixtures', 'oauth2_refresh_providers.yaml');
let s;
let n = 0;

before(async () => {
  s = await startStack({
    createIntegration: false,
    env: {
      LATCH_PROVIDERS_FILE: PROVIDERS,
      LATCH_BACKGROUND_REFRESH: 'false',
      LATCH_REFRESH_BACKOFF_MS: '400',
      LATCH_TOKEN_TIMEOUT_MS: '5000',
    },
  });
  for (const [key, provider] of [[KEY, 'ninjaone-rmm-oauth2'], [BASIC_KEY, 'ninjaone-oauth2-basic']]) {
    const r = await s.api('POST', '/integrations', { provider, unique_key: key });
    assert.equal(r.status, 200, r.text);
  }
});
after(async () => { await s?.stop(); });

/** Imports a connection holding tokens of the fake's code flow; the access token already expired. */
async function importConn({ key = KEY, tokens, expiresInMs = -1000, withRefresh = true, override = true } = {}) {
  const t = tokens ?? await s.fake.codeFlowTokens(DEFAULT_CLIENT);
  const id = `conn-${process.pid}-${++n}`;
  const credentials = {
    type: 'OAUTH2',
    access_token: t.access_token,
    expires_at: new Date(Date.now() + expiresInMs).toISOString(),
  };
  if (withRefresh) credentials.refresh_token = t.refresh_token;
  if (override) credentials.config_override = { client_id: DEFAULT_CLIENT.client_id, client_secret: DEFAULT_CLIENT.client_secret };
  const r = await s.api('POST', '/connections', {
    provider_config_key: key, connection_id: id, connection_config: { instance: DEFAULT_CLIENT.instance }, credentials,
  });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.credentials.type, 'OAUTH2');
  assert.ok(!r.text.includes(DEFAULT_CLIENT.client_secret), 'the app secret is never answered in full');
  return { id, tokens: t };
}
const getPath = (id, { key = KEY, force = false, refreshToken = true } = {}) =>
  `/connections/${id}?provider_config_key=${key}&force_refresh=${force}&refresh_token=${refreshToken}`;
const stats = () => s.fake.stats();
const refreshGrant = (rt) => s.fake.grant(DEFAULT_CLIENT, { grant_type: 'refresh_token', refresh_token: rt });

test('an expired token is refreshed once; the rotated refresh token is stored and survives a restart', async () => {
  const { id, tokens } = await importConn();
  const g0 = (await stats()).refresh_grants;
  const a = await s.api('GET', getPath(id));
  assert.equal(a.status, 200, a.text);
  assert.equal(a.json.credentials.type, 'OAUTH2');
  assert.notEqual(a.json.credentials.access_token, tokens.access_token);
  assert.ok(a.json.credentials.refresh_token, 'refresh_token=true shows it');
  assert.notEqual(a.json.credentials.refresh_token, tokens.refresh_token, 'rotated');
  assert.ok(Date.parse(a.json.credentials.expires_at) - Date.now() > 3000 * 1000);
  assert.equal((await stats()).refresh_grants - g0, 1);
  // without refresh_token=true the refresh token stays hidden (Nango's rule)
  assert.ok(!a.text.includes(DEFAULT_CLIENT.client_secret), 'config_override.client_secret is masked');
  assert.match(a.json.credentials.config_override.client_secret, /^\*{8}.{4}$/);
  const hidden = await s.api('GET', getPath(id, { refreshToken: false }));
  assert.equal(hidden.json.credentials.refresh_token, undefined);
  assert.equal(hidden.json.credentials.access_token, a.json.credentials.access_token, 'fresh token is cached');
  // the old refresh token is dead at the provider
  const old = await refreshGrant(tokens.refresh_token);
  assert.equal(old.json?.error, 'invalid_grant');

  // a restart reads the rotated token from the database and refreshes again with it
  await s.restartLatch('SIGKILL');
  const b = await s.api('GET', getPath(id, { force: true }));
  assert.equal(b.status, 200, b.text);
  assert.notEqual(b.json.credentials.refresh_token, a.json.credentials.refresh_token, 'rotated again');
  assert.notEqual(b.json.credentials.access_token, a.json.credentials.access_token);
  assert.equal((await stats()).refresh_grants - g0, 3, 'ours, the test\u2019s own try with the old token, ours');
  const api = await s.fake.request('GET', '/v2/organizations', { headers: { authorization: `Bearer ${b.json.credentials.access_token}` } });
  assert.equal(api.status, 200, 'the new access token works upstream');
  const list = await s.api('GET', `/connections?connectionId=${id}`);
  assert.deepEqual(list.json.connections[0].errors, []);
});

test('a provider that returns no new refresh token: the old one is kept', async () => {
  const { id, tokens } = await importConn();
  // the fake always rotates; answer one refresh with a body that has no refresh_token
  await s.fake.fault({ target: 'token', mode: 'status', status: 200, count: 1, body: JSON.stringify({ access_token: 'A'.repeat(43), token_type: 'Bearer', expires_in: 3600 }) });
  const r = await s.api('GET', getPath(id));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.credentials.access_token, 'A'.repeat(43));
  assert.equal(r.json.credentials.refresh_token, tokens.refresh_token, 'the stored refresh token is kept');
  await s.fake.clearFaults();
});

test('200 concurrent reads of an expired token: exactly one refresh, one token for all', async () => {
  const { id, tokens } = await importConn();
  const g0 = (await stats()).refresh_grants;
  const results = await burst(200, (i, agent) => request(`${s.latchUrl}${getPath(id)}`, { agent, headers: { authorization: `Bearer ${s.secretKey}` } }));
  assert.equal((await stats()).refresh_grants - g0, 1, 'exactly one refresh_token grant');
  const seen = new Set();
  for (const r of results) {
    assert.equal(r.status, 200, r.body.toString().slice(0, 300));
    seen.add(r.json.credentials.access_token);
  }
  assert.equal(seen.size, 1);
  assert.ok(!seen.has(tokens.access_token));
});

test('two latch processes on one database: one refresh of an expired rotating token', async () => {
  const b = await startLatch({ dir: s.dir, env: { ...s.env } });
  try {
    const { id } = await importConn();
    await s.fake.fault({ target: 'token', mode: 'delay', delay_ms: 600, count: 1 });
    const g0 = (await stats()).refresh_grants;
    const hdr = { authorization: `Bearer ${s.secretKey}` };
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => request(`${(i % 2 ? b.url : s.latchUrl)}${getPath(id)}`, { headers: hdr })));
    const g = (await stats()).refresh_grants - g0;
    assert.equal(g, 1, 'one refresh across both processes (a second would reuse a dead refresh token)');
    const seen = new Set(results.map((r) => { assert.equal(r.status, 200, r.body.toString()); return r.json.credentials.access_token; }));
    assert.equal(seen.size, 1);
    const list = await s.api('GET', `/connections?connectionId=${id}`);
    assert.deepEqual(list.json.connections[0].errors, [], 'no invalid_grant from a racing node');
  } finally {
    await s.fake.clearFaults();
    await b.stop();
  }
});

test('a token request that outlives the lease: the takeover wins, the late invalid_grant serves its token', async () => {
  // A's request waits 2.5 s at the provider before the grant runs; B takes the expired 800 ms
  // lease, refreshes with the same refresh token first; A is then refused (invalid_grant)
  await s.restartLatch('SIGTERM', { LATCH_REFRESH_LEASE_MS: '800' });
  const b = await startLatch({ dir: s.dir, env: { ...s.env, LATCH_REFRESH_LEASE_MS: '800' } });
  try {
    const { id } = await importConn();
    await s.fake.fault({ target: 'token', mode: 'delay', delay_ms: 2500, count: 1 });
    const hdr = { authorization: `Bearer ${s.secretKey}` };
    const [ra, rb] = await Promise.all([
      s.api('GET', getPath(id)),
      (async () => { await sleep(1200); return request(`${b.url}${getPath(id)}`, { headers: hdr }); })(),
    ]);
    assert.equal(rb.status, 200, rb.body.toString());
    assert.equal(ra.status, 200, ra.text);
    assert.equal(ra.json.credentials.access_token, rb.json.credentials.access_token, 'A serves B\u2019s token');
    const final = await s.api('GET', getPath(id));
    assert.deepEqual(final.json.errors, []);
    assert.equal(final.json.credentials.refresh_token, rb.json.credentials.refresh_token);
    assert.equal((await refreshGrant(final.json.credentials.refresh_token)).status, 200, 'the stored refresh token is the live one');
  } finally {
    await s.fake.clearFaults();
    await b.stop();
    await s.restartLatch('SIGTERM');
  }
});

test('a rotated answer that arrives after another refresher was refused is stored over that failure', async () => {
  // A's grant is consumed at once but its answer takes 2.5 s; B takes the expired lease, sends the
  // now dead refresh token and records invalid_grant; A's answer holds the only live refresh token
  await s.restartLatch('SIGTERM', { LATCH_REFRESH_LEASE_MS: '800' });
  const b = await startLatch({ dir: s.dir, env: { ...s.env, LATCH_REFRESH_LEASE_MS: '800' } });
  try {
    const { id } = await importConn();
    await s.fake.fault({ target: 'token', mode: 'delay', delay_ms: 2500, count: 1, after_grant: true });
    const hdr = { authorization: `Bearer ${s.secretKey}` };
    const [ra, rb] = await Promise.all([
      s.api('GET', getPath(id)),
      (async () => { await sleep(1200); return request(`${b.url}${getPath(id)}`, { headers: hdr }); })(),
    ]);
    assert.equal(rb.status, 424, 'B was refused: the refresh token was already used');
    assert.equal(ra.status, 200, ra.text);
    const final = await s.api('GET', getPath(id));
    assert.equal(final.status, 200, final.text);
    assert.deepEqual(final.json.errors, [], 'needs_reauth cleared by the stored rotation');
    assert.equal(final.json.credentials.refresh_token, ra.json.credentials.refresh_token);
    assert.match(s.logs(), /rotated token stored over a racing refresher's failure/);
    const next = await s.api('GET', getPath(id, { force: true }));
    assert.equal(next.status, 200, 'and it refreshes again');
  } finally {
    await s.fake.clearFaults();
    await b.stop();
    await s.restartLatch('SIGTERM');
  }
});

test('a revoked refresh token: needs re-authorisation, failure webhook, no more requests; reconnect clears it', async () => {
  const { id } = await importConn();
  await s.fake.revokeRefresh(DEFAULT_CLIENT.client_id);
  const g0 = (await stats()).refresh_grants;
  const r1 = await s.api('GET', getPath(id));
  assert.equal(r1.status, 424, r1.text);
  assert.equal(r1.json.error.code, 'invalid_credentials');
  assert.match(r1.json.error.message, /NinjaOne RMM \(OAuth2\) refused the refresh token \(invalid_grant\)/);
  assert.match(r1.json.error.message, /reconnect/);
  for (let i = 0; i < 10; i++) assert.equal((await s.api('GET', getPath(id))).status, 424);
  assert.equal((await stats()).refresh_grants - g0, 1, 'no second attempt with a dead refresh token');
  const list = await s.api('GET', `/connections?connectionId=${id}`);
  assert.equal(list.json.connections[0].errors[0].type, 'auth');
  const one = await s.api('GET', getPath(id, { refreshToken: false }));
  assert.equal(one.status, 424);
  const wh = await s.webhooks.waitFor((w) => w.json?.connectionId === id && w.json?.operation === 'refresh');
  assert.equal(wh.json.success, false);
  assert.match(JSON.stringify(wh.json.error), /invalid_grant/);
  const ops = await s.api('GET', `/ops?connection_id=${id}`);
  if (ops.status === 200) assert.match(ops.text, /refresh_failed/);
  // the user links again (an import of fresh tokens under the same id): the error is cleared
  const again = await importConn({ tokens: await s.fake.codeFlowTokens(DEFAULT_CLIENT) });
  assert.ok(again.id);
  const fresh = await s.fake.codeFlowTokens(DEFAULT_CLIENT);
  const re = await s.api('POST', '/connections', {
    provider_config_key: KEY, connection_id: id, connection_config: { instance: DEFAULT_CLIENT.instance },
    credentials: { type: 'OAUTH2', access_token: fresh.access_token, refresh_token: fresh.refresh_token, expires_at: new Date(Date.now() - 1000).toISOString(), config_override: { client_id: DEFAULT_CLIENT.client_id, client_secret: DEFAULT_CLIENT.client_secret } },
  });
  assert.equal(re.status, 201, re.text);
  const ok = await s.api('GET', getPath(id));
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.json.errors, []);
});

test('a 5xx from the token endpoint backs off, keeps the refresh token, then succeeds', async () => {
  const { id, tokens } = await importConn();
  await s.fake.fault({ target: 'token', mode: 'status', status: 503, count: 1 });
  const r1 = await s.api('GET', getPath(id));
  assert.equal(r1.status, 424, r1.text);
  assert.equal(r1.json.error.code, 'connection_refresh_backoff', 'transient, never called permanent');
  const list = await s.api('GET', `/connections?connectionId=${id}`);
  assert.notEqual(list.json.connections[0].errors.length, 0);
  let ok;
  for (let i = 0; i < 50; i++) {
    ok = await s.api('GET', getPath(id));
    if (ok.status === 200) break;
    assert.equal(ok.json.error.code, 'connection_refresh_backoff');
    await sleep(100);
  }
  assert.equal(ok.status, 200, ok.text);
  assert.notEqual(ok.json.credentials.refresh_token, tokens.refresh_token);
  assert.deepEqual(ok.json.errors, []);
});

test('the proxy refreshes on expiry and once more when the provider answers 401', async () => {
  // an access token the provider does not know, still "valid" by its expiry: the upstream 401s
  const t = await s.fake.codeFlowTokens(DEFAULT_CLIENT);
  const { id } = await importConn({ tokens: { ...t, access_token: 'not-a-token' }, expiresInMs: 3600_000 });
  const g0 = (await stats()).refresh_grants;
  const hdr = { authorization: `Bearer ${s.secretKey}`, 'connection-id': id, 'provider-config-key': KEY };
  const r = await request(`${s.latchUrl}/proxy/v2/organizations`, { headers: hdr });
  assert.equal(r.status, 200, r.body.toString());
  assert.equal((await stats()).refresh_grants - g0, 1, 'one forced refresh after the 401');
  const c = await s.api('GET', getPath(id));
  assert.notEqual(c.json.credentials.access_token, 'not-a-token');
  // and an expired token is refreshed before the proxy call
  const e = await importConn();
  const r2 = await request(`${s.latchUrl}/proxy/v2/organizations`, { headers: { ...hdr, 'connection-id': e.id } });
  assert.equal(r2.status, 200, r2.body.toString());
  assert.equal((await stats()).refresh_grants - g0, 2);
});

test('no refresh token and an expired access token: the user must reconnect', async () => {
  const t = await s.fake.codeFlowTokens(DEFAULT_CLIENT, { scope: 'monitoring' });
  assert.equal(t.refresh_token, undefined);
  const valid = await importConn({ tokens: t, withRefresh: false, expiresInMs: 3600_000 });
  const g0 = (await stats()).token_requests;
  const ok = await s.api('GET', getPath(valid.id, { force: true }));
  assert.equal(ok.status, 200, 'a token that still works is served');
  const { id } = await importConn({ tokens: t, withRefresh: false });
  const r = await s.api('GET', getPath(id));
  assert.equal(r.status, 424, r.text);
  assert.equal(r.json.error.code, 'invalid_credentials');
  assert.match(r.json.error.message, /no refresh token.*must reconnect/);
  assert.match(r.json.error.message, /NinjaOne RMM \(OAuth2\)/);
  assert.equal((await stats()).token_requests, g0, 'nobody was asked');
});

test('no app credentials anywhere: a clear error, nothing marked on the connection', async () => {
  const { id } = await importConn({ override: false });
  const r = await s.api('GET', getPath(id));
  assert.equal(r.status, 424, r.text);
  assert.match(r.json.error.message, /has no Client ID and Client Secret/);
  const list = await s.api('GET', `/connections?connectionId=${id}`);
  assert.deepEqual(list.json.connections[0].errors, []);
});

test('the integration\u2019s app credentials refresh a connection without config_override; a wrong secret is terminal', async () => {
  const key = 'ninja-oauth2-app';
  let r = await s.api('POST', '/integrations', {
    provider: 'ninjaone-rmm-oauth2', unique_key: key,
    credentials: { type: 'OAUTH2', client_id: DEFAULT_CLIENT.client_id, client_secret: DEFAULT_CLIENT.client_secret, scopes: 'monitoring,offline_access' },
  });
  assert.equal(r.status, 200, r.text);
  const { id, tokens } = await importConn({ key, override: false });
  r = await s.api('GET', getPath(id, { key }));
  assert.equal(r.status, 200, r.text);
  assert.notEqual(r.json.credentials.refresh_token, tokens.refresh_token);
  const last = await s.fake.lastTokenRequest();
  assert.equal(last.form.client_id, DEFAULT_CLIENT.client_id);
  assert.equal(last.secret_ok, true);
  // the app's secret changes at the provider: invalid_client is terminal and names the integration's app
  r = await s.api('PATCH', `/integrations/${key}`, { credentials: { type: 'OAUTH2', client_id: DEFAULT_CLIENT.client_id, client_secret: 'wrong-secret-0123456789' } });
  assert.equal(r.status, 200, r.text);
  r = await s.api('GET', getPath(id, { key, force: true }));
  assert.equal(r.status, 424, r.text);
  assert.equal(r.json.error.code, 'invalid_credentials');
  assert.match(r.json.error.message, /NinjaOne RMM \(OAuth2\) rejected the integration's Client ID and Client Secret \(invalid_client\)/);
});

test('token_request_auth_method basic, refresh_url and refresh_params', async () => {
  const { id, tokens } = await importConn({ key: BASIC_KEY });
  const r = await s.api('GET', getPath(id, { key: BASIC_KEY }));
  assert.equal(r.status, 200, r.text);
  assert.notEqual(r.json.credentials.refresh_token, tokens.refresh_token);
  const last = await s.fake.lastTokenRequest();
  assert.equal(last.path, '/ws/oauth/token', 'refresh_url, not token_url');
  assert.equal(last.basic, true);
  assert.equal(last.form.grant_type, 'refresh_token');
  assert.equal(last.form.refresh_token, '<redacted>');
  assert.equal(last.form.resource, 'ninjaone', 'refresh_params are sent');
  assert.equal(last.form.audience, undefined, 'token_params are not (refresh_params given)');
  assert.equal(last.form.client_secret, undefined, 'the secret is in the Basic header only');
  assert.equal(last.form.scope, undefined);
});

test('end to end with latch\u2019s own ninjaone-rmm-oauth2: /oauth/connect -> the fake\u2019s consent -> callback -> refresh with rotation', async () => {
  // the built-in catalogue (overlay entry ninjaone-rmm-oauth2), not the test providers file
  const env = { ...s.env };
  delete env.LATCH_PROVIDERS_FILE;
  // same database and key (PostgreSQL: one server per stack); the catalogue is this process's own
  const node = await startLatch({ dir: s.dir, env });
  const call = (method, p, body) => request(`${node.url}${p}`, {
    method, headers: { authorization: `Bearer ${s.secretKey}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
  });
  try {
    let r = await call('POST', '/integrations', {
      provider: 'ninjaone-rmm-oauth2', unique_key: 'ninjaone-rmm-oauth2',
      credentials: { type: 'OAUTH2', client_id: DEFAULT_CLIENT.client_id, client_secret: DEFAULT_CLIENT.client_secret, scopes: 'monitoring,management,offline_access' },
    });
    assert.equal(r.status, 200, r.body.toString());
    r = await call('POST', '/connect/sessions', { end_user: { id: 'e2e' } });
    assert.equal(r.status, 201, r.body.toString());
    const token = r.json.data.token;
    const q = new URLSearchParams({ connect_session_token: token, 'params[instance]': DEFAULT_CLIENT.instance });
    const c = await fetch(`${node.url}/oauth/connect/ninjaone-rmm-oauth2?${q}`, { redirect: 'manual' });
    assert.equal(c.status, 302, await c.text());
    const auth = new URL(c.headers.get('location'));
    assert.equal(auth.host, DEFAULT_CLIENT.instance);
    assert.equal(auth.pathname, '/ws/oauth/authorize');
    assert.equal(auth.searchParams.get('code_challenge_method'), 'S256');
    assert.match(auth.searchParams.get('scope'), /offline_access/);
    // the browser at the fake NinjaOne: auto-approved, redirected back with code and state
    const consent = await s.fake.request('GET', `${auth.pathname}${auth.search}`, { host: auth.host });
    assert.equal(consent.status, 302, consent.text);
    const back = new URL(consent.headers.location);
    assert.ok(back.searchParams.get('code') && back.searchParams.get('state'));
    const cb = await fetch(`${node.url}/oauth/callback${back.search}`);
    const page = await cb.text();
    assert.equal(cb.status, 200, page);
    const codeGrants = (await stats()).code_grants;
    assert.ok(codeGrants >= 1);
    r = await call('GET', '/connections?integrationId=ninjaone-rmm-oauth2');
    const id = r.json.connections[0].connection_id;
    const path1 = `/connections/${id}?provider_config_key=ninjaone-rmm-oauth2&refresh_token=true`;
    const a = await call('GET', path1);
    assert.equal(a.status, 200, a.body.toString());
    assert.equal(a.json.credentials.type, 'OAUTH2');
    assert.ok(a.json.credentials.refresh_token, 'offline_access gave a refresh token');
    const b = await call('GET', `${path1}&force_refresh=true`);
    assert.equal(b.status, 200, b.body.toString());
    assert.notEqual(b.json.credentials.refresh_token, a.json.credentials.refresh_token, 'rotated');
    assert.equal((await refreshGrant(a.json.credentials.refresh_token)).json?.error, 'invalid_grant');
    const last = await s.fake.lastTokenRequest();
    assert.equal(last.form.grant_type, 'refresh_token');
    assert.equal(last.secret_ok, true, 'the integration\u2019s app credentials');
    const px = await request(`${node.url}/proxy/v2/organizations`, { headers: { authorization: `Bearer ${s.secretKey}`, 'connection-id': id, 'provider-config-key': 'ninjaone-rmm-oauth2' } });
    assert.equal(px.status, 200, px.body.toString());
    // the user refuses consent: the callback page says so in words
    await s.fake.setAuthorizeDeny(true);
    r = await call('POST', '/connect/sessions', { end_user: { id: 'e2e-2' } });
    const q2 = new URLSearchParams({ connect_session_token: r.json.data.token, 'params[instance]': DEFAULT_CLIENT.instance });
    const c2 = await fetch(`${node.url}/oauth/connect/ninjaone-rmm-oauth2?${q2}`, { redirect: 'manual' });
    assert.equal(c2.status, 302, await c2.text());
    const auth2 = new URL(c2.headers.get('location'));
    const denied = await s.fake.request('GET', `${auth2.pathname}${auth2.search}`, { host: auth2.host });
    const back2 = new URL(denied.headers.location);
    assert.equal(back2.searchParams.get('error'), 'access_denied');
    const cb2 = await fetch(`${node.url}/oauth/callback${back2.search}`);
    assert.match(await cb2.text(), /access_denied|denied|refused/i);
  } finally {
    await s.fake.setAuthorizeDeny(false);
    await node.stop();
  }
});
