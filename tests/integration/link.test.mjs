// Linking a NinjaOne account through connect sessions and the client-credentials exchange,
// against the fake NinjaOne over real TLS, with webhooks to a real receiver.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { startStack, api, LATCH_BIN } from './lib/stack.mjs';

let s;
before(async () => { s = await startStack({ env: { LATCH_TOKEN_TIMEOUT_MS: '1500', LATCH_WEBHOOK_TIMEOUT_MS: '2000' } }); });
after(async () => { await s?.stop(); });

test('session lifecycle: create, read, wrong token, delete', async () => {
  const d = await s.createSession({ end_user: { id: 'u1', email: 'a@b.com', display_name: 'Ann' }, organization: { id: 'org1', display_name: 'Org' }, allowed_integrations: ['ninjaone-rmm'] });
  assert.match(d.token, /^nango_connect_session_[0-9a-f]{64}$/);
  assert.equal(d.connect_link, `${s.latchUrl}/ui/?session_token=${d.token}`);
  assert.ok(Date.parse(d.expires_at) > Date.now() + 29 * 60 * 1000);
  let r = await api(s.latchUrl, d.token, 'GET', '/connect/session');
  assert.equal(r.status, 200);
  assert.equal(r.json.data.endUser.id, 'u1');
  assert.equal(r.json.data.endUser.organization.id, 'org1');
  assert.deepEqual(r.json.data.allowed_integrations, ['ninjaone-rmm']);
  r = await api(s.latchUrl, d.token, 'GET', '/integrations');
  assert.equal(r.status, 200, 'a session may list integrations');
  assert.deepEqual(r.json.data.map((i) => i.unique_key), ['ninjaone-rmm']);
  r = await api(s.latchUrl, d.token, 'GET', '/connections');
  assert.equal(r.status, 401, 'a session cannot use secret-key routes');
  r = await api(s.latchUrl, s.secretKey, 'GET', '/connect/session');
  assert.equal(r.status, 401, 'a secret key is not a session');
  r = await api(s.latchUrl, 'nango_connect_session_' + '0'.repeat(64), 'GET', '/connect/session');
  assert.equal(r.status, 401);
  assert.equal(r.json.error.code, 'unknown_connect_session_token');
  r = await api(s.latchUrl, d.token, 'DELETE', '/connect/session');
  assert.equal(r.status, 204);
  r = await api(s.latchUrl, d.token, 'GET', '/connect/session');
  assert.equal(r.status, 401);
});

test('session body validation', async () => {
  let r = await s.api('POST', '/connect/sessions', {});
  assert.equal(r.status, 400);
  assert.deepEqual(r.json.error.errors[0].path, ['end_user']);
  r = await s.api('POST', '/connect/sessions', { end_user: {} });
  assert.equal(r.status, 400);
  assert.deepEqual(r.json.error.errors[0].path, ['end_user', 'id']);
  r = await s.api('POST', '/connect/sessions', { end_user: { id: 'x' }, allowed_integrations: ['nope'] });
  assert.equal(r.status, 400);
  assert.deepEqual(r.json.error.errors[0].path, ['allowed_integrations', '0']);
  r = await s.api('POST', '/connect/sessions', { end_user: { id: 'x' }, tags: { '1bad': 'v' } });
  assert.equal(r.status, 400);
  r = await s.api('POST', '/connect/sessions', { end_user: { id: 'x' }, whatever: true });
  assert.equal(r.status, 400);
});

test('link end to end: exact token request, stored connection, webhook signed', async () => {
  await s.fake.reset();
  const d = await s.createSession({ end_user: { id: 'msp-7', email: 'ops@msp.example' }, tags: { tenant: 'acme' } });
  const r = await s.link(d.token);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.providerConfigKey, 'ninjaone-rmm');
  assert.match(r.json.connectionId, /^[0-9a-f-]{36}$/);
  const st = await s.fake.stats();
  assert.equal(st.token_requests, 1);
  const last = await s.fake.lastTokenRequest();
  assert.equal(last.content_type, 'application/x-www-form-urlencoded');
  assert.equal(last.form.grant_type, 'client_credentials');
  assert.equal(last.form.client_id, s.client.client_id);
  assert.equal(last.secret_ok, true);
  assert.equal(last.basic, false);
  assert.equal(last.host, 'eu.ninjarmm.com');

  const c = await s.api('GET', `/connections/${r.json.connectionId}?provider_config_key=ninjaone-rmm`);
  assert.equal(c.status, 200);
  assert.equal(c.json.connection_config.instance, 'eu.ninjarmm.com');
  assert.equal(c.json.credentials.client_id, s.client.client_id);
  assert.ok(c.json.credentials.token.length > 20);
  assert.equal(c.json.tags.tenant, 'acme');
  assert.equal(c.json.tags.end_user_id, 'msp-7');

  const wh = await s.webhooks.waitFor((w) => w.json?.connectionId === r.json.connectionId);
  assert.equal(wh.json.type, 'auth');
  assert.equal(wh.json.operation, 'creation');
  assert.equal(wh.json.success, true);
  assert.equal(wh.json.endUser.endUserId, 'msp-7');
  const keys = Object.keys(wh.json);
  assert.deepEqual(keys, [...keys].sort(), 'keys sorted');
  const signingKey = execFileSync(LATCH_BIN, ['env', 'webhook-key', 'dev'], { env: s.cliEnv() }).toString().trim();
  const expect = crypto.createHmac('sha256', signingKey).update(wh.raw).digest('hex');
  assert.equal(wh.headers['x-nango-hmac-sha256'], expect);
  assert.ok(!wh.raw.includes(s.client.client_secret));
});

test('scopes from the integration are joined with the provider separator', async () => {
  await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninja-scoped', integration_config: { oauth_scopes: 'monitoring, management' } });
  const d = await s.createSession({ end_user: { id: 'u' } });
  const r = await s.link(d.token, { key: 'ninja-scoped' });
  assert.equal(r.status, 200, r.text);
  const last = await s.fake.lastTokenRequest();
  assert.equal(last.form.scope, 'monitoring management');
});

test('token errors are classified in words the admin can act on', async () => {
  const d = await s.createSession({ end_user: { id: 'u' } });
  // wrong secret
  let r = await s.link(d.token, { client_secret: 'WrongSecret_0123456789abcdef' });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'client_credentials_fetch_error');
  assert.equal(r.json.error.reason, 'invalid_client');
  assert.ok(!r.text.includes('WrongSecret'), 'secret never echoed');
  // right secret, wrong region
  r = await s.link(d.token, { instance: 'us2.ninjarmm.com' });
  assert.equal(r.json.error.reason, 'invalid_client');
  // scope the app does not have
  await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninja-control', integration_config: { oauth_scopes: 'monitoring,control' } });
  r = await s.link(d.token, { key: 'ninja-control' });
  assert.equal(r.json.error.reason, 'invalid_scope');
  // NinjaOne slow
  await s.fake.fault({ target: 'token', mode: 'delay', delay_ms: 3000, count: 1 });
  const slow = await startSlow();
  r = await s.link(d.token);
  assert.equal(r.status, 504);
  assert.equal(r.json.error.reason, 'timeout');
  await slow;
  // garbage
  await s.fake.fault({ target: 'token', mode: 'malformed', count: 1 });
  r = await s.link(d.token);
  assert.equal(r.status, 502);
  assert.equal(r.json.error.reason, 'bad_response');
  // 500
  await s.fake.fault({ target: 'token', mode: 'status', status: 500, count: 1 });
  r = await s.link(d.token);
  assert.equal(r.status, 502);
  assert.equal(r.json.error.reason, 'upstream_error');
  // connection reset
  // count 2: curl transparently retries once when a reused connection dies
  await s.fake.fault({ target: 'token', mode: 'reset', count: 2 });
  r = await s.link(d.token);
  assert.equal(r.status, 502, r.text);
  assert.equal(r.json.error.reason, 'unreachable');
  await s.fake.fault({ target: 'all', mode: 'none' });
  // then it works
  r = await s.link(d.token);
  assert.equal(r.status, 200, r.text);
  // a failed link also sends the failure webhook
  const fail = await s.webhooks.waitFor((w) => w.json?.success === false && w.json?.error?.type === 'client_credentials_fetch_error');
  assert.equal(fail.json.operation, 'creation');
  async function startSlow() { /* the token timeout for this stack is 1.5 s (env below) */ }
});

test('hostile instance values are all rejected before any socket is opened', async () => {
  const hostile = [
    'evil.com', 'eu.ninjarmm.com.evil.com', 'evil.com/eu.ninjarmm.com', 'eu.ninjarmm.com@evil.com',
    'user@eu.ninjarmm.com', '127.0.0.1', '2130706433', '0x7f000001', '0177.0.0.1', '127.1',
    '[::1]', '::1', '[::ffff:127.0.0.1]', '169.254.169.254', 'metadata.google.internal',
    'eu.ninjarmm.com.', 'EU.NINJARMM.COM', 'eu.ninjarmm.com:8443', 'eu.ninjarmm.com/x',
    'eu.ninjarmm.com%2Fevil', 'eu.ninjarmm.com\r\nHost: evil', 'eu.ninjarmm.com ', ' eu.ninjarmm.com',
    'eu.ninjarmm.co', 'xn--eu-ninjarmm-com.evil', 'eu.nіnjarmm.com', 'localhost', 'eu.ninjarmm.com#',
    'eu.ninjarmm.com?x=1', '', 'a'.repeat(300), 'eu..ninjarmm.com', 'https://eu.ninjarmm.com',
    'eu.ninjarmm.com\u0000.evil.com', 'app.ninjarmm.com\\@evil.com',
  ];
  assert.ok(hostile.length >= 30);
  await s.fake.reset();
  const before = await s.fake.stats();
  const d = await s.createSession({ end_user: { id: 'u' } });
  for (const instance of hostile) {
    const r = await s.link(d.token, { instance });
    assert.ok(r.status === 400, `${JSON.stringify(instance)} -> ${r.status} ${r.text}`);
    assert.ok(['invalid_connection_config', 'invalid_query_params'].includes(r.json.error.code), instance);
  }
  const after2 = await s.fake.stats();
  assert.equal(after2.connections, before.connections, 'no socket reached the fake');
  assert.equal(after2.token_requests, before.token_requests);
});

test('allowed_integrations and integrations_config_defaults are enforced', async () => {
  await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninja-other' });
  let d = await s.createSession({ end_user: { id: 'u' }, allowed_integrations: ['ninja-other'] });
  let r = await s.link(d.token);
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'integration_not_allowed');
  d = await s.createSession({ end_user: { id: 'u' }, integrations_config_defaults: { 'ninjaone-rmm': { connection_config: { instance: 'eu.ninjarmm.com' } } } });
  r = await s.link(d.token, { instance: 'app.ninjarmm.com' });
  assert.equal(r.status, 200, 'session defaults win over the user value: ' + r.text);
  const c = await s.api('GET', `/connections/${r.json.connectionId}?provider_config_key=ninjaone-rmm`);
  assert.equal(c.json.connection_config.instance, 'eu.ninjarmm.com');
  d = await s.createSession({ end_user: { id: 'u' } }); // the one above is used up
  r = await api(s.latchUrl, null, 'POST', '/oauth2/auth/ninjaone-rmm?connect_session_token=' + d.token + '&connection_id=abc', { client_id: s.client.client_id, client_secret: s.client.client_secret });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'invalid_query_params');
  r = await api(s.latchUrl, null, 'POST', '/oauth2/auth/ninjaone-rmm?connect_session_token=' + d.token, { client_id: s.client.client_id });
  assert.equal(r.json.error.code, 'missing_client_secret');
  r = await api(s.latchUrl, null, 'POST', '/oauth2/auth/ninjaone-rmm?connect_session_token=' + d.token, { client_id: 'short', client_secret: s.client.client_secret });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'invalid_credentials');
});

test('reconnect replaces credentials in place (operation override)', async () => {
  const d = await s.createSession({ end_user: { id: 'u-re' } });
  const first = await s.link(d.token);
  assert.equal(first.status, 200);
  const id = first.json.connectionId;
  const before = await s.api('GET', `/connections/${id}?provider_config_key=ninjaone-rmm`);
  let r = await s.api('POST', '/connect/sessions/reconnect', { connection_id: id, integration_id: 'ninjaone-rmm', end_user: { id: 'u-re' } });
  assert.equal(r.status, 201, r.text);
  const tok = r.json.data.token;
  const sess = await api(s.latchUrl, tok, 'GET', '/connect/session');
  assert.equal(sess.json.data.isReconnecting, true);
  r = await s.link(tok, { client_id: s.monitoringClient.client_id, client_secret: s.monitoringClient.client_secret, instance: s.monitoringClient.instance });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.connectionId, id, 'same connection');
  const after2 = await s.api('GET', `/connections/${id}?provider_config_key=ninjaone-rmm`);
  assert.equal(after2.json.credentials.client_id, s.monitoringClient.client_id);
  assert.equal(after2.json.id, before.json.id);
  const wh = await s.webhooks.waitFor((w) => w.json?.connectionId === id && w.json?.operation === 'override');
  assert.equal(wh.json.success, true);
  r = await s.api('POST', '/connect/sessions/reconnect', { connection_id: 'nope', integration_id: 'ninjaone-rmm' });
  assert.equal(r.status, 400);
});

test('webhooks are retried on 5xx and survive a restart', async () => {
  // receiver fails twice, then accepts
  s.webhooks.respondWith(503, 500);
  const d = await s.createSession({ end_user: { id: 'u-wh' } });
  const r = await s.link(d.token);
  assert.equal(r.status, 200);
  const got = await s.webhooks.waitFor((w) => w.json?.connectionId === r.json.connectionId, 15000);
  const tries = s.webhooks.received.filter((w) => w.json?.connectionId === r.json.connectionId);
  assert.ok(tries.length >= 3, `retried (${tries.length} tries)`);
  assert.equal(got.status, 200);

  // queue a webhook while the receiver refuses, kill latch hard, restart: it is still delivered
  s.webhooks.respondWith(500, 500, 500, 500);
  const d2 = await s.createSession({ end_user: { id: 'u-wh2' } });
  const r2 = await s.link(d2.token);
  assert.equal(r2.status, 200);
  await s.restartLatch('SIGKILL');
  const got2 = await s.webhooks.waitFor((w) => w.json?.connectionId === r2.json.connectionId, 20000);
  assert.equal(got2.json.operation, 'creation');
});

test('the secret is never logged or put in a URL', async () => {
  const log = s.logs();
  assert.equal(log.includes(s.client.client_secret), false);
  assert.equal(log.includes(s.monitoringClient.client_secret), false);
  assert.equal(log.includes('nango_connect_session_'), false, 'session tokens are not logged');
});

// Issue 15 item 10: X-Nango-Signature is SHA-256(key || body), open to length extension;
// LATCH_WEBHOOK_LEGACY_SIGNATURE=false stops sending it (the HMAC header stays).
test('LATCH_WEBHOOK_LEGACY_SIGNATURE=false: only X-Nango-Hmac-Sha256 is sent', async () => {
  const signingKey = execFileSync(LATCH_BIN, ['env', 'webhook-key', 'dev'], { env: s.cliEnv() }).toString().trim();
  const linkAndWait = async (user) => {
    const d = await s.createSession({ end_user: { id: user } });
    const r = await s.link(d.token);
    assert.equal(r.status, 200, r.text);
    return s.webhooks.waitFor((w) => w.json?.connectionId === r.json.connectionId);
  };
  // the default keeps Nango's legacy header, for receivers that still check it
  let wh = await linkAndWait('legacy-on');
  assert.equal(wh.headers['x-nango-signature'], crypto.createHash('sha256').update(signingKey + wh.raw).digest('hex'));
  await s.restartLatch('SIGTERM', { LATCH_WEBHOOK_LEGACY_SIGNATURE: 'false' });
  try {
    wh = await linkAndWait('legacy-off');
    assert.equal(wh.headers['x-nango-signature'], undefined, 'legacy signature not sent');
    assert.equal(wh.headers['x-nango-hmac-sha256'], crypto.createHmac('sha256', signingKey).update(wh.raw).digest('hex'));
  } finally {
    await s.restartLatch('SIGTERM');
  }
});

// Issue 15 item 6: a session links once; the end user cannot widen the scopes or store keys the
// provider does not declare.
test('connect sessions: single-use after a successful link, reconnect sessions too', async () => {
  const d = await s.createSession({ end_user: { id: 'u-once' } });
  // failed attempts do not use the session up
  let r = await s.link(d.token, { client_secret: 'wrong-secret-0123456789' });
  assert.equal(r.status, 400, r.text);
  r = await s.link(d.token);
  assert.equal(r.status, 200, r.text);
  const id = r.json.connectionId;
  r = await s.link(d.token);
  assert.equal(r.status, 401, `a second link with the same session: ${r.status} ${r.text}`);
  assert.equal(r.json.error.code, 'unknown_connect_session_token');
  const list = await s.api('GET', '/connections?endUserId=u-once');
  assert.equal(list.json.connections.length, 1, 'one connection from one session');

  r = await s.api('POST', '/connect/sessions/reconnect', { connection_id: id, integration_id: 'ninjaone-rmm', end_user: { id: 'u-once' } });
  assert.equal(r.status, 201, r.text);
  const tok = r.json.data.token;
  r = await s.link(tok);
  assert.equal(r.status, 200, r.text);
  r = await s.link(tok);
  assert.equal(r.status, 401, `a reconnect session relinks once: ${r.status}`);

  // two links of one session racing: one connection, the other 409 or 401
  const d2 = await s.createSession({ end_user: { id: 'u-race' } });
  const both = await Promise.all([s.link(d2.token), s.link(d2.token), s.link(d2.token)]);
  assert.equal(both.filter((x) => x.status === 200).length, 1, both.map((x) => `${x.status} ${x.text}`).join('\n'));
  assert.ok(both.every((x) => [200, 401, 409].includes(x.status)), both.map((x) => `${x.status} ${x.text}`).join('\n'));
  const raced = await s.api('GET', '/connections?endUserId=u-race');
  assert.equal(raced.json.connections.length, 1);
});

test('connect sessions: undeclared params are refused; user scopes never reach the token request', async () => {
  await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninja-mon-only', integration_config: { oauth_scopes: 'monitoring' } });
  const before = (await s.fake.stats()).token_requests;
  const d = await s.createSession({ end_user: { id: 'u-params' } });
  const linkWith = (extra, key = 'ninja-mon-only') => {
    const q = new URLSearchParams({ connect_session_token: d.token, 'params[instance]': s.client.instance, ...extra });
    return api(s.latchUrl, null, 'POST', `/oauth2/auth/${key}?${q}`, { client_id: s.client.client_id, client_secret: s.client.client_secret });
  };
  let r = await linkWith({ 'params[oauth_scopes]': 'monitoring management control' });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'invalid_connection_config');
  assert.match(r.json.error.message, /'oauth_scopes'/);
  r = await linkWith({ 'params[tenant_hint]': 'x' });
  assert.equal(r.status, 400, r.text);
  assert.match(r.json.error.message, /'tenant_hint'/);
  assert.equal((await s.fake.stats()).token_requests, before, 'refused before any token request');
  r = await linkWith({});
  assert.equal(r.status, 200, r.text);
  assert.equal((await s.fake.lastTokenRequest()).form.scope, 'monitoring', 'the integration decides the scopes');
  const c = await s.api('GET', `/connections/${r.json.connectionId}?provider_config_key=ninja-mon-only`);
  assert.deepEqual(Object.keys(c.json.connection_config).sort(), ['instance', 'oauth_scopes']);
});
