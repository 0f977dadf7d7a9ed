// Start, stop and control the fake NinjaOne server (tests/fake_ninjaone/fake_ninjaone.c) from
// node:test integration tests. Node 18+ built-ins only. See tests/fake_ninjaone/README.md for the
// server's endpoints, faults and the /v2/bytes generator.
//
//   import { startFake, DEFAULT_CLIENT } from './lib/fake.mjs';
//   const fake = await startFake({ tlsDir });          // TLS with the test CA (made if missing)
//   await fake.fault({ target: 'token', mode: 'status', status: 429, retry_after: '1', count: 1 });
//   const st = await fake.stats();                     // { token_requests, connections, ... }
//   await fake.stop();
import { spawn, execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SRC = process.env.LATCH_SOURCE_DIR || path.resolve(HERE, '../../..');
const BUILD = process.env.LATCH_BUILD_DIR || path.join(SRC, 'build');
const MAKE_CA = path.join(SRC, 'tests/tls/make-test-ca');

/** The five instance hosts the fake serves (chosen by the Host header). */
export const INSTANCES = Object.freeze(['app', 'us2', 'eu', 'ca', 'oc'].map((i) => `${i}.ninjarmm.com`));

/** Registered by default: an EU app with monitoring + management (the usual MSP grant). */
export const DEFAULT_CLIENT = Object.freeze({
  client_id: 'KTmhkNf1_dZZVPmIQTK_lH2DCNJ',
  client_secret: 'q7Xv2Lw9Rk4Tn8Bz1Hc6Ym3Jd5Fs0Ga_Ue-Pi7Ko2Wr9Et4Qx1',
  instance: 'eu.ninjarmm.com',
  scopes: Object.freeze(['monitoring', 'management']),
});

/** Registered by default: an EU app with monitoring only (invalid_scope / insufficient_privileges). */
export const MONITORING_CLIENT = Object.freeze({
  client_id: '5I2PjdQI0qnFpp0sdgCnI00vOS9',
  client_secret: 'xsJ_0VVVvIt6YvGP_an7viK83LTKeFngPT_tNCZBMhH5T7mloO',
  instance: 'eu.ninjarmm.com',
  scopes: Object.freeze(['monitoring']),
});

/** Not registered unless passed in `clients`: a US2 app (region tests). */
export const US2_CLIENT = Object.freeze({
  client_id: 'kalVF2dla0MqlKoNu6etBBC1PKU',
  client_secret: 'TV6_LGtyfJlMd9LX769CgarjgWqf0wJH9bZYnU7yFDMI0rT9zL',
  instance: 'us2.ninjarmm.com',
  scopes: Object.freeze(['monitoring', 'management']),
});

export function defaultFakeBin() {
  return process.env.FAKE_NINJAONE_BIN || path.join(BUILD, 'fake-ninjaone');
}

export function defaultTlsDir() {
  return process.env.LATCH_TEST_TLS_DIR || path.join(BUILD, 'test-tls');
}

/**
 * Creates (or reuses, if still valid for a day) the test CA and server certificate in `dir`.
 * Safe to call concurrently from several test files. Resolves to the file paths.
 */
export async function makeTestCA(dir = defaultTlsDir()) {
  await fs.promises.mkdir(dir, { recursive: true });
  await new Promise((resolve, reject) => {
    execFile(MAKE_CA, [dir], { timeout: 60000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`make-test-ca ${dir} failed: ${err.message}\n${stderr}`));
      else resolve();
    });
  });
  return {
    dir,
    ca: path.join(dir, 'ca.pem'),
    cert: path.join(dir, 'server.pem'),
    key: path.join(dir, 'server.key'),
  };
}

function clientArg(c) {
  const scopes = Array.isArray(c.scopes) ? c.scopes.join(',') : (c.scopes ?? 'monitoring');
  return `${c.client_id}:${c.client_secret}:${c.instance}:${scopes}`;
}

// byte i of /v2/bytes = ((i * 2654435761) mod 2^64 >> 13) & 0xff. Bits 13..20 of the product only
// depend on i mod 2^21, so the stream repeats every 2 MiB and Math.imul (low 32 bits) suffices.
const PERIOD = 1 << 21;
let periodBuf = null;
function period() {
  if (!periodBuf) {
    periodBuf = Buffer.allocUnsafe(PERIOD);
    for (let i = 0; i < PERIOD; i++) periodBuf[i] = (Math.imul(i, 0x9e3779b1) >>> 13) & 0xff;
  }
  return periodBuf;
}

/** The bytes /v2/bytes sends at [offset, offset + length). */
export function expectedBytes(offset, length) {
  const p = period();
  const out = Buffer.allocUnsafe(length);
  let o = 0;
  let i = offset % PERIOD;
  while (o < length) {
    const n = Math.min(PERIOD - i, length - o);
    p.copy(out, o, i, i + n);
    o += n;
    i = 0;
  }
  return out;
}

/** sha256 hex of the first n bytes of /v2/bytes (n may be several GB). */
export function expectedBytesSha256(n) {
  const p = period();
  const h = crypto.createHash('sha256');
  let left = n;
  while (left > 0) {
    const k = Math.min(PERIOD, left);
    h.update(k === PERIOD ? p : p.subarray(0, k));
    left -= k;
  }
  return h.digest('hex');
}

/**
 * Spawns the fake and waits for its {"port":N} line.
 *
 * Options: bin (default $FAKE_NINJAONE_BIN or <build>/fake-ninjaone), tlsDir (default
 * <build>/test-tls; the CA is created there if needed), http (plain HTTP, no TLS), bind (IPv4,
 * default 127.0.0.1), port (default 0 = ephemeral), tokenLifetime (s), clients (registered at
 * start; default DEFAULT_CLIENT + MONITORING_CLIENT), defaultInstance (instance for requests whose
 * Host is not an instance host; default none = 421), args (extra CLI flags), verbose (pipe the
 * fake's stderr and log every request), startTimeoutMs.
 */
export async function startFake({
  bin = defaultFakeBin(),
  tlsDir,
  tokenLifetime = 3600,
  clients = [DEFAULT_CLIENT, MONITORING_CLIENT],
  http: plain = false,
  bind = '127.0.0.1',
  port: wantPort = 0,
  defaultInstance,
  args = [],
  verbose = !!process.env.FAKE_NINJAONE_VERBOSE,
  startTimeoutMs = 15000,
} = {}) {
  if (!bin || !fs.existsSync(bin)) {
    throw new Error(`fake-ninjaone binary not found (${bin}); build it or set FAKE_NINJAONE_BIN`);
  }
  const tls = plain ? null : await makeTestCA(tlsDir ?? defaultTlsDir());
  const argv = ['--port', String(wantPort), '--bind', bind, '--token-lifetime', String(tokenLifetime), '--exit-with-parent'];
  if (plain) argv.push('--http');
  else argv.push('--cert', tls.cert, '--key', tls.key);
  for (const c of clients) argv.push('--client', clientArg(c));
  if (defaultInstance) argv.push('--default-instance', defaultInstance);
  if (verbose) argv.push('--verbose');
  argv.push(...args);

  const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 262144) stderr = stderr.slice(-131072);
    if (verbose) process.stderr.write(d);
  });
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.once('exit', (code, signal) => { exited = { code, signal }; resolve(exited); });
  });

  const port = await new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`fake-ninjaone did not report its port within ${startTimeoutMs} ms\n${stderr}`));
    }, startTimeoutMs);
    rl.on('line', (line) => {
      let j;
      try { j = JSON.parse(line); } catch { return; }
      if (Number.isInteger(j?.port)) {
        clearTimeout(timer);
        resolve(j.port);
      }
    });
    child.once('error', (err) => { clearTimeout(timer); reject(err); });
    exitPromise.then((e) => {
      clearTimeout(timer);
      reject(new Error(`fake-ninjaone exited (${JSON.stringify(e)}) before reporting its port\n${stderr}`));
    });
  });
  child.stdout.resume();

  const scheme = plain ? 'http' : 'https';
  const caPem = tls ? fs.readFileSync(tls.ca) : undefined;
  // One keep-alive socket for control calls, so they add at most one connection (and the fake
  // does not count connections whose first request is a control request anyway).
  const controlAgent = plain
    ? new http.Agent({ keepAlive: true, maxSockets: 1 })
    : new https.Agent({ keepAlive: true, maxSockets: 1, ca: caPem });

  /**
   * A raw request to the fake. host picks the instance (Host header and TLS SNI); agent false
   * (default) opens a fresh connection. Resolves {status, headers, body: Buffer, text, json()}.
   */
  function request(method, p, { host = DEFAULT_CLIENT.instance, headers = {}, body, agent = false, timeoutMs = 30000 } = {}) {
    const mod = plain ? http : https;
    const opts = {
      host: bind,
      port,
      method,
      path: p,
      agent,
      headers: { host: port === (plain ? 80 : 443) ? host : `${host}:${port}`, ...headers },
    };
    if (!plain) {
      opts.ca = caPem;
      opts.servername = host;
    }
    let payload = body;
    if (payload !== undefined && typeof payload !== 'string' && !Buffer.isBuffer(payload)) {
      payload = JSON.stringify(payload);
      if (!Object.keys(opts.headers).some((k) => k.toLowerCase() === 'content-type')) {
        opts.headers['content-type'] = 'application/json';
      }
    }
    return new Promise((resolve, reject) => {
      const req = mod.request(opts, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const buf = Buffer.concat(chunks);
          const text = buf.toString('utf8');
          resolve({ status: res.statusCode, headers: res.headers, body: buf, text, json: () => JSON.parse(text) });
        });
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`fake request ${method} ${p} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  async function control(method, p, body) {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await request(method, `/__fake/${p}`, { host: 'app.ninjarmm.com', body, agent: controlAgent, timeoutMs: 10000 });
        if (r.status >= 400) throw new Error(`fake control ${method} ${p}: ${r.status} ${r.text}`);
        return r.text ? r.json() : null;
      } catch (err) {
        // A kept-alive control socket may have been closed by the server's idle timeout.
        if (attempt === 0 && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) continue;
        throw err;
      }
    }
  }

  const url = `${scheme}://${bind}:${port}`;
  return {
    port,
    bind,
    pid: child.pid,
    child,
    tls,
    http: plain,
    url,
    /** https://eu.ninjarmm.com:PORT (resolve the host to `bind` yourself, e.g. with `resolve`). */
    urlFor(instance = DEFAULT_CLIENT.instance) {
      return port === (plain ? 80 : 443) ? `${scheme}://${instance}` : `${scheme}://${instance}:${port}`;
    },
    /** curl --resolve / CURLOPT_RESOLVE entries for all five instance hosts. */
    resolve: INSTANCES.map((h) => `${h}:${port}:${bind}`),
    request,
    stats: () => control('GET', 'stats'),
    reset: () => control('POST', 'reset'),
    /** {target: token|api|all, mode: none|delay|status|malformed|huge|reset|stall|truncate, delay_ms, status, retry_after, count, body, huge_bytes} */
    fault: (f) => control('POST', 'fault', f),
    faults: () => control('GET', 'fault'),
    clearFaults: () => control('POST', 'fault', { target: 'all', mode: 'none' }),
    expireAll: () => control('POST', 'expire-all'),
    /** {client_id, client_secret, instance, scopes: [...]} */
    addClient: (c) => control('POST', 'clients', c),
    clients: () => control('GET', 'clients'),
    /** {method, path, host, content_type, form: {... client_secret: "<redacted>"}, form_keys, secret_ok, basic, ...} or null */
    lastTokenRequest: () => control('GET', 'last-token-request'),
    /** GET, or POST {token_lifetime, clock_offset, clock_advance}: the fake's clock and token lifetime. */
    config: (c) => (c === undefined ? control('GET', 'config') : control('POST', 'config', c)),
    advanceClock: (seconds) => control('POST', 'config', { clock_advance: seconds }),
    /** Fetches a token directly (client_secret_post, or Basic when basic is true). Resolves {status, json}. */
    async token(client = DEFAULT_CLIENT, { scope, basic = false, host = client.instance } = {}) {
      const form = new URLSearchParams({ grant_type: 'client_credentials' });
      const headers = { 'content-type': 'application/x-www-form-urlencoded' };
      if (basic) {
        const enc = (s) => encodeURIComponent(s);
        headers.authorization = `Basic ${Buffer.from(`${enc(client.client_id)}:${enc(client.client_secret)}`).toString('base64')}`;
      } else {
        form.set('client_id', client.client_id);
        form.set('client_secret', client.client_secret);
      }
      if (scope !== undefined) form.set('scope', Array.isArray(scope) ? scope.join(' ') : scope);
      const r = await request('POST', '/ws/oauth/token', { host, headers, body: form.toString() });
      let json = null;
      try { json = r.json(); } catch { /* not JSON (fault) */ }
      return { status: r.status, headers: r.headers, json, text: r.text };
    },
    /** POST /__fake/authorize {deny}: the user's answer on the fake's authorize page. */
    setAuthorizeDeny: (deny) => control('POST', 'authorize', { deny }),
    /** Revokes every refresh token of a client (all clients when client_id is undefined). */
    revokeRefresh: (client_id) => control('POST', 'revoke-refresh', client_id ? { client_id } : {}),
    /** GET /ws/oauth/authorize; resolves {status, location, params: URLSearchParams of the redirect}. */
    async authorize(client = DEFAULT_CLIENT, { redirect_uri = 'https://app.example.test/cb', scope = 'monitoring offline_access', state = 'st', code_challenge, response_type = 'code', host = client.instance } = {}) {
      const q = new URLSearchParams({ client_id: client.client_id, redirect_uri, response_type, state });
      if (scope !== undefined) q.set('scope', scope);
      if (code_challenge !== undefined) {
        q.set('code_challenge', code_challenge);
        q.set('code_challenge_method', 'S256');
      }
      const r = await request('GET', `/ws/oauth/authorize?${q}`, { host });
      const location = r.headers.location ?? null;
      let params = null;
      try { params = new URL(location, 'https://x.invalid').searchParams; } catch { /* none */ }
      return { status: r.status, location, params };
    },
    /** A token request of the authorization_code or refresh_token grant (client_secret_post). */
    async grant(client = DEFAULT_CLIENT, fields = {}, { host = client.instance } = {}) {
      const form = new URLSearchParams({ client_id: client.client_id, client_secret: client.client_secret, ...fields });
      const r = await request('POST', '/ws/oauth/token', {
        host, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(),
      });
      let json = null;
      try { json = r.json(); } catch { /* not JSON (fault) */ }
      return { status: r.status, json, text: r.text };
    },
    /** Runs the code flow (auto-approved) and returns the token response {access_token, refresh_token, ...}. */
    async codeFlowTokens(client = DEFAULT_CLIENT, { scope = 'monitoring offline_access' } = {}) {
      const redirect_uri = 'https://app.example.test/cb';
      const a = await this.authorize(client, { redirect_uri, scope });
      if (a.status !== 302 || !a.params.get('code')) throw new Error(`authorize: ${a.status} ${a.location}`);
      const t = await this.grant(client, { grant_type: 'authorization_code', code: a.params.get('code'), redirect_uri });
      if (t.status !== 200) throw new Error(`code grant: ${t.status} ${t.text}`);
      return t.json;
    },
    stderr: () => stderr,
    exited: () => exited,
    async stop(signal = 'SIGTERM') {
      controlAgent.destroy();
      if (exited) return exited;
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      const e = await exitPromise;
      clearTimeout(t);
      return e;
    },
  };
}
