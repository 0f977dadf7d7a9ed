// API_KEY and BASIC end to end against a small TLS upstream (the test CA, LATCH_RESOLVE):
// the frontend SDK's link routes with verification (accepted, rejected in words, not defined),
// the provider's own templates on proxied requests, hostile connection values refused before
// any socket, and import + read back in Nango's credential shapes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { startStack, api } from './lib/stack.mjs';

const HOSTS = ['api.itglue.com', 'acme.zendesk.com'];
let s;
let up;
const seen = [];

function makeCert(tlsDir, dir) {
  const ext = path.join(dir, 'up.ext');
  fs.writeFileSync(ext, `basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=${HOSTS.map((h) => `DNS:${h}`).join(',')}\n`);
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', path.join(dir, 'up.key'), '-out', path.join(dir, 'up.csr'), '-subj', '/CN=upstream'], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-req', '-in', path.join(dir, 'up.csr'), '-CA', path.join(tlsDir, 'ca.pem'),
    '-CAkey', path.join(tlsDir, 'ca.key'), '-set_serial', '0x' + Date.now().toString(16), '-days', '2',
    '-extfile', ext, '-out', path.join(dir, 'up.pem')], { stdio: 'ignore' });
  return { key: fs.readFileSync(path.join(dir, 'up.key')), cert: fs.readFileSync(path.join(dir, 'up.pem')) };
}

before(async () => {
  s = await startStack();
  const bind = `127.${randomInt(1, 250)}.${randomInt(1, 250)}.${randomInt(2, 250)}`;
  const tls = makeCert(path.join(path.dirname(s.env.LATCH_CA_FILE)), s.dir);
  up = https.createServer(tls, (req, res) => {
    seen.push({ host: req.headers.host, url: req.url, headers: req.headers });
    const key = req.headers['x-api-key'];
    if (req.headers.host === 'api.itglue.com' && key !== 'ITG.good-key') {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"errors":[{"title":"Unauthorized"}]}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok: true, path: req.url }));
  });
  await new Promise((r) => up.listen(443, bind, r));
  await s.restartLatch('SIGTERM', { LATCH_RESOLVE: `${s.env.LATCH_RESOLVE},${HOSTS.map((h) => `${h}:443:${bind}`).join(',')}` });
  for (const provider of ['itglue', 'zendesk-api-key']) {
    const r = await s.api('POST', '/integrations', { provider, unique_key: provider });
    assert.equal(r.status, 200, r.text);
  }
});

after(async () => {
  await s?.stop();
  up?.close();
});

function link(token, route, key, params, body) {
  const q = new URLSearchParams({ connect_session_token: token });
  for (const [k, v] of Object.entries(params)) q.set(`params[${k}]`, v);
  return api(s.latchUrl, null, 'POST', `${route}${key}?${q}`, body);
}

function proxy(conn, key, p) {
  return s.api('GET', `/proxy${p}`, undefined, { headers: { 'connection-id': conn, 'provider-config-key': key } });
}

test('GET /providers says which providers latch links', async () => {
  let r = await s.api('GET', '/providers/itglue');
  assert.deepEqual(r.json.data.latch, { linkable: true });
  r = await s.api('GET', '/providers/sophos-central');
  if (r.status === 200) {
    assert.equal(r.json.data.latch.linkable, false);
    assert.match(r.json.data.latch.reason, /post-connection script/);
    r = await s.api('POST', '/integrations', { provider: 'sophos-central', unique_key: 'sophos' });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, 'unsupported_auth_mode');
    assert.match(r.json.error.message, /OAUTH2_CC/);
  }
});

test('API_KEY: verified link, rejected key in words, templates on the proxied request', async () => {
  const sess = await s.createSession();
  const bad = await link(sess.token, '/api-auth/api-key/', 'itglue', { subdomain: 'api' }, { apiKey: 'ITG.wrong-key' });
  assert.equal(bad.status, 400, bad.text);
  assert.equal(bad.json.error.code, 'connection_test_failed');
  assert.match(bad.json.error.message, /IT Glue rejected the key/);
  const ok = await link(sess.token, '/api-auth/api-key/', 'itglue', { subdomain: 'api' }, { apiKey: 'ITG.good-key' });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.json.latch, { verified: true, verification: '/organizations' });
  const v = seen.at(-1);
  assert.equal(v.url, '/organizations');
  assert.equal(v.headers['x-api-key'], 'ITG.good-key');
  assert.equal(v.headers.authorization, undefined);
  const pr = await proxy(ok.json.connectionId, 'itglue', '/organizations?page=2');
  assert.equal(pr.status, 200, pr.text);
  const last = seen.at(-1);
  assert.equal(last.url, '/organizations?page=2');
  assert.equal(last.headers['x-api-key'], 'ITG.good-key');
  assert.equal(last.headers['content-type'], 'application/vnd.api+json');
  const got = await s.api('GET', `/connections/${ok.json.connectionId}?provider_config_key=itglue`);
  assert.deepEqual(got.json.credentials, { type: 'API_KEY', apiKey: 'ITG.good-key' });
});

// zendesk-api-key: latch's overlay is deep-merged over Nango's entry, so Nango's
// proxy.verification survives (issue 12 f); "no verification defined" is covered per provider by
// conformance.test.mjs.
test('BASIC: templated Authorization, verified with Nango\'s own verification, hostile subdomain refused', async () => {
  const sess = await s.createSession();
  const n = seen.length;
  for (const evil of ['evil.com/', 'acme.evil.com', 'acme\r\nx: y', 'a@b', '../x']) {
    const r = await link(sess.token, '/api-auth/basic/', 'zendesk-api-key', { subdomain: evil }, { username: 'me@acme.com', password: 'Tok3n' });
    assert.equal(r.status, 400, `${evil}: ${r.text}`);
  }
  assert.equal(seen.length, n, 'no upstream request for hostile values');
  const ok = await link(sess.token, '/api-auth/basic/', 'zendesk-api-key', { subdomain: 'acme' }, { username: 'me@acme.com', password: 'Tok3n' });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.latch.verified, true, ok.text);
  assert.equal(ok.json.latch.verification, '/api/v2/users.json?per_page=1&page=1');
  const ver = seen.at(-1);
  assert.equal(ver.host, 'acme.zendesk.com');
  assert.equal(ver.headers.authorization, `Basic ${Buffer.from('me@acme.com/token:Tok3n').toString('base64')}`);
  const pr = await proxy(ok.json.connectionId, 'zendesk-api-key', '/api/v2/users/me.json');
  assert.equal(pr.status, 200, pr.text);
  const last = seen.at(-1);
  assert.equal(last.host, 'acme.zendesk.com');
  assert.equal(last.headers.authorization, `Basic ${Buffer.from('me@acme.com/token:Tok3n').toString('base64')}`);
});

test('POST /connections imports API_KEY and BASIC in Nango shapes', async () => {
  let r = await s.api('POST', '/connections', { provider_config_key: 'itglue', connection_id: 'imp-key', connection_config: { subdomain: 'api' }, credentials: { type: 'API_KEY', apiKey: 'ITG.good-key' } });
  assert.equal(r.status, 201, r.text);
  r = await s.api('GET', '/connections/imp-key?provider_config_key=itglue');
  assert.deepEqual(r.json.credentials, { type: 'API_KEY', apiKey: 'ITG.good-key' });
  r = await s.api('POST', '/connections', { provider_config_key: 'zendesk-api-key', connection_id: 'imp-basic', connection_config: { subdomain: 'acme' }, credentials: { type: 'BASIC', username: 'u@acme.com', password: 'p' } });
  assert.equal(r.status, 201, r.text);
  r = await s.api('GET', '/connections/imp-basic?provider_config_key=zendesk-api-key&force_refresh=true');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.credentials, { type: 'BASIC', username: 'u@acme.com', password: 'p' });
  r = await s.api('POST', '/connections', { provider_config_key: 'itglue', credentials: { type: 'BASIC', username: 'x', password: 'y' } });
  assert.equal(r.status, 400);
});

test('Nango routes latch does not implement answer 501 naming the feature', async () => {
  for (const [m, p, word] of [['POST', '/sync/trigger', 'Syncs'], ['GET', '/records?model=X', 'Records'],
    ['POST', '/action/trigger', 'Actions'], ['GET', '/scripts/config', 'scripts'], ['GET', '/environment-variables', 'Environment variables']]) {
    const r = await s.api(m, p, m === 'POST' ? {} : undefined);
    assert.equal(r.status, 501, `${p}: ${r.text}`);
    assert.equal(r.json.error.code, 'not_implemented');
    assert.match(r.json.error.message, new RegExp(word));
  }
});
