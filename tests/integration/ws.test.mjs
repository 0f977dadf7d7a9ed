// The WebSocket endpoint @nangohq/frontend's auth() opens (src/net/ws.c behind http_server's
// upgrade hook), over a real latch process: the connection_ack Nango sends, handshakes that must
// be refused with a 4xx (and never crash latch), the bounds (frame size, idle deadline, max
// clients), 200 sockets dropped abruptly, and the unchanged frontend SDK in headless Chromium
// from a page on another origin. Delivery of a published message (no public trigger exists yet)
// is covered by tests/unit/test_ws.c.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { chromium } from 'playwright-core';
import { startLatch, tmpDir, freePort } from './lib/stack.mjs';
import { exchange, rawRequest } from './lib/raw.mjs';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const IDLE_S = 2;
const MAX_CLIENTS = 40;

let l;
let metricsPort;
before(async () => {
  metricsPort = await freePort();
  l = await startLatch({
    dir: tmpDir('ws-'),
    env: {
      LATCH_WS_IDLE_S: String(IDLE_S),
      LATCH_WS_MAX_CLIENTS: String(MAX_CLIENTS),
      LATCH_METRICS_BIND: `127.0.0.1:${metricsPort}`,
      // short HTTP deadlines: an upgraded socket must outlive them (the reaper and MHD's idle
      // timeout leave it alone), which the idle test's live client checks
      LATCH_HEADER_TIMEOUT_S: '1',
      LATCH_CONNECTION_TIMEOUT_S: '1',
    },
  });
});
after(async () => { await l?.stop(); });

const wsUrl = (p = '/') => `ws://127.0.0.1:${l.port}${p}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Opens a client; resolves {ws, ack, messages, closed} once the first message arrived. */
function connect(opts = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(), opts);
    const messages = [];
    const closed = new Promise((r) => ws.once('close', (code, reason) => r({ code, reason: String(reason) })));
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
    });
    ws.once('error', reject);
    ws.on('message', (m) => {
      messages.push(JSON.parse(String(m)));
      if (messages.length === 1) resolve({ ws, ack: messages[0], messages, closed });
    });
  });
}

async function wsClientsGauge() {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const m = /^latch_ws_clients (\d+)/m.exec(text);
  assert.ok(m, 'latch_ws_clients on /metrics');
  return Number(m[1]);
}

/** The promise's value, or a failure after ms (a broken bound must fail, not hang). */
function within(promise, ms, what) {
  let t;
  return Promise.race([promise.finally(() => clearTimeout(t)),
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), ms); })]);
}

async function waitFor(pred, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

test('connection_ack with a random UUID id, as Nango; two clients get different ids', async () => {
  const a = await connect();
  const b = await connect();
  for (const c of [a, b]) {
    assert.deepEqual(Object.keys(c.ack).sort(), ['message_type', 'ws_client_id']);
    assert.equal(c.ack.message_type, 'connection_ack');
    assert.match(c.ack.ws_client_id, UUID_V4);
  }
  assert.notEqual(a.ack.ws_client_id, b.ack.ws_client_id);
  assert.equal(await wsClientsGauge(), 2);
  // a client's close is answered and the socket released
  a.ws.close(1000);
  b.ws.close(1000);
  assert.equal((await a.closed).code, 1000);
  assert.equal((await b.closed).code, 1000);
  await waitFor(async () => (await wsClientsGauge()) === 0, 5000, 'the sockets to be released');
});

test('a plain GET of the WebSocket path still gets the API answer it got before (404 JSON)', async () => {
  const r = await fetch(`${l.url}/`);
  assert.equal(r.status, 404);
  assert.equal((await r.json()).error.code, 'not_found');
  const h = await fetch(`${l.url}/health`);
  assert.equal(h.status, 200);
});

test('malformed handshakes get a 4xx JSON error and a close, never a 5xx or a crash', async () => {
  const key = randomBytes(16).toString('base64');
  const good = { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': key };
  const cases = [
    [{ ...good, 'sec-websocket-key': undefined }, 400],
    [{ ...good, 'sec-websocket-key': randomBytes(15).toString('base64') }, 400],
    [{ ...good, 'sec-websocket-key': randomBytes(17).toString('base64') }, 400],
    [{ ...good, 'sec-websocket-key': 'not base64 at all!!!!!!=' }, 400],
    [{ ...good, 'sec-websocket-key': `${key}, ${key}` }, 400],
    [{ ...good, 'sec-websocket-version': '8' }, 426],
    [{ ...good, 'sec-websocket-version': undefined }, 426],
    [{ ...good, upgrade: 'h2c' }, 400],
    [{ ...good, connection: 'keep-alive' }, 400],
    [{ ...good, connection: undefined }, 400],
    [{ ...good, 'content-length': '5' }, 400, 'hello'],
  ];
  for (const [hdrs, status, body] of cases) {
    const h = Object.fromEntries(Object.entries(hdrs).filter(([, v]) => v !== undefined));
    const r = await exchange(l.port, rawRequest('GET', '/', h, body), { timeoutMs: 5000 });
    assert.equal(r.responses.length, 1, `one answer for ${JSON.stringify(h)}: ${r.bytes.toString('latin1').slice(0, 300)}`);
    const res = r.responses[0];
    assert.equal(res.status, status, `${JSON.stringify(h)} -> ${res.status} ${res.body}`);
    assert.ok(JSON.parse(res.body).error.code, 'a JSON error');
    assert.match(res.headers.connection ?? '', /close/i);
    assert.equal(r.how, 'closed');
    if (status === 426) assert.equal(res.headers['sec-websocket-version'], '13');
  }
  // HTTP/1.0 cannot upgrade: refused without a 101, connection closed
  const r10 = await exchange(l.port, rawRequest('GET', '/', good, undefined, 'HTTP/1.0'), { timeoutMs: 5000 });
  assert.equal(r10.how, 'closed');
  assert.equal(r10.responses.length, 1, `HTTP/1.0: ${r10.bytes.toString('latin1').slice(0, 300)}`);
  assert.equal(r10.responses[0].status, 400);
  // another path with Upgrade is not the endpoint: the API answers
  const other = await exchange(l.port, rawRequest('GET', '/health', good), { timeoutMs: 5000 });
  assert.equal(other.responses[0].status, 200);
  // a well-formed raw handshake gets 101 with the RFC 6455 accept value
  const ok = await exchange(l.port, rawRequest('GET', '/', good), { timeoutMs: 1000 });
  const head = ok.bytes.toString('latin1');
  assert.match(head, /^HTTP\/1\.1 101 /);
  const { createHash } = await import('node:crypto');
  const want = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  assert.match(head, new RegExp(`\r\nSec-WebSocket-Accept: ${want.replace(/[+/]/g, '\\$&')}\r\n`, 'i'));
  assert.match(head, /\r\nUpgrade: websocket\r\n/i);
  assert.equal((await fetch(`${l.url}/health`)).status, 200);
});

test('a message or frame larger than the limit closes the socket with 1009', async () => {
  const a = await connect();
  a.ws.send('x'.repeat(4096));
  assert.equal((await within(a.closed, 10000, 'the close after a large message')).code, 1009);
  // a frame header announcing 2^40 bytes: closed at once, nothing buffered
  const b = await connect();
  const sock = b.ws._socket;
  const hdr = Buffer.from([0x82, 0xff, 0, 0, 0x01, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
  sock.write(hdr);
  const c = await within(b.closed, 10000, 'the close after a huge frame header');
  assert.ok(c.code === 1009 || c.code === 1006, `closed: ${c.code}`);
  assert.equal((await fetch(`${l.url}/health`)).status, 200);
});

test('a client that answers no ping is dropped after the idle time; one that answers stays', async () => {
  const dead = await connect({ autoPong: false });
  const live = await connect();
  const t0 = Date.now();
  const c = await within(dead.closed, IDLE_S * 1000 * 5 + 10000, 'the idle client to be dropped');
  const took = Date.now() - t0;
  assert.ok(took >= IDLE_S * 1000 - 500, `dropped after ${took} ms`);
  assert.ok([1001, 1006].includes(c.code), `close code ${c.code}`);
  // the live one answered its pings (the ws package pongs by itself, as browsers do)
  await sleep(IDLE_S * 1000 * 2);
  assert.equal(live.ws.readyState, WebSocket.OPEN, 'a client answering pings is kept');
  live.ws.close();
  await live.closed;
});

test('max clients: beyond LATCH_WS_MAX_CLIENTS the handshake gets 503; room again once one leaves', async () => {
  const held = [];
  for (let i = 0; i < MAX_CLIENTS; i++) held.push(await connect());
  await assert.rejects(connect(), (e) => e.status === 503 && JSON.parse(e.body).error.code === 'too_many_websockets');
  held[0].ws.close();
  await held[0].closed;
  await waitFor(async () => (await wsClientsGauge()) < MAX_CLIENTS, 5000, 'a free slot');
  const again = await connect();
  assert.match(again.ack.ws_client_id, UUID_V4);
  for (const h of [...held.slice(1), again]) h.ws.terminate();
  await waitFor(async () => (await wsClientsGauge()) === 0, 10000, 'every socket released');
});

test('200 sockets opened and dropped abruptly: latch stays up and releases every one', async () => {
  const key = () => randomBytes(16).toString('base64');
  const hs = () => rawRequest('GET', '/', { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': key() });
  const kinds = [
    // after the ack: reset without a close frame
    async () => { const c = await connect(); c.ws.terminate(); },
    // in the middle of the handshake
    () => new Promise((r) => { const s = net.connect(l.port, '127.0.0.1', () => { s.write(hs().subarray(0, 40)); s.destroy(); r(); }); s.on('error', r); }),
    // handshake and half a frame in one write, then gone
    () => new Promise((r) => { const s = net.connect(l.port, '127.0.0.1', () => { s.write(Buffer.concat([hs(), Buffer.from([0x81, 0x85, 1, 2])])); setTimeout(() => { s.destroy(); r(); }, 5); }); s.on('error', r); }),
    // handshake, then RST via resetAndDestroy
    () => new Promise((r) => { const s = net.connect(l.port, '127.0.0.1', () => { s.write(hs()); s.once('data', () => { s.resetAndDestroy(); r(); }); }); s.on('error', r); }),
  ];
  const jobs = [];
  for (let i = 0; i < 200; i++) jobs.push(kinds[i % kinds.length]().catch(() => {}));
  // in waves, so the max-clients bound is not what ends them
  for (let i = 0; i < jobs.length; i += 20) await Promise.all(jobs.slice(i, i + 20));
  await waitFor(async () => (await wsClientsGauge()) === 0, 15000, 'every socket released');
  assert.equal((await fetch(`${l.url}/health`)).status, 200);
  const c = await connect();
  assert.match(c.ack.ws_client_id, UUID_V4);
  c.ws.close();
  await c.closed;
});

test('Chromium: @nangohq/frontend from another origin reads the ack and opens the popup with the id', async () => {
  const dist = path.join(import.meta.dirname, 'node_modules/@nangohq/frontend/dist');
  const page = `<!doctype html><meta charset="utf-8"><title>host</title><script type="module">
import Nango from './index.js';
import { AuthorizationModal } from './authModal.js';
window.nango = new Nango({ host: ${JSON.stringify(l.url)}, connectSessionToken: 'nango_connect_session_x' });
window.probeAck = () => new Promise((resolve, reject) => {
  const m = new AuthorizationModal({ baseUrl: new URL(${JSON.stringify(l.url)} + '/oauth/connect/k'), debug: false,
    webSocketUrl: window.nango.websocketsBaseUrl, successHandler: resolve, errorHandler: (t, d) => reject(new Error(t + ': ' + d)) });
  m.swClient.addEventListener('message', (ev) => {
    resolve({ raw: JSON.parse(ev.data), id: m.baseURL.searchParams.get('ws_client_id'), url: m.swClient.url });
  }, { once: true });
  m.swClient.addEventListener('error', () => reject(new Error('websocket error')));
});
</script>`;
  const srv = http.createServer((req, res) => {
    const name = req.url === '/' ? null : path.basename(req.url.split('?')[0]);
    if (name === null) { res.writeHead(200, { 'content-type': 'text/html' }); res.end(page); return; }
    const f = path.join(dist, name);
    if (!name.endsWith('.js') || !fs.existsSync(f)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(fs.readFileSync(f));
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const hostOrigin = `http://localhost:${srv.address().port}`; // another origin than latch's
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  try {
    const ctx = await browser.newContext();
    const p = await ctx.newPage();
    await p.goto(`${hostOrigin}/`);
    await p.waitForFunction(() => window.nango !== undefined);
    // the SDK's own parsing: AuthorizationModal puts the ack's id into the popup URL
    const r = await p.evaluate(() => window.probeAck());
    assert.equal(r.url, `ws://127.0.0.1:${l.port}/`);
    assert.equal(r.raw.message_type, 'connection_ack');
    assert.match(r.id, UUID_V4);
    assert.equal(r.id, r.raw.ws_client_id);
    // and the whole auth(): the popup is sent to /oauth/connect/<key>?...&ws_client_id=<id>
    const popupP = p.waitForEvent('popup');
    await p.evaluate(() => { window.authResult = window.nango.auth('some-key').catch((e) => ({ error: e.type })); });
    const popup = await popupP;
    await popup.waitForURL(/ws_client_id=/, { timeout: 10000 });
    const u = new URL(popup.url());
    assert.equal(u.origin, l.url);
    assert.equal(u.pathname, '/oauth/connect/some-key');
    assert.match(u.searchParams.get('ws_client_id'), UUID_V4);
    assert.equal(u.searchParams.get('connect_session_token'), 'nango_connect_session_x');
    await popup.close();
  } finally {
    await browser.close();
    await new Promise((r) => srv.close(r));
  }
});

test('SIGTERM with clients held: each gets close 1001, latch exits 0 (no sanitizer report)', async () => {
  const held = [];
  for (let i = 0; i < 5; i++) held.push(await connect());
  await l.stop('SIGTERM'); // throws on a non-zero exit or a sanitizer report in the log
  for (const h of held) {
    const c = await within(h.closed, 10000, 'the close at shutdown');
    assert.ok([1001, 1006].includes(c.code), `close code ${c.code}`);
  }
  assert.ok(held.some((h) => h.messages.length === 1));
  assert.match(fs.readFileSync(l.logPath, 'utf8'), /msg="ws client closed" id=\S+ reason=server_stopping/);
});
