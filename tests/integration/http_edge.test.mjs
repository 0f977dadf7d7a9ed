// The HTTP layer against clients that misbehave on purpose, one shape at a time (the hostile
// suite floods the same shapes at random): ambiguous framing (request smuggling), clients that
// half-close in the middle of a request, slow clients that hold connection slots, and bodies
// sent before the credentials are checked. Every case: a 4xx or a close, never a 5xx, never a
// connection held past its deadline.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack } from './lib/stack.mjs';
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
