// Hostile clients against a real latch: >= 100,000 malformed or mutated HTTP requests over raw
// TCP (node:net), the SSRF corpus through both ways an instance enters latch, and a few
// slowloris sockets. latch must answer every request with a parseable HTTP response below 500
// (or close the connection), stay healthy, not restart, and not grow its RSS. The one 5xx
// accepted is the HTTP layer's 505 for a request line whose version is not HTTP/1.0 or 1.1.
//
// Env:
//   HOSTILE_REQUESTS (default 100000), HOSTILE_CONCURRENCY (32),
//   HOSTILE_SEED (random; printed so a failing run can be replayed),
//   HOSTILE_MAX_FAILURES (200: stop early past it),
//   HOSTILE_ONLY (generator kinds, comma-separated) and HOSTILE_ROUTES (regex on "METHOD /path"
//   of the templates) to bisect a finding, HOSTILE_LINGER_MS (watch RSS/fds after the flood).
// Failures are written to <build>/test-artifacts/hostile-<seed>.json with the exact request
// bytes (hex) that triggered them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startStack, api } from './lib/stack.mjs';
import { seededRandom } from './lib/load.mjs';
import { exchange, rawRequest as rawBytes } from './lib/raw.mjs';

const TOTAL = Number(process.env.HOSTILE_REQUESTS || 100000);
const CONCURRENCY = Number(process.env.HOSTILE_CONCURRENCY || 32);
const SEED = Number(process.env.HOSTILE_SEED || Math.floor(Math.random() * 2 ** 31));
const RSS_GROWTH_LIMIT_KB = 20 * 1024;
const REQ_TIMEOUT_MS = 5000;
const MAX_FAILURES = Number(process.env.HOSTILE_MAX_FAILURES || 200); // stop early past this many
// Kinds whose framing is intact: latch must answer them (a timeout is a failure). Every other
// kind is sent with a half-close, so an incomplete request ends at once.
const MUST_ANSWER = new Set(['wrong-type', 'mutate-body', 'deep-json', 'body-type', 'traversal', 'percent', 'huge-headers']);

let s;
let sessions = [];
const failures = [];
const outcomes = new Map();
const timeoutSamples = [];
let floodStart = Date.now();

// ---- deterministic PRNG (mulberry32) ----
const rnd = seededRandom(SEED);
const ri = (n) => Math.floor(rnd() * n);
const pick = (a) => a[ri(a.length)];

function rssKb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

function count(k) { outcomes.set(k, (outcomes.get(k) || 0) + 1); }

// ---- raw HTTP over a socket ----

/**
 * Sends raw bytes on a fresh connection and collects what comes back until the response is
 * complete (Content-Length / chunked end), the server closes, or the timeout passes.
 * opts.closeAfterWrite: destroy right after writing (truncated bodies). opts.chunks: an array of
 * [Buffer, delayMs] written one after another.
 */
function rawRequest(port, data, { timeoutMs = REQ_TIMEOUT_MS, closeAfterWrite = false, halfClose = false } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const chunks = [];
    let done = false;
    const finish = (how) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ how, bytes: Buffer.concat(chunks) });
    };
    const t0 = Date.now();
    // a timer that fires late means this process was not scheduled (machine overloaded): that
    // is not latch's silence
    const timer = setTimeout(() => finish(Date.now() - t0 > timeoutMs + 1500 ? 'client-stalled' : 'timeout'), timeoutMs);
    sock.on('error', () => finish('error'));
    sock.on('close', () => finish('closed'));
    sock.on('data', (c) => {
      chunks.push(c);
      if (responseComplete(Buffer.concat(chunks))) finish('complete');
    });
    sock.on('connect', () => {
      sock.write(data, () => {
        if (closeAfterWrite) setTimeout(() => finish('sent'), 5);
        // EOF after the request: latch still answers a complete request, and drops an
        // incomplete one at once instead of waiting for bytes that never come
        else if (halfClose) sock.end();
      });
    });
  });
}

/** Parses every response head in buf; returns {responses:[{status, headers, body}], rest}. */
function parseResponses(buf) {
  const out = [];
  let off = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', off);
    if (end < 0) break;
    const head = buf.subarray(off, end).toString('latin1');
    const lines = head.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]);
    if (!m) return { bad: head.slice(0, 200), responses: out };
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    const status = Number(m[1]);
    let bodyEnd = end + 4;
    let complete = true;
    if (status >= 100 && status < 200) { off = bodyEnd; continue; }
    if (headers['content-length'] !== undefined) {
      bodyEnd += Number(headers['content-length']);
      complete = buf.length >= bodyEnd;
    } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
      const z = buf.indexOf('\r\n0\r\n\r\n', end);
      const z0 = buf.indexOf('0\r\n\r\n', end + 4) === end + 4 ? end + 4 : -1;
      if (z >= 0) bodyEnd = z + 7;
      else if (z0 >= 0) bodyEnd = z0 + 5;
      else complete = false;
    } else if (status !== 204 && status !== 304) {
      complete = false; // body until close
      bodyEnd = buf.length;
    }
    out.push({ status, headers, body: buf.subarray(end + 4, Math.min(bodyEnd, buf.length)), complete });
    if (!complete) break;
    off = bodyEnd;
    if (off >= buf.length) break;
  }
  return { responses: out };
}

function responseComplete(buf) {
  const p = parseResponses(buf);
  return p.bad !== undefined || (p.responses.length > 0 && p.responses.every((r) => r.complete));
}

/** Checks one exchange; records a failure when latch answered 5xx or non-HTTP bytes. */
function judge(kind, req, res, extra) {
  count(`${kind}:${res.how}`);
  const fail = (why) => {
    failures.push({ kind, why, how: res.how, atMs: Date.now() - floodStart, request: req.subarray(0, 600).toString('hex'),
      requestText: req.subarray(0, 300).toString('latin1'), response: res.bytes.subarray(0, 400).toString('latin1') });
    return null;
  };
  if (res.how === 'timeout' && process.env.HOSTILE_DEBUG_TIMEOUTS && timeoutSamples.length < 40) {
    timeoutSamples.push({ kind, req: req.subarray(0, 250).toString('latin1'), got: res.bytes.subarray(0, 120).toString('latin1') });
  }
  if (res.how === 'timeout' && MUST_ANSWER.has(kind)) return fail(`no answer within ${REQ_TIMEOUT_MS} ms`);
  if (res.bytes.length === 0) return null; // closed without a response: allowed
  const p = parseResponses(res.bytes);
  const line = req.subarray(0, Math.max(0, req.indexOf('\n'))).toString('latin1').replace(/\r$/, '');
  const versionOk = /^[^ ]+ [^ ]+ HTTP\/1\.[01]$/.test(line);
  if (p.bad !== undefined) return fail(`not HTTP: ${JSON.stringify(p.bad)}`);
  if (p.responses.length === 0) {
    // bytes but no complete head: a response cut short
    if (!/^HTTP\/1\.[01] \d{3}/.test(res.bytes.subarray(0, 16).toString('latin1'))) return fail('garbage bytes');
    return null;
  }
  for (const r of p.responses) {
    count(`status:${r.status}`);
    // the HTTP layer's 505 for a version latch cannot speak is a correct answer
    if (r.status === 505 && !versionOk) continue;
    if (r.status >= 500) return fail(`status ${r.status}`);
    if (extra) {
      const why = extra(r);
      if (why) return fail(why);
    }
  }
  return p.responses[0];
}

// ---- request building ----

const CRLF = '\r\n';
function build(method, target, { headers = {}, body, version = 'HTTP/1.1', auth = 'secret' } = {}) {
  const h = { host: '127.0.0.1', connection: 'close', ...headers };
  if (auth === 'secret') h.authorization = `Bearer ${s.secretKey}`;
  else if (auth) h.authorization = `Bearer ${auth}`;
  let b = body;
  if (b !== undefined && typeof b !== 'string' && !Buffer.isBuffer(b)) b = JSON.stringify(b);
  if (b !== undefined) {
    b = Buffer.isBuffer(b) ? b : Buffer.from(b, 'utf8');
    h['content-type'] ??= 'application/json';
    h['content-length'] ??= String(b.length);
  }
  const head = `${method} ${target} ${version}${CRLF}` +
    Object.entries(h).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}${CRLF}`).join('') + CRLF;
  return b ? Buffer.concat([Buffer.from(head, 'latin1'), b]) : Buffer.from(head, 'latin1');
}

const PCK = 'ninjaone-rmm';
const EU = 'eu.ninjarmm.com';

function importBody(id) {
  return {
    provider_config_key: PCK,
    connection_id: id,
    connection_config: { instance: EU },
    credentials: { type: 'OAUTH2_CC', token: `tok-${id}`, client_id: s.client.client_id, client_secret: s.client.client_secret },
    end_user: { id: 'u-1', email: 'u1@example.com', tags: { team: 'ops' } },
    tags: { plan: 'pro' },
    metadata: { a: 1 },
  };
}

/** Valid requests to every route (the material for mutations and wrong-type bodies). */
function templates() {
  const tok = pick(sessions).token;
  const id = `h-${ri(50)}`;
  const all = [
    { m: 'GET', p: '/health', auth: null },
    { m: 'GET', p: '/ui/', auth: null },
    { m: 'GET', p: '/ui/app.js', auth: null },
    { m: 'OPTIONS', p: '/connections', auth: null, headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } },
    { m: 'GET', p: '/providers' },
    { m: 'GET', p: `/providers/${PCK}` },
    { m: 'GET', p: '/integrations' },
    { m: 'GET', p: `/integrations/${PCK}` },
    { m: 'POST', p: '/integrations', body: { provider: PCK, unique_key: `hi-${ri(1000)}`, display_name: 'Hostile' } },
    { m: 'PATCH', p: '/integrations/hostile-int', body: { display_name: 'x', forward_webhooks: true } },
    { m: 'GET', p: '/connections' },
    { m: 'GET', p: `/connections?connectionId=${id}&search=h-&endUserId=u-1&limit=5` },
    { m: 'POST', p: '/connections', body: importBody(id) },
    { m: 'GET', p: `/connections/${id}?provider_config_key=${PCK}` },
    { m: 'PATCH', p: `/connections/${id}?provider_config_key=${PCK}`, body: { tags: { a: 'b' }, end_user: { id: 'u-2' } } },
    { m: 'POST', p: '/connections/metadata', body: { connection_id: id, provider_config_key: PCK, metadata: { k: 'v', n: [1, 2] } } },
    { m: 'PATCH', p: '/connections/metadata', body: { connection_id: [id], provider_config_key: PCK, metadata: { k2: 'v2' } } },
    { m: 'POST', p: `/connection/${id}/metadata?provider_config_key=${PCK}`, body: { x: 1 } },
    { m: 'POST', p: '/connect/sessions', body: { end_user: { id: `u-${ri(100)}`, email: 'a@b.com', display_name: 'A' }, organization: { id: 'o', display_name: 'O' }, tags: { t: 'v' }, allowed_integrations: [PCK], integrations_config_defaults: { [PCK]: { connection_config: { instance: EU } } } } },
    { m: 'POST', p: '/connect/sessions/reconnect', body: { connection_id: id, integration_id: PCK, end_user: { id: 'u-1' } } },
    { m: 'GET', p: '/connect/session', auth: tok },
    { m: 'POST', p: `/oauth2/auth/${PCK}?connect_session_token=${tok}&params[instance]=${EU}`, auth: null, body: { client_id: 'wrong', client_secret: 'wrong-secret' } },
    { m: 'GET', p: '/proxy/v2/organizations', headers: { 'connection-id': id, 'provider-config-key': PCK } },
  ];
  if (!ONLY_ROUTES) return all;
  const some = all.filter((t) => ONLY_ROUTES.test(`${t.m} ${t.p}`));
  return some.length ? some : all;
}

function templateBytes(t, overrides = {}) {
  return build(overrides.m ?? t.m, overrides.p ?? t.p, {
    headers: { ...(t.headers || {}), ...(overrides.headers || {}) },
    body: overrides.body !== undefined ? overrides.body : t.body,
    auth: t.auth === undefined ? 'secret' : t.auth,
  });
}

const SPECIAL = ['\r\n', '\n', '\r', '\0', '%', '%zz', '%0', '%00', '%ff', '../', '..%2f', '\xff\xfe', '{', '}', '[', ']', '"', '\\', ':',
  '99999999999999999999', '-1', ' ', '\t', '?', '#', '&', '=', 'params[', '\u00e9', '\ud800', 'Transfer-Encoding: chunked\r\n',
  'Content-Length: 5\r\n', 'Content-Length: -1\r\n', 'Expect: 100-continue\r\n', 'Connection: keep-alive\r\n'];

function mutateBuf(buf, ops = 1 + ri(4)) {
  let b = Buffer.from(buf);
  for (let i = 0; i < ops; i++) {
    const pos = ri(b.length + 1);
    switch (ri(8)) {
      case 0: if (b.length) b[Math.min(pos, b.length - 1)] ^= 1 << ri(8); break;
      case 1: if (b.length) b[Math.min(pos, b.length - 1)] = ri(256); break;
      case 2: { const ins = Buffer.from(pick(SPECIAL), 'latin1'); b = Buffer.concat([b.subarray(0, pos), ins, b.subarray(pos)]); break; }
      case 3: { const n = 1 + ri(16); b = Buffer.concat([b.subarray(0, pos), b.subarray(pos + n)]); break; }
      case 4: { const n = 1 + ri(32); const src = ri(Math.max(1, b.length - n)); b = Buffer.concat([b.subarray(0, pos), b.subarray(src, src + n), b.subarray(pos)]); break; }
      case 5: { const r = Buffer.alloc(1 + ri(8)); for (let k = 0; k < r.length; k++) r[k] = ri(256); b = Buffer.concat([b.subarray(0, pos), r, b.subarray(pos)]); break; }
      case 6: b = b.subarray(0, Math.max(1, pos)); break;
      default: { const ins = Buffer.from(pick(SPECIAL), 'latin1'); b = Buffer.concat([b.subarray(0, pos), ins, b.subarray(pos)]); break; }
    }
  }
  return b;
}

/** The JSON body of a template mutated at the value level (still JSON, wrong types). */
const WRONG_VALUES = [null, true, false, 0, -1, 1.5, 1e308, -1e308, 2 ** 63, '', 'x'.repeat(5000), [], {}, [[]], { a: {} },
  '\u0000', 'a\u0000b', '\u202e', '<script>', '../../etc/passwd', 'app.ninjarmm.com.evil.com', '127.0.0.1', ['app.ninjarmm.com']];

function fieldPaths(v, prefix = []) {
  const out = [];
  if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      out.push([...prefix, k]);
      out.push(...fieldPaths(x, [...prefix, k]));
    }
  }
  return out;
}

function setPath(obj, p, val) {
  const o = structuredClone(obj);
  let cur = o;
  for (let i = 0; i < p.length - 1; i++) cur = cur[p[i]];
  cur[p[p.length - 1]] = val;
  return o;
}

function deepJson(depth, kind) {
  if (kind === 0) return '['.repeat(depth) + ']'.repeat(depth);
  if (kind === 1) return '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
  if (kind === 2) return '['.repeat(depth);
  return '{"end_user":' + '{"id":'.repeat(depth) + '"x"' + '}'.repeat(depth) + '}';
}

// ---- generators: each returns {kind, req, opts?, check?} ----

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'TRACE', 'CONNECT', 'PROPFIND', 'get', 'G\x00T', 'GE T', '', 'X'.repeat(300), '\xff\xfe', 'POST\t'];

const GENERATORS = [
  // bad methods on every route
  [4, () => { const t = pick(templates()); return { kind: 'method', req: build(pick(METHODS), t.p, { body: t.body }) }; }],
  // huge headers (> 32 KiB): one big header or many
  [1, () => {
    const big = ri(2) ? { 'x-big': 'a'.repeat(33 * 1024 + ri(40000)) }
      : Object.fromEntries(Array.from({ length: 700 + ri(400) }, (_, i) => [`x-h${i}`, 'v'.repeat(48)]));
    return { kind: 'huge-headers', req: build('GET', pick(['/connections', '/health', '/providers']), { headers: big }) };
  }],
  // bad percent-encodings in path and query
  [4, () => {
    const bad = pick(['%', '%z', '%zz', '%0', '%g0', '%%', '%00', '%ff%fe', '%c0%af', '%e2%80', '%2', '%u0041', '%25%32%65']);
    const t = pick(templates());
    const target = ri(2) ? t.p.replace(/\/([^/?]*)$/, `/$1${bad}`) : `${t.p}${t.p.includes('?') ? '&' : '?'}${pick(['q', 'params[instance]', 'provider_config_key', bad])}=${bad}`;
    return { kind: 'percent', req: templateBytes(t, { p: target }) };
  }],
  // truncated bodies: Content-Length larger than what is sent, then close
  [3, () => {
    const t = pick(templates().filter((x) => x.body));
    const body = Buffer.from(JSON.stringify(t.body));
    const cut = body.subarray(0, ri(body.length));
    const req = build(t.m, t.p, { body: cut, headers: { 'content-length': String(body.length + ri(100000)) }, auth: t.auth === undefined ? 'secret' : t.auth });
    return { kind: 'truncated', req, opts: { closeAfterWrite: true } };
  }],
  // deep JSON on every JSON route
  [2, () => {
    const t = pick(templates().filter((x) => x.body));
    const d = pick([31, 32, 33, 64, 1000, 100000]);
    return { kind: 'deep-json', req: templateBytes(t, { body: deepJson(d, ri(4)) }) };
  }],
  // wrong JSON types in every field of every route
  [10, () => {
    const t = pick(templates().filter((x) => x.body));
    const paths = fieldPaths(t.body);
    const p = pick(paths);
    return { kind: 'wrong-type', req: templateBytes(t, { body: setPath(t.body, p, pick(WRONG_VALUES)) }) };
  }],
  // wrong top-level body types / content types
  [2, () => {
    const t = pick(templates().filter((x) => x.body));
    const body = pick(['null', '[]', '1', '"s"', 'true', '', '{', '{"a":1,"a":2}', '\ufeff{}', '{}garbage', '{"x":NaN}', '{"x":1e999}']);
    const ct = pick(['application/json', 'text/plain', 'application/json; charset=latin1', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', '']);
    return { kind: 'body-type', req: templateBytes(t, { body, headers: { 'content-type': ct || null } }) };
  }],
  // CR/LF and control bytes inside header values, obs-fold, bad header names
  [3, () => {
    const t = pick(templates());
    const inj = pick(['a\rb', 'a\nX-Injected: 1', 'a\r\nX-Injected: 1', 'a\0b', ' \t folded', '\x7f', 'v\r\n continued']);
    const name = pick(['x-test', 'authorization', 'content-type', 'connection-id', 'provider-config-key', 'x-request-id', 'origin', 'Bad Header', 'x:y', '']);
    return { kind: 'crlf', req: templateBytes(t, { headers: { [name]: inj } }) };
  }],
  // invalid UTF-8 in JSON strings, paths and query values
  [3, () => {
    const t = pick(templates());
    const bad = Buffer.from(pick([[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0xe2, 0x82]]));
    if (t.body && ri(2)) {
      const text = Buffer.from(JSON.stringify(t.body));
      const q = text.indexOf('"', 1 + ri(Math.max(1, text.length - 2)));
      const at = q > 0 ? q : 2;
      return { kind: 'utf8', req: templateBytes(t, { body: Buffer.concat([text.subarray(0, at), bad, text.subarray(at)]) }) };
    }
    const head = Buffer.from(`${t.m} ${t.p.split('?')[0]}/`, 'latin1');
    const rest = templateBytes(t).subarray(Buffer.byteLength(`${t.m} ${t.p.split('?')[0]}`, 'latin1'));
    return { kind: 'utf8', req: Buffer.concat([head, bad, rest]) };
  }],
  // path traversal on the Connect UI assets
  [3, () => {
    const p = pick(['/ui/../../etc/passwd', '/ui/%2e%2e/%2e%2e/etc/passwd', '/ui/..%2f..%2f..%2fetc%2fpasswd', '/ui/%2e%2e%2f%2e%2e%2fCMakeLists.txt',
      '/ui/....//....//etc/passwd', '/ui/%252e%252e/etc/passwd', '/ui/..\\..\\etc\\passwd', '/ui/%c0%ae%c0%ae/etc/passwd', '/ui//etc/passwd',
      '/ui/./../../../../../../etc/passwd', '/ui/app.js%00.png', '/ui/%00', '/ui/.git/config', '/ui/../CMakeLists.txt', '/../../etc/passwd',
      '/ui/' + '../'.repeat(40) + 'etc/passwd', '/ui/index.html/../../../etc/hostname']);
    return {
      kind: 'traversal', req: build('GET', p, { auth: null }),
      check: (r) => (/root:x?:0:0|cmake_minimum_required|\[core\]/.test(r.body.toString('latin1')) ? 'traversal leaked a file' : null),
    };
  }],
  // NUL bytes anywhere
  [2, () => {
    const t = pick(templates());
    const b = templateBytes(t);
    const pos = ri(b.length);
    return { kind: 'nul', req: Buffer.concat([b.subarray(0, pos), Buffer.from([0]), b.subarray(pos)]) };
  }],
  // bad versions / request lines
  [1, () => {
    const t = pick(templates());
    const v = pick(['HTTP/1.0', 'HTTP/1.1', 'HTTP/0.9', 'HTTP/2.0', 'HTTP/1.2', 'HTTP/11', 'HTTPS/1.1', 'HTTP/1.1 extra', '']);
    return { kind: 'version', req: build(t.m, t.p, { version: v, body: t.body, auth: t.auth === undefined ? 'secret' : t.auth }), version: v };
  }],
  // conflicting framing: CL + TE, bad chunked, duplicated CL
  [2, () => {
    const t = pick(templates().filter((x) => x.body));
    const body = JSON.stringify(t.body);
    const variants = [
      { 'transfer-encoding': 'chunked', 'content-length': String(body.length) },
      { 'transfer-encoding': 'chunked, identity', 'content-length': null },
      { 'content-length': `${body.length}, ${body.length + 1}` },
      { 'content-length': `+${body.length}` },
      { 'content-length': '99999999999999999999999' },
    ];
    const h = pick(variants);
    const chunked = /chunked/.test(h['transfer-encoding'] || '');
    const payload = chunked ? pick([`${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`, `zz\r\n${body}\r\n0\r\n\r\n`, `${(body.length + 5).toString(16)}\r\n${body}\r\n`, `ffffffffffffffffff\r\n${body}`]) : body;
    return { kind: 'framing', req: build(t.m, t.p, { body: payload, headers: h }), opts: { closeAfterWrite: !chunked && ri(2) === 0 } };
  }],
  // random mutations of valid requests to every route (raw bytes)
  [30, () => ({ kind: 'mutate-raw', req: mutateBuf(templateBytes(pick(templates()))) })],
  // mutations of the body only, framing kept right (reaches the validators)
  [20, () => {
    const t = pick(templates().filter((x) => x.body));
    const b = mutateBuf(Buffer.from(JSON.stringify(t.body)), 1 + ri(3));
    return { kind: 'mutate-body', req: templateBytes(t, { body: b, headers: { 'content-length': String(b.length) } }) };
  }],
  // mutations of the request target only
  [10, () => {
    const t = pick(templates());
    const p = mutateBuf(Buffer.from(t.p, 'latin1'), 1 + ri(3)).toString('latin1').replace(/[\r\n ]/g, '');
    return { kind: 'mutate-target', req: templateBytes(t, { p: p.startsWith('/') ? p : `/${p}` }) };
  }],
];
const WEIGHTED = GENERATORS.flatMap(([w, g]) => Array(w).fill(g));
// HOSTILE_ONLY=kind,kind restricts the flood to some generators (to bisect a finding)
const ONLY_ROUTES = process.env.HOSTILE_ROUTES ? new RegExp(process.env.HOSTILE_ROUTES) : null; // e.g. "^GET /proxy"
const ONLY = process.env.HOSTILE_ONLY ? new Set(process.env.HOSTILE_ONLY.split(',')) : null;
function nextRequest() {
  for (;;) {
    let g;
    try { g = pick(WEIGHTED)(); } catch (e) { if (!ONLY_ROUTES) throw e; continue; } // no usable template
    if (!ONLY || ONLY.has(g.kind)) return g;
  }
}

// ---- setup ----

before(async () => {
  const env = { LATCH_LOG_LEVEL: 'warn', LATCH_TOKEN_TIMEOUT_MS: '3000', LATCH_PROXY_TIMEOUT_MS: '3000', LATCH_CONNECTION_TIMEOUT_S: '5',
    LATCH_HEADER_TIMEOUT_S: '3', LATCH_BODY_TIMEOUT_S: '4' };
  if (process.env.MALLOC_ARENA_MAX) env.MALLOC_ARENA_MAX = process.env.MALLOC_ARENA_MAX; // RSS experiments
  s = await startStack({ env });
  let r = await s.api('POST', '/integrations', { provider: PCK, unique_key: 'hostile-int' });
  assert.equal(r.status, 200, r.text);
  for (let i = 0; i < 50; i++) {
    r = await s.api('POST', '/connections', importBody(`h-${i}`));
    assert.equal(r.status, 201, r.text);
  }
  for (let i = 0; i < 8; i++) sessions.push(await s.createSession());
  console.log(`hostile: seed=${SEED} requests=${TOTAL} concurrency=${CONCURRENCY}`);
});

after(async () => {
  if (failures.length) {
    const f = path.join(s.artifactsDir, `hostile-${SEED}.json`);
    fs.writeFileSync(f, JSON.stringify({ seed: SEED, failures: failures.slice(0, 5000) }, null, 1));
    console.log(`hostile: ${failures.length} failure(s) written to ${f}`);
  }
  if (timeoutSamples.length) fs.writeFileSync(path.join(s.artifactsDir, 'hostile-timeouts.json'), JSON.stringify(timeoutSamples, null, 1));
  if (process.env.HOSTILE_LINGER_MS) {
    // diagnostics: watch latch's RSS and open fds settle after the flood
    const pid = s.latch.child.pid;
    for (let t = 0; t < Number(process.env.HOSTILE_LINGER_MS); t += 10000) {
      console.log(`hostile linger +${t / 1000}s: RSS ${rssKb(pid)} kB, fds ${fs.readdirSync(`/proc/${pid}/fd`).length}`);
      await new Promise((r) => setTimeout(r, 10000));
    }
  }
  console.log('hostile outcomes:', JSON.stringify(Object.fromEntries([...outcomes].sort())));
  await s?.stop();
});

async function healthyWithin(ms) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), ms);
  try {
    const r = await fetch(`${s.latchUrl}/health`, { signal: ctl.signal });
    return r.status === 200;
  } catch {
    return false;
  } finally {
    clearTimeout(t);
  }
}

// ---- 4. SSRF corpus (runs first: it needs the integration untouched) ----

const SSRF = [
  'evil.com', 'ninjarmm.com', 'app.ninjarmm.com.evil.com', 'evilninjarmm.com', 'app-ninjarmm.com', 'app.ninjarmm.co', 'app.ninjarmm.com.',
  'APP.NINJARMM.COM', 'App.NinjaRMM.com', ' app.ninjarmm.com', 'app.ninjarmm.com ', 'app.ninjarmm.com\t',
  'user@app.ninjarmm.com', 'app.ninjarmm.com@evil.com', 'evil.com#app.ninjarmm.com', 'evil.com?app.ninjarmm.com', 'evil.com\\app.ninjarmm.com',
  'app.ninjarmm.com:443', 'app.ninjarmm.com:8443', 'app.ninjarmm.com/ws', 'app.ninjarmm.com/../evil', 'https://app.ninjarmm.com',
  '127.0.0.1', '127.1', '0.0.0.0', '0', '2130706433', '0x7f000001', '0x7f.0.0.1', '017700000001', '0177.0.0.1', '127.000.000.001',
  '169.254.169.254', '169.254.169.254.nip.io', '10.0.0.1', '192.168.1.1', '172.16.0.1', '100.64.0.1', 'localhost', 'localhost.localdomain',
  '[::1]', '::1', '[::ffff:127.0.0.1]', '::ffff:7f00:1', '[0:0:0:0:0:ffff:127.0.0.1]', '[fe80::1%25eth0]', '[64:ff9b::a9fe:a9fe]', '[2002:7f00:1::]',
  'app.ninjarmm.com%2eevil.com', 'app%2Eninjarmm.com', '%61pp.ninjarmm.com', 'app.ninjarmm.com%00.evil.com', 'app.ninjarmm.com\u0000',
  'app.ninjarmm.com\r\nHost: evil.com', 'app.ninjarmm.com\n', 'app.ninjarmm.com\r',
  'app.ninjarmm.com\u3002evil.com', 'app\u3002ninjarmm\u3002com', 'app.ninjarmm.c\u03bfm', '\u0430pp.ninjarmm.com', 'app.ninjarmm.com\u200b',
  'xn--pp-7ka.ninjarmm.com', 'app.ninjarmm.com\uff0eevil.com', '\uff41pp.ninjarmm.com', 'eu.ninjarmm.com.', '.eu.ninjarmm.com', 'eu..ninjarmm.com',
  'x'.repeat(300), '', '*.ninjarmm.com', 'eu.ninjarmm.com,evil.com', 'eu.ninjarmm.com;evil.com', 'eu.ninjarmm.com evil.com',
];

test('SSRF corpus: hostile instances are refused by the link and the import routes, no connection to NinjaOne', async () => {
  assert.ok(SSRF.length >= 50);
  const before = await s.fake.stats();
  const sess = await s.createSession();
  const problems = [];
  let last = before.connections;
  for (const inst of SSRF) {
    // link route (a fresh session now and then: a session allows a bounded number of attempts)
    const tok = (await s.createSession()).token;
    const q = new URLSearchParams({ connect_session_token: tok, 'params[instance]': inst });
    const r1 = await api(s.latchUrl, null, 'POST', `/oauth2/auth/${PCK}?${q}`, { client_id: s.client.client_id, client_secret: s.client.client_secret });
    if (r1.status !== 400) problems.push(`link ${JSON.stringify(inst)}: ${r1.status} ${r1.text.slice(0, 200)}`);
    // import route
    const body = importBody('ssrf');
    body.connection_config = { instance: inst };
    const r2 = await s.api('POST', '/connections', body);
    if (r2.status !== 400) problems.push(`import ${JSON.stringify(inst)}: ${r2.status} ${r2.text.slice(0, 200)}`);
    // raw bytes that URLSearchParams would have escaped
    if (/[\r\n\0 ]/.test(inst)) {
      const raw = build('POST', `/oauth2/auth/${PCK}?connect_session_token=${sess.token}&params[instance]=${inst}`,
        { auth: null, body: { client_id: 'a', client_secret: 'b' } });
      const res = await rawRequest(s.latch.port, raw);
      const rr = judge('ssrf-raw', raw, res);
      if (rr && rr.status < 400) problems.push(`raw link ${JSON.stringify(inst)}: ${rr.status}`);
    }
    const now = (await s.fake.stats()).connections;
    if (now !== last) problems.push(`fake NinjaOne connection count moved ${last} -> ${now} after ${JSON.stringify(inst)}`);
    last = now;
  }
  // secret stays out of error bodies; nothing reached the fake
  const afterStats = await s.fake.stats();
  assert.deepEqual(problems, []);
  assert.equal(afterStats.connections, before.connections, 'the fake NinjaOne saw no connection');
  assert.equal(afterStats.token_requests ?? 0, before.token_requests ?? 0);
  // the valid instance still links (the corpus did not break the route)
  const ok = await s.link((await s.createSession()).token);
  assert.equal(ok.status, 200, ok.text);
});

// ---- 3. the flood ----

test(`${TOTAL} malformed and mutated requests: no 5xx, no crash, no restart, bounded RSS`, { timeout: 600000 }, async () => {
  const pid = s.latch.child.pid;
  const port = s.latch.port;
  let sent = 0;
  let finished = 0;
  let rss10k = 0;
  const t0 = Date.now();
  floodStart = t0;
  let maxLag = 0;
  let lastTick = Date.now();
  const lagTimer = setInterval(() => {
    const now = Date.now();
    maxLag = Math.max(maxLag, now - lastTick - 100);
    lastTick = now;
  }, 100);

  // slowloris: a few sockets trickling a request one byte per second, for a bounded time
  const slow = Array.from({ length: 4 }, () => new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const req = build('GET', '/connections');
    let i = 0;
    let closed = false;
    sock.on('error', () => {});
    sock.on('close', () => { closed = true; });
    const iv = setInterval(() => {
      if (closed || i >= 12) { clearInterval(iv); sock.destroy(); resolve({ closed, bytes: i }); return; }
      sock.write(req.subarray(i, i + 1));
      i++;
    }, 1000);
  }));

  async function worker() {
    while (sent < TOTAL) {
      sent++;
      const g = nextRequest();
      // Half-closed requests get a short wait: under concurrency latch (MHD) sometimes misses the
      // EOF of an incomplete request and holds the socket in CLOSE-WAIT until its idle timeout.
      const must = MUST_ANSWER.has(g.kind);
      const res = await rawRequest(port, g.req, { halfClose: !must, timeoutMs: must ? REQ_TIMEOUT_MS : 400, ...(g.opts || {}) });
      judge(g.kind, g.req, res, g.check);
      finished++;
      if (finished === 10000) rss10k = rssKb(pid);
      if (failures.length > MAX_FAILURES) throw new Error(`too many failures; first: ${JSON.stringify(failures[0])}`);
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const slowResults = await Promise.all(slow);
  clearInterval(lagTimer);
  const secs = (Date.now() - t0) / 1000;
  // Half-sent requests legitimately hold a connection (and its header buffer) until the idle
  // timeout; "flat" means latch returns to its plateau once those are reaped, not that a flood
  // of open sockets costs nothing. Wait one timeout (5 s here) plus latch's memory trim (2 s).
  await new Promise((r) => setTimeout(r, 8000));
  const rssEnd = rssKb(pid);
  console.log(`hostile: ${finished} requests in ${secs.toFixed(1)} s (${(finished / secs).toFixed(0)}/s, max event-loop lag ${maxLag} ms); RSS at 10k ${rss10k} kB, at end ${rssEnd} kB; slowloris ${JSON.stringify(slowResults)}`);

  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} bad responses (seed ${SEED})`);
  assert.ok(finished >= TOTAL);
  assert.equal(s.latch.child.exitCode, null, 'latch exited');
  assert.equal(s.latch.child.signalCode, null, 'latch was killed by a signal');
  assert.equal(s.latch.child.pid, pid, 'latch restarted');
  assert.ok(await healthyWithin(1000), 'GET /health did not answer 200 within 1 s after the flood');
  if (TOTAL >= 10000) {
    assert.ok(rssEnd - rss10k <= RSS_GROWTH_LIMIT_KB, `RSS grew by ${rssEnd - rss10k} kB between the 10k mark and the end`);
  }
  // the API still works for real clients
  const r = await s.api('GET', `/connections/h-1?provider_config_key=${PCK}`);
  // (the flood's mutated requests may have deleted the connection or even the integration)
  assert.ok(r.status === 200 || r.status === 404 || (r.status === 400 && r.json?.error?.code === 'unknown_provider_config'), `${r.status} ${r.text}`);
  const l = await s.api('GET', '/connections');
  assert.equal(l.status, 200);
});

// ---- 5. slow, half-closed and smuggling clients, all at once ----

test('slow senders, half-closed senders and smuggling shapes: no 5xx, nothing held past its deadline, /health answered throughout', { timeout: 120000 }, async () => {
  const port = s.latch.port;
  const authH = { authorization: `Bearer ${s.secretKey}`, 'content-type': 'application/json' };
  const body = JSON.stringify({ end_user: { id: 'u-hostile' } });
  const problems = [];
  // slow senders: heads and bodies one byte every 500 ms (never idle; deadlines 3 s / 4 s)
  const trickle = (bytes, fast) => new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const t0 = Date.now();
    let i = 0;
    let iv = null;
    const got = [];
    const end = (how) => { clearInterval(iv); sock.destroy(); resolve({ how, ms: Date.now() - t0, bytes: Buffer.concat(got) }); };
    sock.on('data', (c) => got.push(c));
    sock.on('error', () => end('closed'));
    sock.on('close', () => end('closed'));
    sock.on('connect', () => {
      sock.write(bytes.subarray(0, fast));
      i = fast;
      iv = setInterval(() => {
        if (i >= bytes.length || Date.now() - t0 > 15000) { end('still-open'); return; }
        sock.write(bytes.subarray(i, i + 1));
        i++;
      }, 500);
    });
  });
  const slowHead = rawBytes('GET', '/connections', { ...authH, 'x-pad': 'p'.repeat(100) });
  const slowBodyReq = rawBytes('POST', '/connect/sessions', { ...authH, 'content-length': String(body.length + 100) }, body.padEnd(body.length + 100));
  const slow = [
    ...Array.from({ length: 6 }, () => trickle(slowHead, 0).then((r) => ({ ...r, kind: 'slow-head', limit: 3000 }))),
    ...Array.from({ length: 6 }, () => trickle(slowBodyReq, slowBodyReq.indexOf('\r\n\r\n') + 4).then((r) => ({ ...r, kind: 'slow-body', limit: 4000 }))),
  ];
  // half-closed senders: incomplete requests, EOF 300 ms later
  const halfShapes = [
    rawBytes('POST', '/connect/sessions', { ...authH, 'content-length': String(body.length + 40) }, body),
    rawBytes('POST', '/integrations', { 'content-type': 'application/json', 'content-length': '5000' }, '{"pro'),
    rawBytes('POST', '/connect/sessions', { ...authH, 'transfer-encoding': 'chunked' }, `${body.length.toString(16)}\r\n${body}\r\n`),
    rawBytes('GET', '/health', { 'x-half': 'incomplete' }).subarray(0, 30),
  ];
  const half = halfShapes.flatMap((req) => Array.from({ length: 4 }, () => exchange(port, req, { halfClose: true, halfCloseAfterMs: 300, timeoutMs: 8000 })
    .then((r) => ({ ...r, kind: 'half-closed', limit: 0 }))));
  // smuggling shapes: 400 and a close, the trailing request never answered
  const smuggle = [
    { 'content-length': [String(body.length), '0'] },
    { 'content-length': String(body.length), 'transfer-encoding': 'chunked' },
    { 'transfer-encoding': 'chunked', 'content-length': '0' },
    { 'transfer-encoding': ['chunked', 'identity'] },
    { 'transfer-encoding': 'xchunked' },
  ].map((h) => exchange(port, Buffer.concat([rawBytes('POST', '/connect/sessions', { ...authH, ...h }, body), rawBytes('GET', '/health')]), { timeoutMs: 5000 })
    .then((r) => ({ ...r, kind: 'smuggle', limit: 0 })));
  // /health from another client address, every 300 ms while all that runs
  let probing = true;
  const probes = [];
  const prober = (async () => {
    while (probing) {
      const t0 = Date.now();
      const h = await exchange(port, rawBytes('GET', '/health', { connection: 'close' }), { localAddress: '127.0.0.2', timeoutMs: 3000 });
      probes.push({ status: h.responses[0]?.status ?? h.how, ms: Date.now() - t0 });
      await new Promise((r) => setTimeout(r, 300));
    }
  })();
  const all = await Promise.all([...slow, ...half, ...smuggle]);
  probing = false;
  await prober;
  for (const r of all) {
    const statuses = r.responses ? r.responses.map((x) => x.status) : [];
    if (r.kind.startsWith('slow')) {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(r.bytes.toString('latin1'));
      if (m && Number(m[1]) >= 500) problems.push(`${r.kind}: ${m[1]}`);
    }
    if (statuses.some((x) => x >= 500)) problems.push(`${r.kind}: ${statuses}`);
    if (r.how !== 'closed') problems.push(`${r.kind}: ${r.how} after ${r.ms} ms`);
    // deadline + 3 s of margin for a loaded machine; half-closed: well below the 5 s idle timeout
    else if (r.limit > 0 && r.ms > r.limit + 3000) problems.push(`${r.kind}: closed after ${r.ms} ms (deadline ${r.limit} ms)`);
    else if (r.kind === 'half-closed' && r.ms > 3000) problems.push(`half-closed: closed after ${r.ms} ms`);
    if (r.kind === 'smuggle' && (statuses.length !== 1 || statuses[0] !== 400)) problems.push(`smuggle: answers ${statuses}`);
  }
  const badProbes = probes.filter((p) => p.status !== 200);
  assert.deepEqual(problems, []);
  assert.ok(probes.length >= 5, `only ${probes.length} /health probes`);
  assert.deepEqual(badProbes, [], `/health from 127.0.0.2 failed: ${JSON.stringify(badProbes.slice(0, 5))}`);
});
