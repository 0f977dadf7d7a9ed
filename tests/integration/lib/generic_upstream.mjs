// A generic fake upstream for any provider of the catalogue: node https on <loopback>:443 with a
// certificate from the test CA (tests/tls/make-test-ca) whose SANs are exactly the hosts under test,
// so that latch reaches it at the real provider host names (pinned with LATCH_RESOLVE, trusted with
// LATCH_CA_FILE). It records every request (method, host, SNI, path, query, headers, body) and
// every TLS connection, and answers per rules the test sets.
//
//   const up = await startGenericUpstream({ hosts: ['api.example.com', ...] });
//   up.rule({ host: 'api.example.com', method: 'POST', path: '/oauth/token' }, (req) => ({ status: 200, json: {...} }));
//   ... up.requests.filter((r) => r.host === 'api.example.com')
//   await up.stop();
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { randomInt } from 'node:crypto';
import { makeTestCA } from './fake.mjs';
import { BUILD } from './catalog.mjs';

function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 60000, ...opts }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** A server certificate from the test CA for exactly these DNS names (and 127.0.0.1). */
export async function makeHostCert(hosts, dir) {
  const ca = await makeTestCA(path.join(BUILD, 'test-tls'));
  fs.mkdirSync(dir, { recursive: true });
  const key = path.join(dir, 'upstream.key');
  const csr = path.join(dir, 'upstream.csr');
  const ext = path.join(dir, 'upstream.ext');
  const cert = path.join(dir, 'upstream.pem');
  const names = [...new Set(hosts.map((h) => h.toLowerCase()))];
  fs.writeFileSync(ext, [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    `subjectAltName=${[...names.map((h) => `DNS:${h}`), 'IP:127.0.0.1'].join(',')}`,
    '',
  ].join('\n'));
  await run('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', csr, '-subj', '/O=latch tests/CN=generic upstream']);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca.ca, '-CAkey', path.join(ca.dir, 'ca.key'),
    '-set_serial', `0x${crypto.randomBytes(16).toString('hex')}`, '-days', '2', '-sha256', '-extfile', ext, '-out', cert]);
  return { key, cert, ca: ca.ca };
}

/**
 * Starts the upstream. hosts: every DNS name it must present a certificate for. bind: a loopback
 * address (default a random 127.x.y.z so parallel test files don't collide). Resolves to the control
 * object; `resolveFor(hosts)` gives the LATCH_RESOLVE entries.
 */
export async function startGenericUpstream({ hosts, bind, dir } = {}) {
  bind ??= `127.${randomInt(1, 250)}.${randomInt(1, 250)}.${randomInt(2, 250)}`;
  fs.mkdirSync(path.join(BUILD, 'test-tmp'), { recursive: true });
  dir ??= fs.mkdtempSync(path.join(BUILD, 'test-tmp', 'upstream-'));
  const tls = await makeHostCert(hosts, dir);
  const requests = [];
  const connections = [];
  const tlsErrors = [];
  const rules = [];
  const tcp = { count: 0 };

  const server = https.createServer({ key: fs.readFileSync(tls.key), cert: fs.readFileSync(tls.cert) }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const u = new URL(req.url, 'https://x');
      const host = String(req.headers.host || '').replace(/:443$/, '').toLowerCase();
      const rec = {
        at: Date.now(), method: req.method, host, sni: req.socket.servername || null, url: req.url, path: u.pathname,
        query: Object.fromEntries(u.searchParams), rawQuery: u.search, headers: req.headers, body, status: 0,
      };
      requests.push(rec);
      let answer = null;
      for (const r of rules) {
        if (r.host && r.host !== host) continue;
        if (r.method && r.method !== req.method) continue;
        if (r.path && (typeof r.path === 'string' ? r.path !== u.pathname : !r.path.test(u.pathname))) continue;
        answer = r.handler(rec);
        if (answer) break;
      }
      answer ??= { status: 200, json: { ok: true, data: [] } };
      rec.status = answer.status ?? 200;
      const headers = { 'content-type': 'application/json', ...(answer.headers || {}) };
      res.writeHead(rec.status, headers);
      res.end(answer.json !== undefined ? JSON.stringify(answer.json) : (answer.body ?? ''));
    });
  });
  server.on('connection', () => { tcp.count++; });
  server.on('secureConnection', (sock) => connections.push({ at: Date.now(), sni: sock.servername || null }));
  server.on('tlsClientError', (err, sock) => tlsErrors.push({ at: Date.now(), message: err.message, sni: sock?.servername || null }));
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(443, bind, resolve);
  });

  return {
    bind, port: 443, tls, requests, connections, tlsErrors,
    /** LATCH_RESOLVE entries pinning these hosts to this server. */
    resolveFor(hs = hosts) { return [...new Set(hs)].map((h) => `${h}:443:${bind}`); },
    /** Adds a rule {host, method, path (string or RegExp)} -> handler(rec) returning {status, json|body, headers} or null. Returns a remover. */
    rule(match, handler) {
      const r = { ...match, host: match.host?.toLowerCase(), handler };
      rules.unshift(r); // latest first
      return () => { const i = rules.indexOf(r); if (i >= 0) rules.splice(i, 1); };
    },
    clearRules() { rules.length = 0; },
    forHost(host) { return requests.filter((r) => r.host === host.toLowerCase()); },
    /** Sockets and requests seen so far (to prove that nothing reached it). */
    counts() { return { tcp: tcp.count, connections: connections.length, requests: requests.length, tlsErrors: tlsErrors.length }; },
    stop() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
    },
  };
}
