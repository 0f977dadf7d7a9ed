// The hot cache of reads (issue 16): a cached token read answers what the store holds. Every
// write on the node (metadata, tag patch, import replacing credentials, forced refresh, delete,
// integration rename) is visible on the very next read; /metrics counts hits, misses and
// invalidations. On PostgreSQL (`it.cache.pg`) a second `latch serve` on the same database sees
// node A's writes on its next read too (each hit is checked against the row's stamp).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startStack, startLatch, tmpDir, api, importBody, freePort, BACKEND } from './lib/stack.mjs';
import { request } from './lib/load.mjs';

let s;
let b; // node B (PostgreSQL only)
let metricsUrl;
const key = crypto.randomBytes(32).toString('base64');

const getPath = (id, pck = 'ninjaone-rmm') => `/connections/${encodeURIComponent(id)}?provider_config_key=${pck}`;

async function metric(name) {
  const text = await (await fetch(metricsUrl)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

before(async () => {
  const port = await freePort();
  metricsUrl = `http://127.0.0.1:${port}/metrics`;
  s = await startStack({ env: { LATCH_METRICS_BIND: `127.0.0.1:${port}`, LATCH_ENCRYPTION_KEY: key, LATCH_BACKGROUND_REFRESH: 'false' } });
  if (BACKEND === 'postgres') {
    const env = { ...s.env };
    delete env.LATCH_METRICS_BIND;
    b = await startLatch({ dir: tmpDir('latch-cache-b-'), env });
  }
});

after(async () => {
  await b?.stop();
  await s?.stop();
});

test('repeated reads are answered from the cache, and /metrics says so', async () => {
  let r = await s.api('POST', '/connections', importBody('hot-1'));
  assert.equal(r.status, 201, r.text);
  const h0 = await metric('latch_cache_hits_total');
  for (let i = 0; i < 5; i++) {
    r = await s.api('GET', getPath('hot-1'));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.credentials.token, 'tok-hot-1');
  }
  assert.ok(await metric('latch_cache_hits_total') >= h0 + 4, 'four of five reads were hits');
  assert.ok(await metric('latch_cache_entries') >= 1);
  assert.ok(await metric('latch_cache_misses_total') >= 1);
});

test('every write on this node is visible on the next read', async () => {
  let r = await s.api('POST', '/connections', importBody('hot-2', { tags: { team: 'red' } }));
  assert.equal(r.status, 201, r.text);
  r = await s.api('GET', getPath('hot-2'));
  assert.equal(r.json.credentials.token, 'tok-hot-2');
  const inv0 = await metric('latch_cache_invalidations_total');

  // metadata, twice within one millisecond or so
  r = await s.api('POST', '/connection/metadata', { connection_id: 'hot-2', provider_config_key: 'ninjaone-rmm', metadata: { n: 1 } });
  assert.ok(r.status < 300, r.text);
  r = await s.api('GET', getPath('hot-2'));
  assert.deepEqual(r.json.metadata, { n: 1 });
  r = await s.api('PATCH', '/connections/metadata', { connection_id: 'hot-2', provider_config_key: 'ninjaone-rmm', metadata: { m: 2 } });
  assert.ok(r.status < 300, r.text);
  r = await s.api('GET', getPath('hot-2'));
  assert.deepEqual(r.json.metadata, { n: 1, m: 2 });

  // tags
  r = await s.api('PATCH', getPath('hot-2'), { tags: { team: 'blue' } });
  assert.ok(r.status < 300, r.text);
  r = await s.api('GET', getPath('hot-2'));
  assert.equal(r.json.tags.team, 'blue');

  // an import replacing the credentials
  r = await s.api('POST', '/connections', importBody('hot-2', { credentials: { ...importBody('hot-2').credentials, token: 'tok-hot-2-new' } }));
  assert.ok(r.status < 300, r.text);
  r = await s.api('GET', getPath('hot-2'));
  assert.equal(r.json.credentials.token, 'tok-hot-2-new');

  // a failed refresh (the fake rejects these client credentials) marks the connection as
  // needing re-authorisation: the next plain read says so instead of serving the cached token
  r = await s.api('GET', `${getPath('hot-2')}&force_refresh=true`);
  assert.equal(r.status, 424, r.text);
  r = await s.api('GET', getPath('hot-2'));
  assert.equal(r.status, 424, r.text);

  // a successful refresh (forced) writes a new token: the next plain read returns it
  r = await s.api('POST', '/connections', importBody('hot-2', { credentials: { ...importBody('hot-2').credentials, token: 'tok-hot-2-new', client_id: s.client.client_id, client_secret: s.client.client_secret } }));
  assert.ok(r.status < 300, r.text);
  assert.equal((await s.api('GET', getPath('hot-2'))).json.credentials.token, 'tok-hot-2-new');
  r = await s.api('GET', `${getPath('hot-2')}&force_refresh=true`);
  assert.equal(r.status, 200, r.text);
  const refreshed = r.json.credentials.token;
  assert.notEqual(refreshed, 'tok-hot-2-new');
  r = await s.api('GET', getPath('hot-2'));
  assert.equal(r.json.credentials.token, refreshed);
  r = await s.api('GET', getPath('hot-2'));
  assert.equal(r.json.credentials.token, refreshed);

  // renaming the integration: the old key no longer answers
  r = await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninja-ren' });
  assert.equal(r.status, 200, r.text);
  r = await s.api('POST', '/connections', { ...importBody('hot-3'), provider_config_key: 'ninja-ren' });
  assert.equal(r.status, 201, r.text);
  assert.equal((await s.api('GET', getPath('hot-3', 'ninja-ren'))).status, 200);
  r = await s.api('PATCH', '/integrations/ninja-ren', { unique_key: 'ninja-ren2' });
  assert.ok(r.status < 300, r.text);
  r = await s.api('GET', getPath('hot-3', 'ninja-ren'));
  assert.notEqual(r.status, 200, r.text);
  r = await s.api('GET', getPath('hot-3', 'ninja-ren2'));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.credentials.token, 'tok-hot-3');

  // a delete (read twice first: the entry is fresh in the cache)
  assert.equal((await s.api('GET', getPath('hot-2'))).status, 200);
  assert.equal((await s.api('GET', getPath('hot-2'))).status, 200);
  r = await s.api('DELETE', getPath('hot-2'));
  assert.ok(r.status < 300, r.text);
  r = await s.api('GET', getPath('hot-2'));
  assert.equal(r.status, 404, r.text);

  assert.ok(await metric('latch_cache_invalidations_total') > inv0, 'the stale entries were dropped');
});

test('prepared answers: one per query shape, the same bytes as a built answer, every write seen on the next read', async () => {
  // an OAUTH2 connection (refresh token, an own app secret that is answered masked)
  let r = await s.api('POST', '/integrations', { provider: 'ninjaone-rmm-oauth2', unique_key: 'hot-oauth2', credentials: { type: 'OAUTH2', client_id: s.client.client_id, client_secret: s.client.client_secret, scopes: 'monitoring,offline_access' } });
  assert.equal(r.status, 200, r.text);
  const creds = (at, rt) => ({ type: 'OAUTH2', access_token: at, refresh_token: rt, expires_at: new Date(Date.now() + 3600e3).toISOString(), config_override: { client_id: 'own-client', client_secret: 'own-secret-0123456789abcd' } });
  const body = (at, rt) => ({ provider_config_key: 'hot-oauth2', connection_id: 'hot-p', connection_config: { instance: 'eu.ninjarmm.com' }, metadata: { v: 0 }, credentials: creds(at, rt) });
  r = await s.api('POST', '/connections', body('at-1', 'rt-1'));
  assert.equal(r.status, 201, r.text);
  const p0 = await metric('latch_cache_prepared_hits_total');
  const plain = getPath('hot-p', 'hot-oauth2');
  const withRt = `${plain}&refresh_token=true`;
  const texts = [];
  for (let i = 0; i < 3; i++) { // built (miss), then prepared
    r = await s.api('GET', plain);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.credentials.access_token, 'at-1');
    assert.equal(r.json.credentials.refresh_token, undefined, 'no refresh token unless asked');
    assert.equal(r.json.credentials.config_override.client_secret, '********abcd', 'the own app secret masked');
    texts.push(r.text);
  }
  assert.equal(texts[1], texts[0], 'the prepared answer is byte for byte the built one');
  assert.equal(texts[2], texts[0]);
  for (let i = 0; i < 3; i++) {
    r = await s.api('GET', withRt);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.credentials.refresh_token, 'rt-1', 'refresh_token=true has its own answer');
    assert.equal(r.json.credentials.config_override.client_secret, '********abcd');
  }
  r = await s.api('GET', plain);
  assert.equal(r.json.credentials.refresh_token, undefined, 'and the plain one stays plain');
  assert.ok(await metric('latch_cache_prepared_hits_total') >= p0 + 4, 'hits were answered with the prepared answer');

  const both = async (check) => {
    for (const p of [plain, withRt, plain, withRt]) {
      const x = await s.api('GET', p);
      assert.equal(x.status, 200, x.text);
      check(x.json, p);
    }
  };
  // metadata
  r = await s.api('POST', '/connection/metadata', { connection_id: 'hot-p', provider_config_key: 'hot-oauth2', metadata: { v: 1 } });
  assert.ok(r.status < 300, r.text);
  await both((j, p) => assert.deepEqual(j.metadata, { v: 1 }, `metadata after a write (${p})`));
  r = await s.api('PATCH', '/connections/metadata', { connection_id: 'hot-p', provider_config_key: 'hot-oauth2', metadata: { w: 2 } });
  assert.ok(r.status < 300, r.text);
  await both((j, p) => assert.deepEqual(j.metadata, { v: 1, w: 2 }, `metadata after a patch (${p})`));
  // tags
  r = await s.api('PATCH', plain, { tags: { team: 'green' } });
  assert.ok(r.status < 300, r.text);
  await both((j, p) => assert.equal(j.tags.team, 'green', `tags after a patch (${p})`));
  // credentials
  r = await s.api('POST', '/connections', body('at-2', 'rt-2'));
  assert.ok(r.status < 300, r.text);
  await both((j, p) => {
    assert.equal(j.credentials.access_token, 'at-2', `credentials after an import (${p})`);
    assert.equal(j.credentials.refresh_token, p === withRt ? 'rt-2' : undefined);
  });
  // force_refresh never answers from the prepared answer (the fake refuses this refresh token)
  r = await s.api('GET', `${plain}&force_refresh=true`);
  assert.notEqual(r.status, 200, r.text);
  r = await s.api('GET', withRt);
  assert.ok(r.status !== 200 || r.json.credentials.refresh_token !== 'rt-2', 'the refresh is seen, not the prepared answer');
});

test('the proxy fetches its credentials through the cache, and a delete stops it at once', async () => {
  const d = await s.createSession({ end_user: { id: 'cache-proxy' } });
  const l = await s.link(d.token);
  assert.equal(l.status, 200, l.text);
  const conn = l.json.connectionId;
  const px = () => request(`${s.latchUrl}/proxy/v2/organizations`, { headers: { authorization: `Bearer ${s.secretKey}`, 'connection-id': conn, 'provider-config-key': 'ninjaone-rmm' } });
  assert.equal((await px()).status, 200);
  const h0 = await metric('latch_cache_hits_total');
  const r1 = await px();
  assert.equal(r1.status, 200, r1.body.toString());
  assert.ok(await metric('latch_cache_hits_total') > h0, 'the second proxied call was a hit');
  const del = await s.api('DELETE', getPath(conn));
  assert.ok(del.status < 300, del.text);
  const r2 = await px();
  assert.ok(r2.status >= 400 && r2.status < 500, `a deleted connection is not proxied: ${r2.status}`);
});

test('two nodes on one PostgreSQL database: node B sees node A\'s writes on its next read', { skip: BACKEND !== 'postgres' }, async () => {
  const apiB = (method, p, body) => api(b.url, s.secretKey, method, p, body);
  let r = await s.api('POST', '/connections', importBody('x-1'));
  assert.equal(r.status, 201, r.text);
  for (let i = 0; i < 3; i++) { // B caches it
    r = await apiB('GET', getPath('x-1'));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.credentials.token, 'tok-x-1');
  }
  r = await s.api('POST', '/connections', importBody('x-1', { credentials: { ...importBody('x-1').credentials, token: 'tok-x-1-new' } }));
  assert.ok(r.status < 300, r.text);
  r = await apiB('GET', getPath('x-1'));
  assert.equal(r.json.credentials.token, 'tok-x-1-new', 'credentials written on A');
  r = await s.api('POST', '/connection/metadata', { connection_id: 'x-1', provider_config_key: 'ninjaone-rmm', metadata: { via: 'A' } });
  assert.ok(r.status < 300, r.text);
  r = await apiB('GET', getPath('x-1'));
  assert.deepEqual(r.json.metadata, { via: 'A' }, 'metadata written on A');
  r = await s.api('POST', '/connection/metadata', { connection_id: 'x-1', provider_config_key: 'ninjaone-rmm', metadata: { via: 'A2' } });
  assert.ok(r.status < 300, r.text);
  r = await apiB('GET', getPath('x-1'));
  assert.deepEqual(r.json.metadata, { via: 'A2' }, 'a second metadata write right after');
  r = await s.api('GET', `${getPath('x-1')}&force_refresh=true`);
  assert.equal(r.status, 424, r.text);
  r = await apiB('GET', getPath('x-1'));
  assert.equal(r.status, 424, 'a failed refresh on A');
  r = await s.api('POST', '/connections', importBody('x-1', { credentials: { ...importBody('x-1').credentials, client_id: s.client.client_id, client_secret: s.client.client_secret } }));
  assert.ok(r.status < 300, r.text);
  assert.equal((await apiB('GET', getPath('x-1'))).status, 200);
  r = await s.api('GET', `${getPath('x-1')}&force_refresh=true`);
  assert.equal(r.status, 200, r.text);
  const refreshed = r.json.credentials.token;
  r = await apiB('GET', getPath('x-1'));
  assert.equal(r.json.credentials.token, refreshed, 'a refresh on A');
  r = await s.api('DELETE', getPath('x-1'));
  assert.ok(r.status < 300, r.text);
  r = await apiB('GET', getPath('x-1'));
  assert.equal(r.status, 404, 'a delete on A');
});
