// The HTTP layer against clients that misbehave on purpose, one shape at a time (the hostile
// suite floods the same shapes at random): ambiguous framing (request smuggling), clients that
// half-close in the middle of a request, slow clients that hold connection slots, and bodies
// sent before the credentials are checked. Every case: a 4xx or a close, never a 5xx, never a
// connection held past its deadline.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { startStack, startLatch, tmpDir } from './lib/stack.mjs';
import { exchange, rawRequest } from './lib/raw.mjs';

let s;
before(async () => { s = await startStack({ createIntegration: false }); });
after(async () => { await s?.stop(); });

const auth = () => ({ authorization: `Bearer ${s.secretKey}`, 'content-type': 'application/json' });
const HEALTH = rawRequest('GET', '/health');

test('framing: duplicate Content-Length gets 400 and the connection is closed (no second request)', async () => {
  const body = JSON.stringify({ end_user: { id: 'u-framing' } });
  for (const cls of [[String(body.length), '5'], [String(body.length), String(body.length)]]) {
    const req = Buffer.concat([rawRequest('POST', '/connect/sessions', { ...auth(), 'content-length': cls }, body), HEALTH]);
    const r = await exchange(s.latch.port, req, { timeoutMs: 5000 });
    assert.equal(r.how, 'closed', `connection must be closed, got ${r.how}: ${r.bytes.toString('latin1').slice(0, 300)}`);
    assert.equal(r.responses.length, 1, `one answer only: ${r.bytes.toString('latin1').slice(0, 600)}`);
    assert.equal(r.responses[0].status, 400);
    assert.equal(JSON.parse(r.responses[0].body).error.code, 'invalid_request');
    assert.match(r.responses[0].headers.connection ?? '', /close/i);
  }
});

test('framing: Content-Length with Transfer-Encoding, or an odd Transfer-Encoding, gets 400 and a close', async () => {
  const body = JSON.stringify({ end_user: { id: 'u-framing' } });
  const chunked = `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
  const shapes = [
    { 'transfer-encoding': 'chunked', 'content-length': '5' },
    { 'content-length': '5', 'transfer-encoding': 'chunked' },
    { 'transfer-encoding': ['chunked', 'chunked'] },
    { 'transfer-encoding': 'gzip, chunked' },
    { 'transfer-encoding': 'chunked, identity' },
  ];
  for (const h of shapes) {
    const req = Buffer.concat([rawRequest('POST', '/connect/sessions', { ...auth(), ...h }, chunked), HEALTH]);
    const r = await exchange(s.latch.port, req, { timeoutMs: 5000 });
    const text = r.bytes.toString('latin1').slice(0, 600);
    assert.equal(r.how, 'closed', `${JSON.stringify(h)}: connection must be closed, got ${r.how}: ${text}`);
    assert.equal(r.responses.length, 1, `${JSON.stringify(h)}: one answer only: ${text}`);
    assert.equal(r.responses[0].status, 400, `${JSON.stringify(h)}: ${text}`);
  }
  // chunked on HTTP/1.0 is not a thing
  const r10 = await exchange(s.latch.port, rawRequest('POST', '/connect/sessions', { ...auth(), 'transfer-encoding': 'chunked' }, chunked, 'HTTP/1.0'));
  assert.equal(r10.responses[0]?.status, 400, r10.bytes.toString('latin1').slice(0, 300));
  // the plain shapes still work, and keep the connection
  const ok = await exchange(s.latch.port, Buffer.concat([rawRequest('POST', '/connect/sessions', { ...auth(), 'transfer-encoding': 'chunked' }, chunked), HEALTH]), { timeoutMs: 1500 });
  assert.deepEqual(ok.responses.map((x) => x.status), [201, 200], ok.bytes.toString('latin1').slice(0, 600));
});

test('half-closed clients: a request that can no longer complete is closed at once, not at the idle timeout', async () => {
  // LATCH_CONNECTION_TIMEOUT_S is 10 here: anything near that is the bug
  const body = JSON.stringify({ end_user: { id: 'u-half' } });
  const shapes = {
    'short Content-Length body': rawRequest('POST', '/connect/sessions', { ...auth(), 'content-length': String(body.length + 50) }, body),
    'unauthenticated, short body': rawRequest('POST', '/connect/sessions', { 'content-type': 'application/json', 'content-length': '1000' }, body.slice(0, 10)),
    'headers only, body owed': rawRequest('POST', '/integrations', { ...auth(), 'content-length': '200' }),
    'chunked without the last chunk': rawRequest('POST', '/connect/sessions', { ...auth(), 'transfer-encoding': 'chunked' }, `${body.length.toString(16)}\r\n${body}\r\n`),
    'chunked, cut inside a chunk': rawRequest('POST', '/connect/sessions', { ...auth(), 'transfer-encoding': 'chunked' }, `ff\r\n${body}`),
  };
  // One at a time after a quiet moment: MHD 0.9.75 misses such an EOF when it is the only
  // event on an idle pool thread (with other traffic it usually notices it).
  const results = [];
  for (const [name, req] of Object.entries(shapes)) {
    for (const after of [0, 300]) {
      await new Promise((r) => setTimeout(r, 1200));
      results.push([`${name} (EOF after ${after} ms)`, await exchange(s.latch.port, req, { halfClose: true, halfCloseAfterMs: after, timeoutMs: 6000 })]);
    }
  }
  for (const [name, r] of results) {
    const text = r.bytes.toString('latin1').slice(0, 300);
    assert.equal(r.how, 'closed', `${name}: still open after 6 s: ${text}`);
    assert.ok(r.ms < 3000, `${name}: closed after ${r.ms} ms`);
    for (const x of r.responses) assert.ok(x.status < 500, `${name}: ${x.status}`);
  }
  // a complete request followed by EOF is still answered (and the connection then closed)
  for (const after of [0, 300]) {
    await new Promise((r) => setTimeout(r, 1200));
    const full = await exchange(s.latch.port, rawRequest('POST', '/connect/sessions', { ...auth(), 'content-length': String(body.length) }, body), { halfClose: true, halfCloseAfterMs: after, timeoutMs: 5000 });
    assert.equal(full.responses[0]?.status, 201, full.bytes.toString('latin1').slice(0, 300));
    const get = await exchange(s.latch.port, rawRequest('GET', '/health'), { halfClose: true, halfCloseAfterMs: after, timeoutMs: 5000 });
    assert.equal(get.responses[0]?.status, 200);
    assert.equal(get.how, 'closed', 'a kept-alive connection whose client sent EOF is closed');
    assert.ok(get.ms < 3000, `kept-alive connection after EOF closed after ${get.ms} ms`);
  }
});

test('slow clients: one address cannot take every slot; heads and bodies have deadlines however steadily they trickle', { timeout: 120000 }, async () => {
  const dir = tmpDir('latch-slow-');
  const l = await startLatch({ dir, env: {
    LATCH_SECRET_KEY: s.secretKey, LATCH_LOG_LEVEL: 'info', LATCH_MAX_CONNECTIONS: '16', LATCH_MAX_CONNECTIONS_PER_IP: '8',
    LATCH_HEADER_TIMEOUT_S: '2', LATCH_BODY_TIMEOUT_S: '3', LATCH_CONNECTION_TIMEOUT_S: '30',
  } });
  try {
    // 16 sockets from 127.0.0.1, each trickling a request one byte every 400 ms (never idle)
    const head = Buffer.from(rawRequest('GET', '/connections', { authorization: `Bearer ${s.secretKey}`, 'x-pad': 'p'.repeat(200) }));
    const body = JSON.stringify({ end_user: { id: 'u-slow' } }).padEnd(200, ' ');
    const slowBody = Buffer.from(rawRequest('POST', '/connect/sessions', { authorization: `Bearer ${s.secretKey}`, 'content-type': 'application/json', 'content-length': String(body.length) }, body));
    const trickle = (bytes, fast) => new Promise((resolve) => {
      const sock = net.connect({ port: l.port, host: '127.0.0.1' });
      const t0 = Date.now();
      let i = 0;
      let iv = null;
      const end = (how) => { clearInterval(iv); sock.destroy(); resolve({ how, ms: Date.now() - t0, sent: i }); };
      sock.on('error', () => end('closed'));
      sock.on('close', () => end('closed'));
      sock.on('connect', () => {
        if (fast) { sock.write(bytes.subarray(0, fast)); i = fast; }
        iv = setInterval(() => {
          if (i >= bytes.length || Date.now() - t0 > 20000) { end('still-open'); return; }
          sock.write(bytes.subarray(i, i + 1));
          i++;
        }, 400);
      });
    });
    const heads = Array.from({ length: 16 }, () => trickle(head, 0));
    // /health from another client address stays reachable the whole time
    const probes = [];
    for (let t = 0; t < 8; t++) {
      await new Promise((r) => setTimeout(r, 500));
      const h = await exchange(l.port, rawRequest('GET', '/health', { connection: 'close' }), { localAddress: '127.0.0.2', timeoutMs: 3000 });
      probes.push(h.responses[0]?.status ?? h.how);
    }
    assert.deepEqual(probes, Array(8).fill(200), `/health from 127.0.0.2 while 16 slow sockets ran: ${probes}`);
    const hr = await Promise.all(heads);
    for (const r of hr) {
      assert.equal(r.how, 'closed', `a trickled head still open after ${r.ms} ms (${r.sent} bytes sent)`);
      assert.ok(r.ms < 2000 + 3000, `trickled head closed after ${r.ms} ms (deadline 2 s)`);
    }
    // a body trickled after a complete head: closed at the body deadline (3 s from the request line)
    const headLen = slowBody.indexOf('\r\n\r\n') + 4;
    const br = await Promise.all(Array.from({ length: 3 }, () => trickle(slowBody, headLen)));
    for (const r of br) {
      assert.equal(r.how, 'closed', `a trickled body still open after ${r.ms} ms`);
      assert.ok(r.ms >= 2500 && r.ms < 3000 + 3000, `trickled body closed after ${r.ms} ms (deadline 3 s)`);
    }
    // a normal request is not affected
    const ok = await exchange(l.port, rawRequest('GET', '/health', { connection: 'close' }));
    assert.equal(ok.responses[0]?.status, 200);
  } finally {
    await l.stop();
  }
});

test('bodies before auth: credentials are checked at the headers, the body is never read without them', async () => {
  const big = String(1024 * 1024 - 1);
  const shapes = {
    'no credentials': rawRequest('POST', '/integrations', { 'content-type': 'application/json', 'content-length': big }),
    'unknown secret key': rawRequest('POST', '/connections', { authorization: 'Bearer 2b2b1e3c-9d0a-4f2e-8a41-5e6f7a8b9c0d', 'content-type': 'application/json', 'content-length': big }),
    'bogus session, chunked': rawRequest('POST', `/oauth2/auth/ninjaone-rmm?connect_session_token=nango_connect_session_${'0'.repeat(64)}`, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }),
  };
  for (const [name, req] of Object.entries(shapes)) {
    // only the head is sent: the answer must not wait for the megabyte announced
    const r = await exchange(s.latch.port, req, { timeoutMs: 4000 });
    const text = r.bytes.toString('latin1').slice(0, 300);
    assert.equal(r.responses[0]?.status, 401, `${name}: ${r.how} ${text}`);
    assert.equal(r.how, 'closed', `${name}: connection kept for a body nobody will read`);
  }
});

test('bodies before auth: a global budget for buffered bodies answers 503 with Retry-After past it', { timeout: 60000 }, async () => {
  const dir = tmpDir('latch-budget-');
  const l = await startLatch({ dir, env: { LATCH_SECRET_KEY: s.secretKey, LATCH_LOG_LEVEL: 'info', LATCH_BODY_BUDGET_MB: '1' } });
  try {
    const upload = (n) => rawRequest('POST', '/connect/sessions', { authorization: `Bearer ${s.secretKey}`, 'content-type': 'application/json', 'content-length': String(n) }, '{"end_user":');
    // the first holds 700 kB of the 1 MiB budget (its body is still being "sent")
    const first = net.connect({ port: l.port, host: '127.0.0.1' });
    first.on('error', () => {});
    await new Promise((r) => first.on('connect', r));
    first.write(upload(700000));
    await new Promise((r) => setTimeout(r, 300));
    const second = await exchange(l.port, upload(700000), { timeoutMs: 4000 });
    assert.equal(second.responses[0]?.status, 503, second.bytes.toString('latin1').slice(0, 300));
    assert.equal(JSON.parse(second.responses[0].body).error.code, 'server_busy');
    assert.ok(Number(second.responses[0].headers['retry-after']) >= 1);
    // released when the first ends: a small body fits again
    first.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const body = JSON.stringify({ end_user: { id: 'u-budget' } });
    const ok = await exchange(l.port, rawRequest('POST', '/connect/sessions', { authorization: `Bearer ${s.secretKey}`, 'content-type': 'application/json', connection: 'close', 'content-length': String(body.length) }, body));
    assert.equal(ok.responses[0]?.status, 201, ok.bytes.toString('latin1').slice(0, 300));
  } finally {
    await l.stop();
  }
});

test('core dumps: latch serve is not dumpable and has no core limit, unless LATCH_ALLOW_CORE_DUMPS', async () => {
  const pid = s.latch.child.pid;
  const limits = fs.readFileSync(`/proc/${pid}/limits`, 'utf8');
  assert.match(limits, /^Max core file size\s+0\s+0\s/m, limits);
  assert.match(s.logs(), /msg="core dumps" dumpable=0 core_limit=0/);
  const dir = tmpDir('latch-core-');
  const l = await startLatch({ dir, env: { LATCH_SECRET_KEY: s.secretKey, LATCH_LOG_LEVEL: 'info', LATCH_ALLOW_CORE_DUMPS: 'true' } });
  try {
    assert.match(fs.readFileSync(l.logPath, 'utf8'), /msg="core dumps" dumpable=1 /);
  } finally {
    await l.stop();
  }
});
