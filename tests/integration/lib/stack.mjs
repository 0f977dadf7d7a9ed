// The integration-test harness: a real latch process (SQLite in a temp dir) in front of the fake
// NinjaOne (real TLS with a test CA), reached the production way: the real provider definition's
// https://<instance>.ninjarmm.com URLs, pinned to loopback with LATCH_RESOLVE and trusted with
// LATCH_CA_FILE. Also a webhook receiver. Nothing here is mocked: every call crosses a socket.
import { spawn } from 'node:child_process';
import { randomUUID, randomInt } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { startFake, makeTestCA, DEFAULT_CLIENT, MONITORING_CLIENT } from './fake.mjs';

export const SRC = process.env.LATCH_SOURCE_DIR || path.resolve(import.meta.dirname, '../../..');
export const BUILD = process.env.LATCH_BUILD_DIR || path.join(SRC, 'build');
export const LATCH_BIN = process.env.LATCH_BIN || path.join(BUILD, 'latch');
export const INSTANCES = ['app', 'us2', 'eu', 'ca', 'oc'].map((i) => `${i}.ninjarmm.com`);

export async function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function tmpDir(prefix = 'latch-') {
  const base = path.join(BUILD, 'test-tmp');
  fs.mkdirSync(base, { recursive: true });
  return fs.mkdtempSync(path.join(base, prefix));
}

/** A webhook receiver: records every request; answers with the programmed statuses. */
export async function startWebhookReceiver() {
  const received = [];
  const plan = []; // statuses to answer next, then 200
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let json = null;
      try { json = JSON.parse(raw); } catch { /* recorded raw */ }
      const status = plan.length ? plan.shift() : 200;
      received.push({ method: req.method, url: req.url, headers: req.headers, raw, json, status });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  return {
    port,
    host: 'webhook.test',
    url: `http://webhook.test:${port}/hook`,
    received,
    respondWith(...statuses) { plan.push(...statuses); },
    /** The first 2xx-answered webhook matching pred, among those received from index `from` on. */
    async waitFor(pred, ms = 10000, from = 0) {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        const hit = received.slice(from).find((r) => r.status < 300 && pred(r));
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`webhook not received within ${ms} ms (got ${received.length})`);
    },
    close() { return new Promise((r) => server.close(r)); },
  };
}

/** Starts `latch serve`; resolves when /health answers. */
export async function startLatch({ dir, env = {}, port } = {}) {
  port = port || (await freePort());
  const logPath = path.join(dir, 'latch.log');
  const log = fs.openSync(logPath, 'a');
  const child = spawn(LATCH_BIN, ['serve'], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      // sanitizer builds: keep the harness's settings (small quarantine, abort on error)
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(ASAN|UBSAN|LSAN)_OPTIONS$/.test(k))),
      LATCH_PORT: String(port),
      LATCH_BIND: '127.0.0.1',
      LATCH_PUBLIC_URL: `http://127.0.0.1:${port}`,
      LATCH_DATABASE_URL: path.join(dir, 'latch.db'),
      LATCH_KEY_FILE: path.join(dir, 'latch.key'),
      LATCH_LOG_LEVEL: 'debug',
      // every test client is 127.0.0.1, as every client is the proxy's address behind a reverse
      // proxy: no per-address connection limit unless a test asks for one
      LATCH_MAX_CONNECTIONS_PER_IP: '0',
      ...env,
    },
    stdio: ['ignore', log, log],
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15000;
  let exited = null;
  child.once('exit', (code, sig) => { exited = { code, sig }; });
  for (;;) {
    if (exited) {
      throw new Error(`latch exited (${JSON.stringify(exited)}):\n${fs.readFileSync(logPath, 'utf8').slice(-3000)}`);
    }
    try {
      const r = await fetch(`${url}/health`);
      if (r.status === 200) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new Error('latch did not become healthy');
    await new Promise((r) => setTimeout(r, 30));
  }
  fs.closeSync(log);
  return {
    url, port, child, logPath,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) {
        const done = new Promise((r) => child.once('exit', r));
        child.kill(signal);
        // a latch that does not stop in time is a failure, but must not hang the runner
        let timer;
        const hung = await Promise.race([done.then(() => false),
          new Promise((r) => { timer = setTimeout(() => r(true), 60000); })]);
        clearTimeout(timer);
        if (hung) {
          child.kill('SIGKILL');
          await done;
          throw new Error(`latch did not exit within 60 s of ${signal}:\n${fs.readFileSync(logPath, 'utf8').slice(-2000)}`);
        }
      }
      // sanitizer builds: any report (leak at exit, UB, memory error) fails the test
      const text = fs.readFileSync(logPath, 'utf8');
      const report = /(ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: )/.exec(text);
      if (report) throw new Error(`sanitizer report in ${logPath}:\n${text.slice(Math.max(0, report.index - 200), report.index + 3000)}`);
      if (signal === 'SIGTERM' && child.exitCode !== 0) {
        throw new Error(`latch exited with ${child.exitCode ?? child.signalCode} after SIGTERM:\n${text.slice(-2000)}`);
      }
    },
  };
}

export async function api(baseUrl, key, method, p, body, { headers = {}, raw = false } = {}) {
  const h = { ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  let payload;
  if (body !== undefined) {
    if (raw) payload = body;
    else { payload = JSON.stringify(body); h['content-type'] ??= 'application/json'; }
  }
  const r = await fetch(baseUrl + p, { method, headers: h, body: payload });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not json */ }
  return { status: r.status, headers: r.headers, json, text };
}

/**
 * The full stack. The fake NinjaOne listens on <loopback>:443 (a random 127.x.y.z address, so
 * parallel test files don't collide) and LATCH_RESOLVE pins the five instance hosts to it.
 */
/** A POST /connections body importing OAUTH2_CC credentials for the eu instance. */
export function importBody(id, extra = {}) {
  return {
    provider_config_key: 'ninjaone-rmm',
    connection_id: id,
    connection_config: { instance: 'eu.ninjarmm.com' },
    credentials: { type: 'OAUTH2_CC', token: `tok-${id}`, client_id: 'KTmhkNf1_dZZVPmIQTK_lH2DCNJ', client_secret: `secret-${id}-0123456789` },
    ...extra,
  };
}

export const BACKEND = process.env.LATCH_TEST_BACKEND === 'postgres' ? 'postgres' : 'sqlite';

function listFiles(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

export async function startStack(opts = {}) {
  const dir = tmpDir();
  let pg = null;
  if (BACKEND === 'postgres') {
    const { startPg } = await import('./pg.mjs');
    pg = await startPg();
  }
  const tlsDir = path.join(BUILD, 'test-tls');
  await makeTestCA(tlsDir);
  const bind = `127.${randomInt(1, 250)}.${randomInt(1, 250)}.${randomInt(2, 250)}`;
  const fake = await startFake({
    tlsDir, bind, port: 443, tokenLifetime: opts.tokenLifetime ?? 3600,
    clients: [DEFAULT_CLIENT, MONITORING_CLIENT],
  });
  const webhooks = await startWebhookReceiver();
  const secretKey = randomUUID();
  const resolve = [
    ...INSTANCES.map((h) => `${h}:443:${bind}`),
    `${webhooks.host}:${webhooks.port}:127.0.0.1`,
  ].join(',');
  const env = {
    LATCH_SECRET_KEY: secretKey,
    LATCH_RESOLVE: resolve,
    LATCH_CA_FILE: path.join(tlsDir, 'ca.pem'),
    LATCH_ALLOW_HTTP: '1', // only for the plain-http webhook receiver
    LATCH_WEBHOOK_URL: webhooks.url,
    LATCH_WEBHOOK_BACKOFF_MS: '200',
    ...(pg ? { LATCH_DATABASE_URL: pg.url } : {}),
    ...(opts.env || {}),
  };
  let latch = await startLatch({ dir, env });
  const stack = {
    dir, fake, webhooks, secretKey, env, pg, backend: BACKEND,
    /** Environment for running the latch CLI against this stack's database. */
    cliEnv(extra = {}) {
      return { ...process.env, LATCH_DATABASE_URL: env.LATCH_DATABASE_URL || path.join(dir, 'latch.db'), LATCH_KEY_FILE: path.join(dir, 'latch.key'), ...extra };
    },
    /** Every file the database keeps its data in (SQLite file + WAL, or the PostgreSQL data dir). */
    dbFiles() {
      if (pg) return listFiles(pg.dir).filter((f) => !/\.(pid|opts|conf|sock)$/.test(f) && !f.includes('.s.PGSQL'));
      return fs.readdirSync(dir).filter((f) => f.startsWith('latch.db')).map((f) => path.join(dir, f));
    },
    client: { ...DEFAULT_CLIENT },
    monitoringClient: { ...MONITORING_CLIENT },
    artifactsDir: (() => { const d = path.join(BUILD, 'test-artifacts'); fs.mkdirSync(d, { recursive: true }); return d; })(),
    get latchUrl() { return latch.url; },
    get latch() { return latch; },
    api(method, p, body, o) { return api(latch.url, secretKey, method, p, body, o); },
    async createSession(body) {
      const r = await this.api('POST', '/connect/sessions', body ?? { end_user: { id: 'user-1', email: 'admin@msp.example', display_name: 'MSP Admin' } });
      if (r.status !== 201) throw new Error(`createSession: ${r.status} ${r.text}`);
      return r.json.data;
    },
    /** Links an account the way the Connect UI does; returns the raw response. */
    async link(token, { instance = DEFAULT_CLIENT.instance, client_id = DEFAULT_CLIENT.client_id, client_secret = DEFAULT_CLIENT.client_secret, key = 'ninjaone-rmm' } = {}) {
      const q = new URLSearchParams({ connect_session_token: token });
      if (instance !== null) q.set('params[instance]', instance);
      return api(latch.url, null, 'POST', `/oauth2/auth/${encodeURIComponent(key)}?${q}`, { client_id, client_secret });
    },
    logs() { return fs.readFileSync(latch.logPath, 'utf8'); },
    async restartLatch(signal = 'SIGTERM', extraEnv = {}) {
      await latch.stop(signal);
      latch = await startLatch({ dir, env: { ...env, ...extraEnv }, port: latch.port });
    },
    async stop() {
      // tear everything down even when latch's stop reports a failure, so that no child
      // process keeps the test runner alive; then report the first failure
      const results = await Promise.allSettled([latch.stop()]);
      results.push(...await Promise.allSettled([fake.stop(), webhooks.close(), pg ? pg.destroy() : null]));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    },
  };
  if (opts.createIntegration !== false) {
    const r = await stack.api('POST', '/integrations', { provider: 'ninjaone-rmm', unique_key: 'ninjaone-rmm', ...(opts.integration || {}) });
    if (r.status !== 200) throw new Error(`create integration: ${r.status} ${r.text}`);
  }
  return stack;
}
