// Smoke check of the fake NinjaOne server through tests/integration/lib/fake.mjs. Not part of CTest;
// run by hand after changing the fake:
//   FAKE_NINJAONE_BIN=build/fake-ninjaone node tests/fake_ninjaone/smoke.mjs
// Exits non-zero on the first failed assertion.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startFake, makeTestCA, expectedBytes, expectedBytesSha256,
  DEFAULT_CLIENT, MONITORING_CLIENT, US2_CLIENT,
} from '../integration/lib/fake.mjs';

const tlsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-smoke-tls-'));
const ca = await makeTestCA(tlsDir);
assert.ok(fs.existsSync(ca.ca) && fs.existsSync(ca.cert));
const again = fs.statSync(ca.cert).mtimeMs;
await makeTestCA(tlsDir);
assert.equal(fs.statSync(ca.cert).mtimeMs, again, 'make-test-ca reuses a valid CA');

async function check(name, fn) {
  const t0 = Date.now();
  await fn();
  console.log(`ok  ${name} (${Date.now() - t0} ms)`);
}

for (const plain of [false, true]) {
  const fake = await startFake({ tlsDir, http: plain, clients: [DEFAULT_CLIENT, MONITORING_CLIENT] });
  const mode = plain ? 'http' : 'https';
  try {
    const bearer = async (client = DEFAULT_CLIENT, opts = {}) => {
      const r = await fake.token(client, opts);
      assert.equal(r.status, 200, r.text);
      return { authorization: `Bearer ${r.json.access_token}` };
    };

    await check(`${mode}: token, exact request shape, counters`, async () => {
      await fake.reset();
      const r = await fake.token(DEFAULT_CLIENT, { scope: 'monitoring management' });
      assert.equal(r.status, 200);
      assert.equal(r.headers['cache-control'], 'no-store');
      assert.match(r.json.access_token, /^[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}$/);
      assert.equal(r.json.token_type, 'Bearer');
      assert.equal(r.json.expires_in, 3600);
      assert.equal(r.json.scope, 'monitoring management');
      assert.ok(!('refresh_token' in r.json));
      const last = await fake.lastTokenRequest();
      assert.equal(last.content_type, 'application/x-www-form-urlencoded');
      assert.equal(last.form.grant_type, 'client_credentials');
      assert.equal(last.form.client_secret, '<redacted>');
      assert.equal(last.form.scope, 'monitoring management');
      assert.equal(last.secret_ok, true);
      assert.equal(last.basic, false);
      assert.equal(last.host, 'eu.ninjarmm.com');
      const st = await fake.stats();
      assert.equal(st.token_requests, 1);
      assert.equal(st.token_requests_ok, 1);
      assert.equal(st.tokens_issued, 1);
      assert.equal(st.connections, 1, 'control connections are not counted');
    });

    await check(`${mode}: token errors`, async () => {
      let r = await fake.token({ ...DEFAULT_CLIENT, client_secret: 'wrong-secret-wrong-secret' });
      assert.deepEqual([r.status, r.json.error], [401, 'invalid_client']);
      r = await fake.token(DEFAULT_CLIENT, { host: 'app.ninjarmm.com' });
      assert.deepEqual([r.status, r.json.error], [401, 'invalid_client'], 'region confusion');
      r = await fake.token(MONITORING_CLIENT, { scope: 'monitoring management' });
      assert.deepEqual([r.status, r.json.error], [400, 'invalid_scope']);
      r = await fake.token(DEFAULT_CLIENT, { scope: 'monitoring,management' });
      assert.deepEqual([r.status, r.json.error], [400, 'invalid_scope'], 'comma is not a separator');
      r = await fake.token(DEFAULT_CLIENT, { basic: true, scope: 'monitoring' });
      assert.equal(r.status, 200);
      assert.equal(r.json.scope, 'monitoring');
      assert.equal((await fake.lastTokenRequest()).basic, true);
      r = await fake.request('POST', '/ws/oauth/token', {
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `grant_type=password&client_id=${DEFAULT_CLIENT.client_id}&client_secret=${DEFAULT_CLIENT.client_secret}`,
      });
      assert.deepEqual([r.status, r.json().error], [400, 'unsupported_grant_type']);
      r = await fake.request('POST', '/ws/oauth/token', { body: { grant_type: 'client_credentials' } });
      assert.deepEqual([r.status, r.json().error], [400, 'invalid_request']);
      r = await fake.request('POST', '/oauth/token', { body: 'x=1' });
      assert.equal(r.status, 405);
      r = await fake.request('GET', '/.well-known/oauth-authorization-server');
      assert.equal(r.status, 200);
      assert.match(r.json().token_endpoint, /^https?:\/\/eu\.ninjarmm\.com:\d+\/ws\/oauth\/token$/);
    });

    await check(`${mode}: API auth, scopes, dialects`, async () => {
      const h = await bearer();
      let r = await fake.request('GET', '/v2/organizations?pageSize=1', { headers: h });
      assert.equal(r.status, 200);
      assert.equal(r.json().length, 1);
      r = await fake.request('GET', '/api/v2/organizations', { headers: h });
      assert.equal(r.json().length, 3);
      r = await fake.request('GET', '/v2/organizations');
      assert.deepEqual(r.json(), { error: 'not_authenticated', error_description: 'Invalid credentials', error_code: 10 });
      assert.equal(r.status, 401);
      r = await fake.request('GET', '/v2/organizations', { headers: h, host: 'us2.ninjarmm.com' });
      assert.equal(r.status, 401, 'a token is bound to its instance');
      r = await fake.request('GET', '/v2/nope', { headers: h });
      assert.equal(r.status, 404);
      assert.equal(r.json().resultCode, 'FAILURE');
      assert.match(r.json().incidentId, /^WEB_MGMT_SERVICE-[0-9a-f]{8}-\d+-[A-Z0-9]{6}$/);
      const mh = await bearer(MONITORING_CLIENT);
      r = await fake.request('PATCH', '/v2/device/20', { headers: mh, body: { displayName: 'x' } });
      assert.deepEqual([r.status, r.json().error], [401, 'insufficient_privileges']);
      r = await fake.request('PATCH', '/v2/device/20', { headers: h, body: { displayName: 'Renamed' } });
      assert.equal(r.status, 204);
      r = await fake.request('GET', '/v2/device/20', { headers: h });
      assert.equal(r.json().displayName, 'Renamed');
      r = await fake.request('GET', '/v2/device/18', { headers: h });
      assert.equal(r.status, 404);
      r = await fake.request('POST', '/v2/device/20/script/run', { headers: h, body: {} });
      assert.deepEqual([r.status, r.json().error], [403, 'user_context_required']);
      await fake.expireAll();
      r = await fake.request('GET', '/v2/policies', { headers: h });
      assert.equal(r.status, 401);
      const h2 = await bearer();
      await fake.advanceClock(3700);
      r = await fake.request('GET', '/v2/policies', { headers: h2 });
      assert.equal(r.status, 401, 'expired by the fake clock');
      await fake.config({ clock_offset: 0 });
    });

    await check(`${mode}: paging past 1000, activities, cursor report, raw doubles`, async () => {
      const h = await bearer();
      let after = 0, all = [];
      for (;;) {
        const page = (await fake.request('GET', `/v2/devices-detailed?pageSize=1000&after=${after}`, { headers: h })).json();
        all.push(...page);
        if (page.length < 1000) break;
        after = Math.max(...page.map((d) => d.id));
      }
      assert.equal(all.length, 1115);
      assert.equal(new Set(all.map((d) => d.id)).size, 1115);
      let r = await fake.request('GET', '/v2/devices', { headers: h });
      assert.equal(r.json().length, 100, 'default page size');
      assert.match(r.text, /"created":\d\.\d+E9/, 'exponent-form doubles');
      r = await fake.request('GET', '/v2/activities', { headers: h });
      const act = r.json();
      assert.equal(act.activities.length, 200);
      assert.equal(act.lastActivityId, act.activities[0].id);
      let n = 0, older = '';
      for (;;) {
        const p = (await fake.request('GET', `/v2/activities?pageSize=1000${older}`, { headers: h })).json().activities;
        if (!p.length) break;
        n += p.length;
        older = `&olderThan=${Math.min(...p.map((a) => a.id))}`;
      }
      assert.equal(n, 500);
      let cursor = null, rows = 0;
      do {
        const q = cursor ? `&cursor=${cursor}` : '';
        const j = (await fake.request('GET', `/v2/queries/device-health?pageSize=400${q}`, { headers: h })).json();
        rows += j.results.length;
        cursor = j.cursor?.name ?? null;
      } while (cursor);
      assert.equal(rows, 1115);
    });

    await check(`${mode}: echo and bytes`, async () => {
      const h = await bearer();
      const body = crypto.randomBytes(300000);
      let r = await fake.request('PUT', '/v2/echo/a/b?x=1&h=X-Extra:%20yes', {
        headers: { ...h, 'content-type': 'application/octet-stream', 'x-test': 'T' }, body,
      });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-extra'], 'yes');
      const e = r.json();
      assert.equal(e.method, 'PUT');
      assert.equal(e.path, '/v2/echo/a/b');
      assert.equal(e.query, 'x=1&h=X-Extra:%20yes');
      assert.equal(e.headers['x-test'], 'T');
      assert.equal(e.body_len, body.length);
      assert.equal(e.body_sha256, crypto.createHash('sha256').update(body).digest('hex'));
      assert.ok(Buffer.from(e.body_base64, 'base64').equals(body));
      r = await fake.request('POST', '/v2/echo?raw=1&status=202', { headers: { ...h, 'content-type': 'application/x-test' }, body });
      assert.equal(r.status, 202);
      assert.equal(r.headers['content-type'], 'application/x-test');
      assert.ok(r.body.equals(body));
      r = await fake.request('GET', '/v2/bytes?n=5000000', { headers: h });
      assert.ok(r.body.equals(expectedBytes(0, 5000000)));
      assert.equal(crypto.createHash('sha256').update(r.body).digest('hex'), expectedBytesSha256(5000000));
      r = await fake.request('GET', '/v2/bytes?n=3000001&chunked=1', { headers: h });
      assert.equal(r.headers['transfer-encoding'], 'chunked');
      assert.ok(r.body.equals(expectedBytes(0, 3000001)));
      assert.ok(expectedBytes(5, 10).equals(expectedBytes(0, 15).subarray(5)));
      await assert.rejects(fake.request('GET', '/v2/bytes?n=1000000&fail_at=1000', { headers: h }));
    });

    await check(`${mode}: faults`, async () => {
      await fake.reset();
      await fake.fault({ target: 'token', mode: 'status', status: 429, retry_after: '2', count: 2 });
      let r = await fake.token();
      assert.equal(r.status, 429);
      assert.equal(r.headers['retry-after'], '2');
      assert.equal((await fake.token()).status, 429);
      assert.equal((await fake.token()).status, 200, 'count exhausted');
      await fake.fault({ target: 'token', mode: 'malformed', count: 1 });
      r = await fake.token();
      assert.equal(r.status, 200);
      assert.equal(r.json, null);
      await fake.fault({ target: 'token', mode: 'huge', count: 1 });
      r = await fake.token();
      assert.equal(r.text.length, 10 * 1024 * 1024);
      await fake.fault({ target: 'token', mode: 'reset', count: 1 });
      await assert.rejects(fake.token());
      await fake.fault({ target: 'token', mode: 'truncate', count: 1 });
      await assert.rejects(fake.token());
      await fake.fault({ target: 'api', mode: 'delay', delay_ms: 800, count: 1 });
      const h = await bearer();
      const t0 = Date.now();
      const slow = fake.request('GET', '/v2/policies', { headers: h });
      await new Promise((res) => setTimeout(res, 50));
      const fast = await fake.request('GET', '/v2/policies', { headers: h });
      assert.equal(fast.status, 200);
      assert.ok(Date.now() - t0 < 700, 'a delayed request does not block others');
      assert.equal((await slow).status, 200);
      assert.ok(Date.now() - t0 >= 800);
      await fake.fault({ target: 'all', mode: 'stall' });
      await assert.rejects(fake.request('GET', '/v2/policies', { headers: h, timeoutMs: 500 }));
      await fake.clearFaults();
      const st = await fake.stats();
      assert.equal(st.token_requests, 8);
      assert.equal(st.token_requests_ok, 2);
    });

    await check(`${mode}: runtime clients, atomic counting`, async () => {
      await fake.reset();
      let r = await fake.token(US2_CLIENT);
      assert.equal(r.status, 401);
      await fake.addClient(US2_CLIENT);
      r = await fake.token(US2_CLIENT);
      assert.equal(r.status, 200);
      await fake.reset();
      const rs = await Promise.all(Array.from({ length: 40 }, () => fake.token()));
      assert.ok(rs.every((x) => x.status === 200));
      const st = await fake.stats();
      assert.equal(st.token_requests, 40);
      assert.equal(st.tokens_issued, 40);
      assert.equal(st.connections, 40);
    });

    await check(`${mode}: code flow, PKCE, refresh rotation, revocation, deny`, async () => {
      await fake.reset();
      const verifier = crypto.randomBytes(32).toString('base64url');
      const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
      const redirect_uri = 'https://app.example.test/cb';
      let a = await fake.authorize(DEFAULT_CLIENT, { redirect_uri, state: 's1', code_challenge: challenge });
      assert.equal(a.status, 302);
      assert.ok(a.location.startsWith(`${redirect_uri}?code=`), a.location);
      assert.equal(a.params.get('state'), 's1');
      const code = a.params.get('code');
      let t = await fake.grant(DEFAULT_CLIENT, { grant_type: 'authorization_code', code, redirect_uri, code_verifier: 'x'.repeat(43) });
      assert.equal(t.status, 400);
      assert.equal(t.json.error, 'invalid_grant', 'a wrong verifier fails and burns the code');
      a = await fake.authorize(DEFAULT_CLIENT, { redirect_uri, code_challenge: challenge });
      t = await fake.grant(DEFAULT_CLIENT, { grant_type: 'authorization_code', code: a.params.get('code'), redirect_uri: `${redirect_uri}x`, code_verifier: verifier });
      assert.equal(t.json.error, 'invalid_grant', 'redirect_uri must match');
      a = await fake.authorize(DEFAULT_CLIENT, { redirect_uri, code_challenge: challenge });
      const good = { grant_type: 'authorization_code', code: a.params.get('code'), redirect_uri, code_verifier: verifier };
      t = await fake.grant(DEFAULT_CLIENT, good);
      assert.equal(t.status, 200, t.text);
      assert.match(t.json.refresh_token, /^[A-Za-z0-9_-]{43}$/);
      assert.equal(t.json.scope, 'monitoring offline_access');
      const api = await fake.request('GET', '/v2/organizations', { headers: { authorization: `Bearer ${t.json.access_token}` } });
      assert.equal(api.status, 200);
      t = await fake.grant(DEFAULT_CLIENT, good);
      assert.equal(t.json.error, 'invalid_grant', 'codes are single-use');
      // 10-minute code expiry
      a = await fake.authorize(DEFAULT_CLIENT, { redirect_uri });
      await fake.advanceClock(601);
      t = await fake.grant(DEFAULT_CLIENT, { grant_type: 'authorization_code', code: a.params.get('code'), redirect_uri });
      assert.equal(t.json.error, 'invalid_grant', 'codes expire after 10 minutes');
      await fake.config({ clock_offset: 0 });
      // no offline_access: no refresh token
      const noOffline = await fake.codeFlowTokens(DEFAULT_CLIENT, { scope: 'monitoring' });
      assert.ok(!('refresh_token' in noOffline));
      // rotation
      const first = await fake.codeFlowTokens();
      let r = await fake.grant(DEFAULT_CLIENT, { grant_type: 'refresh_token', refresh_token: first.refresh_token });
      assert.equal(r.status, 200, r.text);
      assert.notEqual(r.json.refresh_token, first.refresh_token);
      const old = await fake.grant(DEFAULT_CLIENT, { grant_type: 'refresh_token', refresh_token: first.refresh_token });
      assert.equal(old.status, 400);
      assert.equal(old.json.error, 'invalid_grant', 'a used refresh token is rejected');
      const other = await fake.grant(MONITORING_CLIENT, { grant_type: 'refresh_token', refresh_token: r.json.refresh_token });
      assert.equal(other.json.error, 'invalid_grant', "another client cannot use it");
      // a faulted token request consumes nothing
      await fake.fault({ target: 'token', mode: 'status', status: 503, count: 1 });
      const f503 = await fake.grant(DEFAULT_CLIENT, { grant_type: 'refresh_token', refresh_token: r.json.refresh_token });
      assert.equal(f503.status, 503);
      r = await fake.grant(DEFAULT_CLIENT, { grant_type: 'refresh_token', refresh_token: r.json.refresh_token });
      assert.equal(r.status, 200, 'the refresh token survives a faulted request');
      const st = await fake.stats();
      assert.equal(st.refresh_grants_ok, 2);
      // after_grant: the grant is consumed, then the answer is lost
      await fake.fault({ target: 'token', mode: 'status', status: 502, count: 1, after_grant: true });
      const lost = await fake.grant(DEFAULT_CLIENT, { grant_type: 'refresh_token', refresh_token: r.json.refresh_token });
      assert.equal(lost.status, 502);
      const dead = await fake.grant(DEFAULT_CLIENT, { grant_type: 'refresh_token', refresh_token: r.json.refresh_token });
      assert.equal(dead.json.error, 'invalid_grant', 'after_grant consumed the refresh token');
      r = { json: await fake.codeFlowTokens() };
      // revocation
      const rv = await fake.revokeRefresh(DEFAULT_CLIENT.client_id);
      assert.ok(rv.revoked >= 1);
      r = await fake.grant(DEFAULT_CLIENT, { grant_type: 'refresh_token', refresh_token: r.json.refresh_token });
      assert.equal(r.json.error, 'invalid_grant');
      // denial and bad requests
      await fake.setAuthorizeDeny(true);
      a = await fake.authorize(DEFAULT_CLIENT, { redirect_uri, state: 's2' });
      assert.equal(a.status, 302);
      assert.equal(a.params.get('error'), 'access_denied');
      assert.equal(a.params.get('state'), 's2');
      await fake.setAuthorizeDeny(false);
      a = await fake.authorize({ ...DEFAULT_CLIENT, client_id: 'nobody-here' }, { redirect_uri });
      assert.ok(a.location.startsWith('/ws/oauth/error?error=unauthorized_client'), 'unknown client: no redirect');
      a = await fake.authorize(DEFAULT_CLIENT, { redirect_uri, response_type: 'token' });
      assert.equal(a.params.get('error'), 'unsupported_response_type');
      a = await fake.authorize(DEFAULT_CLIENT, { redirect_uri, scope: 'monitoring control' });
      assert.equal(a.params.get('error'), 'invalid_scope');
    });
  } finally {
    await fake.stop();
  }
}
fs.rmSync(tlsDir, { recursive: true, force: true });
console.log('smoke ok');
