// OAuth2 authorization code end to end against a real authorization server nobody here wrote:
// oidc-provider (lib/oidc.mjs) over TLS with the test CA, PKCE required, refresh tokens rotated on
// every use. The provider definition under test is a Nango-format providers.yaml entry
// (LATCH_PROVIDERS_FILE). The browser is played with fetch: latch's /oauth/connect/:key, the
// provider's login and consent forms, latch's /oauth/callback.
//
// Covers: success (tokens stored, auth webhook, PKCE S256 + state sent); user denial in words;
// forged, replayed and expired state refused with nothing exchanged; code reuse refused; refresh
// with rotation (the old refresh token dead at the provider); a refresh token revoked upstream ->
// needs re-authorisation (read, GET /connections, failure webhook, reconnect); 1,000 concurrent reads
// of an expired token -> exactly one refresh_token grant at the provider.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startOidcStack, OIDC_PROVIDER_KEY as KEY } from './lib/oidc.mjs';
import { burst, request } from './lib/load.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let s;

before(async () => {
  s = await startOidcStack({ env: { LATCH_BACKGROUND_REFRESH: 'false', LATCH_REFRESH_BACKOFF_MS: '300' } });
});
after(async () => { await s?.stop(); });

const getPath = (id, force = false) => `/connections/${encodeURIComponent(id)}?provider_config_key=${KEY}&force_refresh=${force}&refresh_token=true`;

/** Runs the flow to success; resolves to { id, creds, flow, webhook }. */
async function connect(opts = {}) {
  const from = s.webhooks.received.length;
  const flow = await s.connect(opts);
  assert.equal(flow.cb.status, 200, `callback: ${flow.cb.text.slice(0, 500)}`);
  const code = new URL(flow.auth.callbackUrl).searchParams.get('code');
  assert.ok(code, 'the provider issued a code');
  const wh = await s.webhooks.waitFor((w) => w.json?.type === 'auth' && w.json?.success === true && w.json?.providerConfigKey === KEY, 10000, from);
  const id = wh.json.connectionId;
  const r = await s.api('GET', getPath(id));
  assert.equal(r.status, 200, r.text);
  return { id, creds: r.json.credentials, flow, webhook: wh };
}

test('success: PKCE S256 + state to the provider, tokens stored, auth webhook, page posts to the opener', async () => {
  const c0 = s.op.counts();
  const { id, creds, flow, webhook } = await connect();
  // what latch sent to the authorization endpoint
  const q = s.op.authRequests.at(-1).query;
  assert.equal(q.code_challenge_method, 'S256');
  assert.match(q.code_challenge, /^[A-Za-z0-9_-]{43}$/);
  assert.ok(q.state && q.state.length >= 22, `state is long and random: ${q.state}`);
  assert.equal(q.redirect_uri, `${s.latchUrl}/oauth/callback`);
  assert.deepEqual(q.scope.split(' ').sort(), ['devices:read', 'offline_access', 'openid']);
  assert.equal(q.client_id, 'latch-test-client');
  assert.ok(!flow.start.location.includes('oidc-test-secret'), 'the client secret never goes in a URL');
  // one code exchange, the tokens oidc-provider issued are the ones stored
  assert.equal(s.op.counts().code - c0.code, 1);
  const issued = s.op.issued.at(-1);
  assert.equal(creds.type, 'OAUTH2');
  assert.equal(creds.access_token, issued.access_token);
  assert.equal(creds.refresh_token, issued.refresh_token);
  assert.ok(Date.parse(creds.expires_at) > Date.now() + 3000 * 1000, `expires_at from expires_in: ${creds.expires_at}`);
  const plain = await s.api('GET', `/connections/${encodeURIComponent(id)}?provider_config_key=${KEY}`);
  assert.equal(plain.json.credentials.refresh_token, undefined, 'as Nango: the refresh token only with refresh_token=true');
  assert.ok(!plain.text.includes(issued.refresh_token));
  // the webhook (Nango's auth webhook)
  assert.equal(webhook.json.operation, 'creation');
  assert.equal(webhook.json.provider, KEY);
  assert.ok(!webhook.raw.includes(issued.access_token) && !webhook.raw.includes(issued.refresh_token), 'no token in the webhook');
  // the page: tells the opener, closes itself; no token in it
  assert.match(flow.cb.headers.get('content-type') || '', /text\/html/);
  assert.match(flow.cb.text, /postMessage/);
  assert.match(flow.cb.text, /window\.close/);
  assert.ok(!flow.cb.text.includes(issued.access_token) && !flow.cb.text.includes(issued.refresh_token));
  assert.ok(!s.logs().includes(issued.refresh_token), 'refresh token never logged');
  // listed, and the integration never returns the app secret in full
  const list = await s.api('GET', '/connections');
  assert.ok(list.json.connections.some((x) => x.connection_id === id));
  const integ = await s.api('GET', `/integrations/${KEY}?include=credentials`);
  assert.equal(integ.status, 200, integ.text);
  assert.ok(!integ.text.includes('oidc-test-secret-4f8a2c91d7e35b06a1c8'), `client secret returned in full: ${integ.text}`);
});

test('user denial: access_denied reaches the user in words; no connection, nothing exchanged', async () => {
  const before = (await s.api('GET', '/connections')).json.connections.length;
  const c0 = s.op.counts();
  const flow = await s.connect({ deny: true });
  assert.match(flow.auth.callbackUrl, /error=access_denied/);
  assert.ok(flow.cb.status >= 200 && flow.cb.status < 500, `status ${flow.cb.status}`);
  assert.match(flow.cb.text, /OIDC Test Provider/, 'names the provider');
  assert.match(flow.cb.text, /(denied|declined|refused|did not (allow|grant|authori[sz]e)|cancel)/i, flow.cb.text.slice(0, 800));
  assert.match(flow.cb.text, /postMessage/, 'the opener learns about the error too');
  assert.equal(s.op.counts().token, c0.token, 'no token request');
  assert.equal((await s.api('GET', '/connections')).json.connections.length, before);
});

test('forged and missing state are refused before any exchange', async () => {
  const c0 = s.op.counts();
  // a real flow up to the provider's redirect, then the code with a forged state
  const sess = await s.createSession();
  const start = await s.connectStart(sess.token);
  assert.equal(start.status, 302, start.text);
  const auth = await s.op.authorize(start.location);
  const u = new URL(auth.callbackUrl);
  const code = u.searchParams.get('code');
  for (const state of ['forged-state-0123456789abcdefghij', '', 'A'.repeat(5000)]) {
    const q = new URLSearchParams({ code });
    if (state) q.set('state', state);
    const r = await s.callback(`${s.latchUrl}/oauth/callback?${q}`);
    assert.ok(r.status >= 400 && r.status < 500, `state ${state.slice(0, 20)}: ${r.status} ${r.text.slice(0, 300)}`);
    assert.match(r.text, /(state|expired|start (again|over)|try again|link)/i);
  }
  assert.equal(s.op.counts().token, c0.token, 'nothing exchanged');
  // the genuine callback still works afterwards (the forgeries did not consume it)
  const ok = await s.callback(auth.callbackUrl);
  assert.equal(ok.status, 200, ok.text.slice(0, 400));
  assert.equal(s.op.counts().code, c0.code + 1);
});

test('a replayed state (already used) is refused; nothing exchanged', async () => {
  const first = await connect();
  const usedState = new URL(first.flow.auth.callbackUrl).searchParams.get('state');
  // a second authorization yields a fresh, valid code; paired with the used state it must fail
  const sess = await s.createSession();
  const start = await s.connectStart(sess.token);
  const auth = await s.op.authorize(start.location);
  const code2 = new URL(auth.callbackUrl).searchParams.get('code');
  const c0 = s.op.counts();
  const r = await s.callback(`${s.latchUrl}/oauth/callback?${new URLSearchParams({ code: code2, state: usedState, iss: s.op.issuer })}`);
  assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${r.text.slice(0, 300)}`);
  assert.equal(s.op.counts().token, c0.token, 'nothing exchanged');
});

test('a state is single-use even while its connect session is still open', async () => {
  // one session, one authorization; the first callback carries a forged code (the exchange fails,
  // the session stays open), the second the genuine code with the same state: refused unexchanged
  const sess = await s.createSession();
  const start = await s.connectStart(sess.token);
  assert.equal(start.status, 302, start.text);
  const auth = await s.op.authorize(start.location);
  const u = new URL(auth.callbackUrl);
  const forged = new URL(u);
  forged.searchParams.set('code', 'forged-code-0123456789abcdefghijklmnopqrstu');
  const c0 = s.op.counts();
  const first = await s.callback(forged.toString());
  assert.ok(first.status >= 400 && first.status < 500, `${first.status} ${first.text.slice(0, 300)}`);
  assert.equal(s.op.tokenRequests.length - c0.token, 1, 'the forged code was tried once');
  assert.equal(s.op.tokenRequests.at(-1).error, 'invalid_grant');
  const replay = await s.callback(auth.callbackUrl);
  assert.ok(replay.status >= 400 && replay.status < 500, `${replay.status} ${replay.text.slice(0, 300)}`);
  assert.match(replay.text, /(already used|unknown|start the connection again)/i);
  assert.equal(s.op.tokenRequests.length - c0.token, 1, 'the used state exchanged nothing');
  // the session itself is still good for a new authorization
  const again = await s.connectStart(sess.token);
  assert.equal(again.status, 302, again.text);
});

test('code reuse: the same callback replayed is refused, and the grant stays valid upstream', async () => {
  const { id, flow } = await connect();
  const c0 = s.op.counts();
  const r = await s.callback(flow.auth.callbackUrl);
  assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${r.text.slice(0, 300)}`);
  assert.equal(s.op.counts().token, c0.token, 'the code was not presented twice');
  // had latch redeemed the code again, oidc-provider would have revoked the whole grant
  const rt = (await s.api('GET', getPath(id))).json.credentials.refresh_token;
  assert.equal((await s.op.introspect(rt)).active, true, 'refresh token still active at the provider');
  const f = await s.api('GET', getPath(id, true));
  assert.equal(f.status, 200, f.text);
});

test('refresh with rotation: new access and refresh tokens; the old refresh token is dead upstream', async () => {
  s.op.setAccessTokenTTL(30); // inside latch's 60 s margin: stale as soon as issued
  let c;
  try { c = await connect(); } finally { s.op.setAccessTokenTTL(3600); }
  const c0 = s.op.counts();
  const old = c.creds;
  const r = await s.api('GET', getPath(c.id));
  assert.equal(r.status, 200, r.text);
  const n = r.json.credentials;
  assert.equal(s.op.counts().refresh - c0.refresh, 1, 'one refresh_token grant');
  assert.notEqual(n.access_token, old.access_token);
  assert.notEqual(n.refresh_token, old.refresh_token, 'rotated refresh token stored');
  const rot = s.op.rotations.at(-1);
  assert.equal(rot.old, old.refresh_token, 'latch presented the stored refresh token');
  assert.equal(n.refresh_token, rot.refresh_token);
  assert.equal(n.access_token, rot.access_token);
  assert.equal((await s.op.introspect(old.refresh_token)).active, false, 'the previous refresh token is rejected upstream');
  assert.equal((await s.op.introspect(n.refresh_token)).active, true);
  // fresh now: no further grant
  const again = await s.api('GET', getPath(c.id));
  assert.equal(again.json.credentials.access_token, n.access_token);
  assert.equal(s.op.counts().refresh - c0.refresh, 1);
  // and the stored (rotated) refresh token is what the next refresh uses, across a restart
  await s.restartLatch();
  const f = await s.api('GET', getPath(c.id, true));
  assert.equal(f.status, 200, f.text);
  assert.equal(s.op.rotations.at(-1).old, n.refresh_token);
  assert.equal(s.op.grantErrors.filter((e) => e.grant_type === 'refresh_token').length, 0, JSON.stringify(s.op.grantErrors));
});

test('a refresh token revoked upstream: needs re-authorisation (read, list, failure webhook), reconnect works', async () => {
  s.op.setAccessTokenTTL(30);
  let c;
  try { c = await connect(); } finally { s.op.setAccessTokenTTL(3600); }
  await s.op.revokeRefreshToken(c.creds.refresh_token);
  const r = await s.api('GET', getPath(c.id));
  assert.ok(r.status >= 400 && r.status < 500, `a permanent failure is a 4xx: ${r.status} ${r.text}`);
  assert.ok(r.json?.error?.code, r.text);
  assert.match(r.json.error.message, /(re-?authori[sz]|reconnect|authori[sz]e .*again|link .*again)/i, r.json.error.message);
  assert.match(r.json.error.message, /OIDC Test Provider/, 'in the provider\'s words');
  // GET /connections shows it (Nango: errors: [{type: 'auth', ...}])
  const list = await s.api('GET', '/connections');
  const entry = list.json.connections.find((x) => x.connection_id === c.id);
  assert.ok(entry, 'still listed');
  assert.ok(Array.isArray(entry.errors) && entry.errors.some((e) => e.type === 'auth'), JSON.stringify(entry));
  // failure webhook
  const wh = await s.webhooks.waitFor((w) => w.json?.connectionId === c.id && w.json?.type === 'auth' && w.json?.success === false);
  assert.equal(wh.json.operation, 'refresh');
  // no retry storm: a second read does not hammer the provider with the dead token
  const n0 = s.op.tokenRequests.length;
  await s.api('GET', getPath(c.id));
  assert.ok(s.op.tokenRequests.length - n0 <= 1);
  // a reconnect session re-runs the flow for the same connection and clears the error
  const rs = await s.api('POST', '/connect/sessions/reconnect', { connection_id: c.id, integration_id: KEY });
  assert.equal(rs.status, 201, rs.text);
  const again = await connect({ session: rs.json.data });
  assert.equal(again.id, c.id);
  const ok = await s.api('GET', getPath(c.id));
  assert.equal(ok.status, 200, ok.text);
  const entry2 = (await s.api('GET', '/connections')).json.connections.find((x) => x.connection_id === c.id);
  assert.ok(!entry2.errors?.length, JSON.stringify(entry2));
});

test('1,000 concurrent reads of an expired OAuth2 token: exactly one refresh_token grant upstream', async () => {
  s.op.setAccessTokenTTL(30);
  let c;
  try { c = await connect(); } finally { s.op.setAccessTokenTTL(3600); }
  const c0 = s.op.counts();
  const results = await burst(1000, (i, agent) => request(`${s.latchUrl}${getPath(c.id)}`, { agent, headers: { authorization: `Bearer ${s.secretKey}` } }));
  const tokens = new Set();
  for (const r of results) {
    assert.equal(r.status, 200, r.body.toString().slice(0, 300));
    tokens.add(r.json.credentials.access_token);
  }
  assert.equal(s.op.counts().refresh - c0.refresh, 1, 'exactly one refresh grant');
  assert.equal(s.op.tokenRequests.length - c0.token, 1, 'exactly one token request');
  assert.equal(tokens.size, 1, 'every reader got the same new token');
  assert.ok(!tokens.has(c.creds.access_token));
});

test('an expired state is refused; nothing exchanged', async () => {
  await s.restartLatch('SIGTERM', { LATCH_OAUTH_STATE_TTL_S: '1' });
  try {
    const sess = await s.createSession();
    const start = await s.connectStart(sess.token);
    assert.equal(start.status, 302, start.text);
    const auth = await s.op.authorize(start.location);
    await sleep(2500);
    const c0 = s.op.counts();
    const r = await s.callback(auth.callbackUrl);
    assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${r.text.slice(0, 300)}`);
    assert.match(r.text, /(expired|too long|start (again|over)|try again)/i);
    assert.equal(s.op.counts().token, c0.token, 'nothing exchanged');
  } finally {
    await s.restartLatch('SIGTERM');
  }
});
