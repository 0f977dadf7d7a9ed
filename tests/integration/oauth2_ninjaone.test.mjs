// NinjaOne's own authorization-code variant, `ninjaone-rmm-oauth2`, end to end against the fake
// NinjaOne (tests/fake_ninjaone: /ws/oauth/authorize auto-approves, PKCE, single-use codes, refresh
// tokens rotated on every use), reached at https://eu.ninjarmm.com through LATCH_RESOLVE and the
// test CA: success (tokens stored, webhook), refresh with rotation, the proxy with the fresh token,
// a refresh token revoked at NinjaOne -> needs re-authorisation, an instance outside NinjaOne's five
// refused before any network call.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack } from './lib/stack.mjs';

const KEY = 'ninjaone-rmm-oauth2';
let s;

before(async () => {
  s = await startStack({
    createIntegration: false,
    env: { LATCH_BACKGROUND_REFRESH: 'false', LATCH_REFRESH_MARGIN_S: '60', LATCH_REFRESH_BACKOFF_MS: '300' },
  });
  const r = await s.api('POST', '/integrations', {
    provider: KEY, unique_key: KEY,
    credentials: { type: 'OAUTH2', client_id: s.client.client_id, client_secret: s.client.client_secret, scopes: 'monitoring,management,offline_access' },
  });
  assert.equal(r.status, 200, r.text);
});
after(async () => { await s?.stop(); });

const getPath = (id, force = false) => `/connections/${encodeURIComponent(id)}?provider_config_key=${KEY}&force_refresh=${force}&refresh_token=true`;

/** latch's connect -> the fake's authorize (auto-approve) -> latch's callback. */
async function connect({ instance = 'eu.ninjarmm.com' } = {}) {
  const from = s.webhooks.received.length;
  const sess = await s.createSession({ end_user: { id: 'ninja-user' }, allowed_integrations: [KEY] });
  const q = new URLSearchParams({ connect_session_token: sess.token, 'params[instance]': instance });
  const start = await fetch(`${s.latchUrl}/oauth/connect/${KEY}?${q}`, { redirect: 'manual' });
  const startText = await start.text();
  assert.equal(start.status, 302, startText.slice(0, 400));
  const loc = new URL(start.headers.get('location'));
  assert.equal(loc.host, instance);
  assert.equal(loc.pathname, '/ws/oauth/authorize');
  assert.equal(loc.searchParams.get('code_challenge_method'), 'S256');
  assert.match(loc.searchParams.get('scope'), /offline_access/);
  const a = await s.fake.request('GET', loc.pathname + loc.search, { host: instance });
  assert.equal(a.status, 302, a.text);
  const cbUrl = a.headers.location;
  assert.ok(cbUrl.startsWith(`${s.latchUrl}/oauth/callback?`), cbUrl);
  const cb = await fetch(cbUrl, { redirect: 'manual' });
  const cbText = await cb.text();
  assert.equal(cb.status, 200, cbText.slice(0, 400));
  const wh = await s.webhooks.waitFor((w) => w.json?.type === 'auth' && w.json?.success === true && w.json?.providerConfigKey === KEY, 10000, from);
  const r = await s.api('GET', getPath(wh.json.connectionId));
  assert.equal(r.status, 200, r.text);
  return { id: wh.json.connectionId, creds: r.json.credentials, connection: r.json };
}

test('ninjaone-rmm-oauth2: the code flow stores access and refresh tokens for the instance', async () => {
  const st0 = await s.fake.stats();
  const { creds, connection } = await connect();
  const st1 = await s.fake.stats();
  assert.equal(st1.code_grants - st0.code_grants, 1);
  assert.equal(creds.type, 'OAUTH2');
  assert.ok(creds.access_token && creds.refresh_token, JSON.stringify(Object.keys(creds)));
  assert.equal(connection.connection_config?.instance, 'eu.ninjarmm.com');
});

test('ninjaone-rmm-oauth2: an expired token refreshes once with rotation; the proxy uses the new one', async () => {
  await s.fake.config({ token_lifetime: 30 }); // inside the 60 s margin: stale at once
  let c;
  try { c = await connect(); } finally { await s.fake.config({ token_lifetime: 3600 }); }
  const st0 = await s.fake.stats();
  const r = await s.api('GET', getPath(c.id));
  assert.equal(r.status, 200, r.text);
  const st1 = await s.fake.stats();
  assert.equal(st1.refresh_grants_ok - st0.refresh_grants_ok, 1, 'one refresh grant');
  assert.notEqual(r.json.credentials.access_token, c.creds.access_token);
  assert.notEqual(r.json.credentials.refresh_token, c.creds.refresh_token, 'rotated refresh token stored');
  // the old refresh token is dead at NinjaOne; the stored one works (after a restart too)
  const old = await s.fake.grant(s.client, { grant_type: 'refresh_token', refresh_token: c.creds.refresh_token });
  assert.equal(old.status, 400);
  await s.restartLatch();
  const f = await s.api('GET', getPath(c.id, true));
  assert.equal(f.status, 200, f.text);
  const p = await s.api('GET', '/proxy/v2/echo', undefined, { headers: { 'connection-id': c.id, 'provider-config-key': KEY } });
  assert.equal(p.status, 200, p.text.slice(0, 300));
});

test('ninjaone-rmm-oauth2: refresh tokens revoked at NinjaOne -> needs re-authorisation, in words', async () => {
  await s.fake.config({ token_lifetime: 30 });
  let c;
  try { c = await connect(); } finally { await s.fake.config({ token_lifetime: 3600 }); }
  const from = s.webhooks.received.length;
  await s.fake.revokeRefresh(s.client.client_id);
  const r = await s.api('GET', getPath(c.id));
  assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${r.text}`);
  assert.match(r.json.error.message, /NinjaOne/);
  assert.match(r.json.error.message, /(re-?authori[sz]|reconnect|authori[sz]e .*again|link .*again)/i, r.json.error.message);
  const entry = (await s.api('GET', '/connections')).json.connections.find((x) => x.connection_id === c.id);
  assert.ok(entry?.errors?.some((e) => e.type === 'auth'), JSON.stringify(entry));
  await s.webhooks.waitFor((w) => w.json?.connectionId === c.id && w.json?.success === false, 10000, from);
});

test('ninjaone-rmm-oauth2: an instance outside NinjaOne\'s five is refused before any network call', async () => {
  const sess = await s.createSession({ end_user: { id: 'ninja-user' }, allowed_integrations: [KEY] });
  const st0 = await s.fake.stats();
  for (const instance of ['evil.example.com', 'eu.ninjarmm.com.evil.test', 'eu.ninjarmm.com/x?', '127.0.0.1']) {
    const q = new URLSearchParams({ connect_session_token: sess.token, 'params[instance]': instance });
    const r = await fetch(`${s.latchUrl}/oauth/connect/${KEY}?${q}`, { redirect: 'manual' });
    const text = await r.text();
    assert.ok(r.status !== 302, `${instance}: redirected to ${r.headers.get('location')}`);
    assert.ok(r.status >= 400 && r.status < 500, `${instance}: ${r.status} ${text.slice(0, 200)}`);
  }
  const st1 = await s.fake.stats();
  assert.equal(st1.code_grants, st0.code_grants);
});
