// The management API against a real latch process: every route, its errors, cross-environment
// isolation, and encryption at rest (a canary secret never appears in the SQLite files).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startStack, startLatch, api, LATCH_BIN, importBody } from './lib/stack.mjs';
import { holdWriteLock } from './lib/dblock.mjs';
import { request } from './lib/load.mjs';

let s;
before(async () => { s = await startStack(); });
after(async () => { await s?.stop(); });

function rawRequest(baseUrl, text) {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname, () => sock.write(text));
    let got = '';
    sock.on('data', (d) => { got += d; if (got.includes('\r\n\r\n')) { sock.destroy(); resolve(got); } });
    sock.on('error', reject);
    sock.on('close', () => resolve(got));
  });
}

const ISO_Z = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const ISO_OFF = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00$/;


test('health and unknown routes', async () => {
  const h = await api(s.latchUrl, null, 'GET', '/health');
  assert.equal(h.status, 200);
  assert.deepEqual(h.json, { result: 'ok' });
  assert.match(h.headers.get('x-request-id'), /^[0-9a-f]{16}$/);
  assert.equal(h.headers.get('access-control-allow-origin'), '*');
  const n = await api(s.latchUrl, null, 'GET', '/nope');
  assert.equal(n.status, 404);
  assert.equal(n.json.error.code, 'not_found');
  assert.equal(typeof n.json.error.message, 'string');
});

test('request ids are distinct across requests and worker threads', async () => {
  const ids = new Set();
  const all = await Promise.all(Array.from({ length: 300 }, () => api(s.latchUrl, null, 'GET', '/health')));
  for (const r of all) {
    assert.match(r.headers.get('x-request-id'), /^[0-9a-f]{16}$/);
    ids.add(r.headers.get('x-request-id'));
  }
  assert.equal(ids.size, 300);
});

test('authentication errors use Nango codes', async () => {
  let r = await api(s.latchUrl, null, 'GET', '/integrations');
  assert.equal(r.status, 401);
  assert.equal(r.json.error.code, 'missing_auth_header');
  r = await api(s.latchUrl, 'not-a-uuid', 'GET', '/integrations');
  assert.equal(r.status, 401);
  assert.equal(r.json.error.code, 'invalid_secret_key_format');
  r = await api(s.latchUrl, '2b2b1e3c-9d0a-4f2e-8a41-5e6f7a8b9c0d', 'GET', '/integrations');
  assert.equal(r.status, 401);
  assert.equal(r.json.error.code, 'unknown_account');
  r = await api(s.latchUrl, 'nango_connect_session_xyz', 'GET', '/connect/session');
  assert.equal(r.status, 401);
  assert.equal(r.json.error.code, 'invalid_connect_session_token_format');
});

test('request hygiene: bad JSON, content type, unknown fields, oversize, deep JSON', async () => {
  let r = await s.api('POST', '/integrations', '{"provider":', { raw: true, headers: { 'content-type': 'application/json' } });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'invalid_json');
  r = await s.api('POST', '/integrations', 'provider=x', { raw: true, headers: { 'content-type': 'text/plain' } });
  assert.equal(r.status, 415);
  assert.equal(r.json.error.code, 'invalid_content_type');
  r = await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'x1', bogus: 1 });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'invalid_body');
  assert.ok(r.json.error.errors.some((e) => e.code === 'unrecognized_keys'));
  // announce 2 MiB and send none of it: latch must answer 413 from the headers alone
  const head = await rawRequest(s.latchUrl, `POST /integrations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.secretKey}\r\nContent-Type: application/json\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n`);
  assert.match(head, /^HTTP\/1\.1 413 /);
  r = await s.api('POST', '/integrations', '['.repeat(5000) + ']'.repeat(5000), { raw: true, headers: { 'content-type': 'application/json' } });
  assert.equal(r.status, 400);
  r = await s.api('GET', '/integrations?x=1');
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'invalid_query_params');
});

test('providers', async () => {
  const r = await s.api('GET', '/providers/ninjaone-rmm');
  assert.equal(r.status, 200);
  const p = r.json.data;
  assert.equal(p.name, 'ninjaone-rmm');
  assert.equal(p.auth_mode, 'OAUTH2_CC');
  assert.deepEqual(p.connection_config.instance.enum, ['app.ninjarmm.com', 'us2.ninjarmm.com', 'eu.ninjarmm.com', 'ca.ninjarmm.com', 'oc.ninjarmm.com']);
  assert.equal(p.credentials.client_secret.secret, true);
  const list = await s.api('GET', '/providers');
  assert.equal(list.status, 200);
  assert.ok(list.json.data.some((x) => x.name === 'ninjaone-rmm'));
  const nf = await s.api('GET', '/providers/does-not-exist');
  assert.equal(nf.status, 404);
  assert.equal(nf.json.error.code, 'not_found');
});

test('integrations CRUD', async () => {
  let r = await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninja-two', display_name: 'Ninja Two', integration_config: { oauth_scopes: 'monitoring' } });
  assert.equal(r.status, 200);
  assert.equal(r.json.data.unique_key, 'ninja-two');
  assert.equal(r.json.data.display_name, 'Ninja Two');
  assert.match(r.json.data.created_at, ISO_Z);
  r = await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninja-two' });
  assert.equal(r.status, 400);
  assert.deepEqual(r.json.error.errors[0].path, ['uniqueKey']);
  r = await s.api('POST', '/integrations', { provider: 'no-such-provider', unique_key: 'zz' });
  assert.equal(r.status, 400);
  assert.deepEqual(r.json.error.errors[0].path, ['provider']);
  r = await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'cc-creds', credentials: { type: 'OAUTH2', client_id: 'a', client_secret: 'b' } });
  assert.equal(r.status, 400);
  r = await s.api('GET', '/integrations/ninja-two?include=webhook&include=credentials');
  assert.equal(r.status, 200);
  assert.equal(r.json.data.webhook_url, null);
  assert.equal(r.json.data.credentials, null);
  r = await s.api('PATCH', '/integrations/ninja-two', { display_name: 'Renamed', unique_key: 'ninja-three' });
  assert.equal(r.status, 200);
  assert.equal(r.json.data.display_name, 'Renamed');
  r = await s.api('GET', '/integrations');
  assert.ok(r.json.data.some((i) => i.unique_key === 'ninja-three'));
  assert.ok(!r.json.data.some((i) => i.unique_key === 'ninja-two'));
  r = await s.api('DELETE', '/integrations/ninja-three');
  assert.equal(r.status, 200);
  assert.deepEqual(r.json, { success: true });
  r = await s.api('DELETE', '/integrations/ninja-three');
  assert.equal(r.status, 404);
  r = await s.api('GET', '/integrations/ninja-three');
  assert.equal(r.status, 404);
});

test('connections: import, get with credentials, list, filters, patch, metadata, delete', async () => {
  let r = await s.api('POST', '/connections', importBody('c-1', { tags: { Team: 'blue' }, end_user: { id: 'u-1', email: 'u1@example.com' } }));
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.connection_id, 'c-1');
  assert.equal(r.json.credentials.token, 'tok-c-1');
  assert.match(r.json.created_at, ISO_Z);
  assert.deepEqual(r.json.errors, []);
  r = await s.api('POST', '/connections', importBody('c-2'));
  assert.equal(r.status, 201);

  r = await s.api('GET', '/connections/c-1?provider_config_key=ninjaone-rmm&force_refresh=false&refresh_token=false&refresh_github_app_jwt_token=false');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.credentials.type, 'OAUTH2_CC');
  assert.equal(r.json.credentials.client_secret, 'secret-c-1-0123456789');
  assert.equal(r.json.connection_config.instance, 'eu.ninjarmm.com');
  assert.match(r.json.created_at, ISO_OFF);
  assert.equal(r.json.tags.team, 'blue');
  assert.equal(r.json.tags.end_user_id, 'u-1');
  assert.equal(r.json.end_user.id, 'u-1');

  r = await s.api('GET', '/connections/c-1');
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'invalid_query_params');
  r = await s.api('GET', '/connections/c-1?provider_config_key=nope');
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'unknown_provider_config');
  r = await s.api('GET', '/connections/nope?provider_config_key=ninjaone-rmm');
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, 'not_found');

  r = await s.api('GET', '/connections');
  assert.equal(r.status, 200);
  const ids = r.json.connections.map((c) => c.connection_id);
  assert.ok(ids.includes('c-1') && ids.includes('c-2'));
  assert.equal(ids.indexOf('c-2') < ids.indexOf('c-1'), true, 'newest first');
  assert.ok(!('credentials' in r.json.connections[0]));
  assert.match(r.json.connections[0].created, ISO_OFF);
  r = await s.api('GET', '/connections?tags[team]=blue');
  assert.deepEqual(r.json.connections.map((c) => c.connection_id), ['c-1']);
  r = await s.api('GET', '/connections?endUserId=u-1');
  assert.deepEqual(r.json.connections.map((c) => c.connection_id), ['c-1']);
  r = await s.api('GET', '/connections?connectionId=c-2');
  assert.deepEqual(r.json.connections.map((c) => c.connection_id), ['c-2']);
  r = await s.api('GET', '/connections?limit=1&page=1');
  assert.equal(r.json.connections.length, 1);
  r = await s.api('GET', '/connections?bogus=1');
  assert.equal(r.status, 400);

  r = await s.api('PATCH', '/connections/c-2?provider_config_key=ninjaone-rmm', { tags: { env: 'prod' } });
  assert.equal(r.status, 200, r.text);
  r = await s.api('GET', '/connections?tags[env]=prod');
  assert.deepEqual(r.json.connections.map((c) => c.connection_id), ['c-2']);
  r = await s.api('PATCH', '/connections/c-2?provider_config_key=ninjaone-rmm', { connection_config: { instance: 'app.ninjarmm.com' } });
  assert.equal(r.status, 400, 'connection_config is not patchable');

  r = await s.api('POST', '/connections/metadata', { connection_id: 'c-1', provider_config_key: 'ninjaone-rmm', metadata: { a: 1, b: 2 } });
  assert.equal(r.status, 201);
  r = await s.api('PATCH', '/connections/metadata', { connection_id: ['c-1'], provider_config_key: 'ninjaone-rmm', metadata: { b: 3, c: 4 } });
  assert.equal(r.status, 200);
  r = await s.api('GET', '/connections/c-1?provider_config_key=ninjaone-rmm');
  assert.deepEqual(r.json.metadata, { a: 1, b: 3, c: 4 });
  r = await s.api('POST', '/connections/metadata', { connection_id: 'nope', provider_config_key: 'ninjaone-rmm', metadata: {} });
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, 'unknown_connection');

  r = await s.api('DELETE', '/connections/c-2?provider_config_key=ninjaone-rmm');
  assert.equal(r.status, 200);
  r = await s.api('GET', '/connections/c-2?provider_config_key=ninjaone-rmm');
  assert.equal(r.status, 404);
  // deprecated singular alias
  r = await s.api('GET', '/connection/c-1?provider_config_key=ninjaone-rmm');
  assert.equal(r.status, 200);
});

test('import validates the instance against the provider definition', async () => {
  for (const instance of ['evil.example.com', 'eu.ninjarmm.com.evil.com', 'EU.ninjarmm.com', '127.0.0.1', 'eu.ninjarmm.com.']) {
    const r = await s.api('POST', '/connections', importBody('bad', { connection_config: { instance } }));
    assert.equal(r.status, 400, instance);
    assert.deepEqual(r.json.error.errors[0].path, ['connection_config', 'instance']);
  }
  const r = await s.api('POST', '/connections', { provider_config_key: 'ninjaone-rmm', credentials: { type: 'OAUTH2_CC' } });
  assert.equal(r.status, 400);
  const paths = r.json.error.errors.map((e) => e.path.join('.'));
  for (const p of ['credentials.token', 'credentials.client_id', 'credentials.client_secret']) assert.ok(paths.includes(p), p);
});

test('writes waiting on the database lock never stall reads: token reads are answered meanwhile, every write lands after', async () => {
  const ninja = (await s.link((await s.createSession({ end_user: { id: 'lock-user' } })).token));
  assert.equal(ninja.status, 200, ninja.text);
  let r = await s.api('POST', '/connections', importBody('lock-reader'));
  assert.equal(r.status, 201, r.text);
  const tokenRequests = (await s.fake.stats()).token_requests;
  const auth = { authorization: `Bearer ${s.secretKey}` };
  // a request that fails is reported by the assertions below, not as an unhandled rejection
  const failed = (e) => ({ status: 0, at: Date.now(), body: Buffer.from(String(e)), json: null });
  const lock = await holdWriteLock(s);
  let released = 0;
  let writes;
  let refreshes;
  try {
    // writes that wait on the lock: new connections, and a forced refresh (its lease is a write),
    // each on its own keep-alive connection, so that every HTTP thread holds some of them
    writes = Array.from({ length: 8 }, (_, i) => request(`${s.latchUrl}/connections`, {
      method: 'POST', body: JSON.stringify(importBody(`lock-w-${i}`)),
      headers: { ...auth, 'content-type': 'application/json' },
    }).then((x) => ({ ...x, at: Date.now() }), failed));
    refreshes = Array.from({ length: 4 }, () => request(
      `${s.latchUrl}/connections/${ninja.json.connectionId}?provider_config_key=ninjaone-rmm&force_refresh=true`,
      { headers: auth }).then((x) => ({ ...x, at: Date.now() }), failed));
    await new Promise((res) => setTimeout(res, 300));
    // reads of a token that needs no refresh, on new connections: answered while the lock is held
    const reads = await Promise.race([
      Promise.all(Array.from({ length: 40 }, () => request(
        `${s.latchUrl}/connections/lock-reader?provider_config_key=ninjaone-rmm`, { headers: auth }))),
      new Promise((res) => setTimeout(() => res(null), 3000)),
    ]);
    assert.ok(reads !== null, 'token reads were not answered while writes waited on the database lock');
    for (const x of reads) {
      assert.equal(x.status, 200, x.body.toString());
      assert.equal(x.json.credentials.token, 'tok-lock-reader');
    }
  } finally {
    const t = Date.now();
    await lock.release();
    released = t;
  }
  // nothing waiting on the lock was refused or lost: every write lands once the lock is gone
  const w = await Promise.all(writes);
  for (const x of w) {
    assert.equal(x.status, 201, x.body.toString());
    assert.ok(x.at >= released, 'a write was answered before the lock was released');
  }
  const f = await Promise.all(refreshes);
  const tokens = new Set(f.map((x) => { assert.equal(x.status, 200, x.body.toString()); return x.json.credentials.token; }));
  assert.equal(tokens.size, 1, 'the forced refreshes shared one flight');
  assert.equal((await s.fake.stats()).token_requests - tokenRequests, 1);
  for (let i = 0; i < 8; i++) {
    r = await s.api('GET', `/connections/lock-w-${i}?provider_config_key=ninjaone-rmm&refresh_token=false`);
    assert.equal(r.status, 200, r.text);
  }
});

test('one environment can never read or change another environment\'s data', async () => {
  const out = execFileSync(LATCH_BIN, ['env', 'create', 'prod'], { cwd: s.dir, env: s.cliEnv() }).toString();
  const prodKey = out.match(/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/)[0];
  const p = (m, u, b) => api(s.latchUrl, prodKey, m, u, b);
  let r = await p('GET', '/integrations');
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.data, []);
  r = await p('GET', '/connections');
  assert.deepEqual(r.json.connections, []);
  r = await p('GET', '/connections/c-1?provider_config_key=ninjaone-rmm');
  assert.equal(r.status, 400, 'the dev integration does not exist in prod');
  r = await p('DELETE', '/integrations/ninjaone-rmm');
  assert.equal(r.status, 404);
  r = await p('POST', '/connections/metadata', { connection_id: 'c-1', provider_config_key: 'ninjaone-rmm', metadata: { x: 1 } });
  assert.equal(r.status, 404);
  // same unique key in both environments is fine and separate
  r = await p('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninjaone-rmm' });
  assert.equal(r.status, 200);
  r = await p('GET', '/connections/c-1?provider_config_key=ninjaone-rmm');
  assert.equal(r.status, 404);
  r = await s.api('GET', '/connections/c-1?provider_config_key=ninjaone-rmm');
  assert.equal(r.status, 200, 'dev still sees its own');
});

// ---- credentials bound to their owner (issue 15 item 5) ----
// Envelopes are opened here with the key file, as latch would: "v2.<kid>.<iv>.<tag>.<ct>", AAD
// "latch:v2:<kid>:" + the owner binding of src/domain/creds.h (or the legacy "connections:<uid>:credentials").
function vaultKeys() {
  return fs.readFileSync(path.join(s.dir, 'latch.key'), 'utf8').split('\n').filter((l) => l.trim()).map((l) => {
    const key = Buffer.from(l.trim(), 'base64');
    return { key, kid: crypto.createHmac('sha256', key).update('latch key id v1').digest('hex').slice(0, 8) };
  });
}
function ownerAad(row) {
  return `connections:${row.uid}:credentials:v2:${row.env_id}:${Buffer.byteLength(row.provider_config_key)}:${row.provider_config_key}:${Buffer.byteLength(row.connection_id)}:${row.connection_id}`;
}
function legacyAad(row) { return `connections:${row.uid}:credentials`; }
function envOpen(envelope, aad) {
  const [v, kid, iv, tag, ct] = envelope.split('.');
  assert.equal(v, 'v2');
  const k = vaultKeys().find((x) => x.kid === kid);
  if (!k) return null;
  const d = crypto.createDecipheriv('aes-256-gcm', k.key, Buffer.from(iv, 'base64'));
  d.setAAD(Buffer.from(`latch:v2:${kid}:${aad}`));
  d.setAuthTag(Buffer.from(tag, 'base64'));
  try { return JSON.parse(Buffer.concat([d.update(Buffer.from(ct, 'base64')), d.final()]).toString()); } catch { return null; }
}
function envSeal(obj, aad) {
  const k = vaultKeys().at(-1);
  const iv = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', k.key, iv);
  c.setAAD(Buffer.from(`latch:v2:${k.kid}:${aad}`));
  const ct = Buffer.concat([c.update(JSON.stringify(obj)), c.final()]);
  return ['v2', k.kid, iv.toString('base64'), c.getAuthTag().toString('base64'), ct.toString('base64')].join('.');
}
function sql(q) {
  return execFileSync('sqlite3', ['-cmd', '.timeout 5000', '-json', path.join(s.dir, 'latch.db'), q]).toString();
}
const q = (x) => `'${String(x).replace(/'/g, "''")}'`;
function connRow(cid) {
  return JSON.parse(sql(`SELECT id, uid, env_id, provider_config_key, connection_id, credentials_sealed FROM connections WHERE connection_id = ${q(cid)}`) || '[]')[0];
}

test('sealed credentials moved to another environment, integration or connection id do not decrypt there', async (t) => {
  if (s.pg) return t.skip('edits the SQLite file');
  const out = execFileSync(LATCH_BIN, ['env', 'create', 'aad-other'], { cwd: s.dir, env: s.cliEnv() }).toString();
  const otherKey = out.match(/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/)[0];
  const other = (m, u, b) => api(s.latchUrl, otherKey, m, u, b);
  assert.equal((await other('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninjaone-rmm' })).status, 200);
  assert.equal((await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'aad-second' })).status, 200);
  const otherEnv = JSON.parse(sql("SELECT id FROM environments WHERE name = 'aad-other'"))[0].id;
  for (const id of ['aad-env', 'aad-pck', 'aad-cid']) {
    const r = await s.api('POST', '/connections', importBody(id));
    assert.equal(r.status, 201, r.text);
    assert.equal((await s.api('GET', `/connections/${id}?provider_config_key=ninjaone-rmm`)).status, 200);
  }
  const devEnv = connRow('aad-env').env_id;
  // an attacker with write access to the database file, but not the key, moves rows
  sql(`UPDATE connections SET env_id = ${otherEnv} WHERE connection_id = 'aad-env'`);
  sql("UPDATE connections SET provider_config_key = 'aad-second' WHERE connection_id = 'aad-pck'");
  sql("UPDATE connections SET connection_id = 'aad-cid-moved' WHERE connection_id = 'aad-cid'");
  const moved = [
    await other('GET', '/connections/aad-env?provider_config_key=ninjaone-rmm'),
    await s.api('GET', '/connections/aad-pck?provider_config_key=aad-second'),
    await s.api('GET', '/connections/aad-cid-moved?provider_config_key=ninjaone-rmm'),
  ];
  for (const r of moved) {
    // the row is found, its envelope does not authenticate for its new owner: tampered data,
    // answered as the server-side integrity failure it is (never the secret, never a crash)
    assert.equal(r.status, 500, r.text);
    assert.equal(r.json.error.code, 'credentials_unreadable');
    assert.equal(r.text.includes('secret-aad-'), false);
  }
  assert.equal((await s.api('GET', '/health')).status, 200);
  assert.match(s.logs(), /credentials do not decrypt/);
  // moved back, each reads again: the envelope was refused for its owner, not damaged
  sql(`UPDATE connections SET env_id = ${devEnv} WHERE connection_id = 'aad-env'`);
  sql("UPDATE connections SET provider_config_key = 'ninjaone-rmm' WHERE connection_id = 'aad-pck'");
  sql("UPDATE connections SET connection_id = 'aad-cid' WHERE connection_id = 'aad-cid-moved'");
  for (const id of ['aad-env', 'aad-pck', 'aad-cid']) {
    const r = await s.api('GET', `/connections/${id}?provider_config_key=ninjaone-rmm`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.credentials.client_secret, `secret-${id}-0123456789`);
  }
});

test('legacy envelopes (AAD without the owner) still read and are re-sealed under the owner binding', async (t) => {
  if (s.pg) return t.skip('edits the SQLite file');
  assert.equal((await s.api('POST', '/connections', importBody('aad-legacy'))).status, 201);
  let row = connRow('aad-legacy');
  assert.ok(envOpen(row.credentials_sealed, ownerAad(row)), 'new rows carry the owner binding');
  assert.equal(envOpen(row.credentials_sealed, legacyAad(row)), null);
  const creds = envOpen(row.credentials_sealed, ownerAad(row));
  // write what a previous release wrote
  const old = envSeal(creds, legacyAad(row));
  sql(`UPDATE connections SET credentials_sealed = ${q(old)} WHERE id = ${row.id}`);
  const r = await s.api('GET', '/connections/aad-legacy?provider_config_key=ninjaone-rmm');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.credentials.client_secret, 'secret-aad-legacy-0123456789');
  row = connRow('aad-legacy');
  assert.notEqual(row.credentials_sealed, old, 'the read re-sealed the row');
  assert.deepEqual(envOpen(row.credentials_sealed, ownerAad(row)), creds);
  assert.equal(envOpen(row.credentials_sealed, legacyAad(row)), null);
  // another legacy row is left for `latch keys rotate` (the rotation test below checks every row)
  assert.equal((await s.api('POST', '/connections', importBody('aad-legacy-2'))).status, 201);
  row = connRow('aad-legacy-2');
  sql(`UPDATE connections SET credentials_sealed = ${q(envSeal(envOpen(row.credentials_sealed, ownerAad(row)), legacyAad(row)))} WHERE id = ${row.id}`);
});

test('renaming an integration re-seals its connections for the new key in the same write', async (t) => {
  assert.equal((await s.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'aad-rename' })).status, 200);
  for (const id of ['aad-r1', 'aad-r2'])
    assert.equal((await s.api('POST', '/connections', importBody(id, { provider_config_key: 'aad-rename' }))).status, 201);
  if (!s.pg) {
    // one of them still legacy: the rename carries it over too
    const row = connRow('aad-r2');
    sql(`UPDATE connections SET credentials_sealed = ${q(envSeal(envOpen(row.credentials_sealed, ownerAad(row)), legacyAad(row)))} WHERE id = ${row.id}`);
  }
  let r = await s.api('PATCH', '/integrations/aad-rename', { unique_key: 'aad-renamed' });
  assert.equal(r.status, 200, r.text);
  for (const id of ['aad-r1', 'aad-r2']) {
    r = await s.api('GET', `/connections/${id}?provider_config_key=aad-renamed`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.credentials.client_secret, `secret-${id}-0123456789`);
    if (!s.pg) {
      const row = connRow(id);
      assert.equal(row.provider_config_key, 'aad-renamed');
      assert.ok(envOpen(row.credentials_sealed, ownerAad(row)));
    }
  }
});

test('secrets are encrypted at rest: a canary never appears in the database files', async () => {
  const canary = 'CANARYsecret' + Math.random().toString(36).slice(2) + 'XYZ';
  const token = 'CANARYtoken' + Math.random().toString(36).slice(2);
  const r = await s.api('POST', '/connections', importBody('canary', { credentials: { type: 'OAUTH2_CC', token, client_id: 'KTmhkNf1_dZZVPmIQTK_lH2DCNJ', client_secret: canary } }));
  assert.equal(r.status, 201);
  const back = await s.api('GET', '/connections/canary?provider_config_key=ninjaone-rmm');
  assert.equal(back.json.credentials.client_secret, canary, 'decrypts correctly');
  if (s.pg) await s.pg.query('CHECKPOINT'); // flush to the data files, not only the WAL
  const files = s.dbFiles();
  assert.ok(files.length > 0);
  let plaintextProbe = false;
  for (const f of files) {
    const bytes = fs.readFileSync(f);
    assert.equal(bytes.includes(canary), false, `secret in ${f}`);
    assert.equal(bytes.includes(token), false, `token in ${f}`);
    if (bytes.includes('KTmhkNf1_dZZVPmIQTK_lH2DCNJ') || bytes.includes('"canary"') || bytes.includes('canary')) plaintextProbe = true;
  }
  assert.ok(plaintextProbe, 'the probe can see plaintext columns (the grep is looking at the right files)');
  const log = s.logs();
  assert.equal(log.includes(canary), false, 'secret in logs');
  assert.equal(log.includes(token), false, 'token in logs');
  const mode = fs.statSync(path.join(s.dir, 'latch.key')).mode & 0o777;
  assert.equal(mode, 0o600);
});

test('latch refuses to start with a key that does not match the store', async () => {
  const env = s.cliEnv({ LATCH_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'), LATCH_KEY_FILE: path.join(s.dir, 'nope.key') });
  let failed = false;
  try {
    execFileSync(LATCH_BIN, ['migrate'], { cwd: s.dir, env, stdio: 'pipe' });
  } catch (e) {
    failed = true;
    assert.match(e.stderr.toString(), /does not match/);
  }
  assert.ok(failed);
});

test('key rotation re-encrypts every secret while the server keeps serving', async () => {
  const env = s.cliEnv();
  const before = fs.readFileSync(path.join(s.dir, 'latch.key'), 'utf8');
  const out = execFileSync(LATCH_BIN, ['keys', 'rotate'], { cwd: s.dir, env }).toString();
  assert.match(out, /re-encrypted/);
  const after = fs.readFileSync(path.join(s.dir, 'latch.key'), 'utf8');
  assert.notEqual(before, after);
  const r = await s.api('GET', '/connections/canary?provider_config_key=ninjaone-rmm');
  assert.equal(r.status, 200, 'running server reads rows sealed under the new key');
  assert.match(r.json.credentials.client_secret, /^CANARYsecret/);
  const created = await s.api('POST', '/connections', importBody('after-rotate'));
  assert.equal(created.status, 201);
  if (!s.pg) {
    // every connection row is now under the new key and its owner binding: no legacy AAD is left
    const rows = JSON.parse(sql('SELECT id, uid, env_id, provider_config_key, connection_id, credentials_sealed FROM connections WHERE credentials_sealed IS NOT NULL'));
    assert.ok(rows.some((x) => x.connection_id === 'aad-legacy-2'));
    for (const row of rows) {
      assert.ok(envOpen(row.credentials_sealed, ownerAad(row)), `row ${row.connection_id} under the owner binding`);
      assert.equal(envOpen(row.credentials_sealed, legacyAad(row)), null);
    }
  }
});

test('latch export / import move a whole installation (ciphertexts stay valid)', async () => {
  const env = s.cliEnv();
  const dump = path.join(s.dir, 'dump.jsonl');
  execFileSync(LATCH_BIN, ['export', dump], { cwd: s.dir, env, stdio: 'pipe' });
  const text = fs.readFileSync(dump, 'utf8');
  assert.match(text.split('\n')[0], /"latch_export":1/);
  assert.ok(!text.includes('CANARYsecret'), 'no plaintext secret in the dump');
  const target = path.join(s.dir, 'copy.db');
  execFileSync(LATCH_BIN, ['import', dump], { cwd: s.dir, env: { ...env, LATCH_DATABASE_URL: target }, stdio: 'pipe' });
  const b = await startLatch({ dir: s.dir, env: { ...s.env, LATCH_DATABASE_URL: target } });
  try {
    const r = await api(b.url, s.secretKey, 'GET', '/connections/canary?provider_config_key=ninjaone-rmm');
    assert.equal(r.status, 200, r.text);
    assert.match(r.json.credentials.client_secret, /^CANARYsecret/);
  } finally {
    await b.stop();
  }
  let refused = false;
  try { execFileSync(LATCH_BIN, ['import', dump], { cwd: s.dir, env: { ...env, LATCH_DATABASE_URL: target }, stdio: 'pipe' }); } catch { refused = true; }
  assert.ok(refused, 'import refuses a non-empty database');
});
