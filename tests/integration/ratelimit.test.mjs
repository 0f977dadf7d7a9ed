// Rate limits: per environment on secret-key routes, per client IP on the Connect UI routes,
// Nango's X-RateLimit-* headers and a 429 with Retry-After; one environment's flood does not
// consume another's budget.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { startStack, api, LATCH_BIN } from './lib/stack.mjs';
import { burst, request } from './lib/load.mjs';

let s;
before(async () => { s = await startStack({ env: { LATCH_RATE_LIMIT_ENV: '20', LATCH_RATE_LIMIT_IP: '10' } }); });
after(async () => { await s?.stop(); });

test('per-environment limit: 429 with Retry-After and X-RateLimit-*; other environments unaffected', async () => {
  const out = execFileSync(LATCH_BIN, ['env', 'create', 'other'], { env: s.cliEnv() }).toString();
  const otherKey = out.match(/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/)[0];
  await new Promise((r) => setTimeout(r, 2100)); // full buckets
  const flood = await burst(120, async (i, agent) => {
    const t0 = Date.now();
    const r = await request(`${s.latchUrl}/integrations`, { agent, headers: { authorization: `Bearer ${s.secretKey}` } });
    r.ms = Date.now() - t0;
    return r;
  }, { sockets: 120 });
  const limited = flood.filter((r) => r.status === 429);
  // the tarpit: every 429 leaves after LATCH_RATE_LIMIT_DELAY_MS (250 ms by default)
  assert.ok(limited.every((r) => r.ms >= 240), `429 answered after ${Math.min(...limited.map((r) => r.ms))} ms`);
  assert.ok(limited.length >= 60, `429s: ${limited.length}`);
  assert.ok(flood.filter((r) => r.status === 200).length >= 40, 'the burst allowance is served');
  const l = limited[0];
  assert.equal(l.json.error.code, 'too_many_requests');
  assert.ok(Number(l.headers['retry-after']) >= 1);
  assert.equal(l.headers['x-ratelimit-limit'], '40');
  assert.equal(l.headers['x-ratelimit-remaining'], '0');
  assert.ok(flood[0].headers['x-ratelimit-reset'] !== undefined);
  const other = await api(s.latchUrl, otherKey, 'GET', '/integrations');
  assert.equal(other.status, 200, 'another environment keeps its own budget');
  const health = await api(s.latchUrl, null, 'GET', '/health');
  assert.equal(health.status, 200, '/health is never limited');
  await new Promise((r) => setTimeout(r, 1100));
  const again = await s.api('GET', '/integrations');
  assert.equal(again.status, 200, 'the bucket refills');
});

test('per-IP limit on the Connect UI routes', async () => {
  await new Promise((r) => setTimeout(r, 2100));
  const d = await s.createSession({ end_user: { id: 'rl' } });
  const res = await burst(60, (i, agent) => request(`${s.latchUrl}/connect/session`, { agent, headers: { authorization: `Bearer ${d.token}` } }), { sockets: 8 });
  assert.ok(res.some((r) => r.status === 429), 'limited');
  assert.ok(res.filter((r) => r.status === 200).length >= 20);
});

test('a flooding client is slowed down by the delayed 429s instead of costing CPU', async () => {
  await new Promise((r) => setTimeout(r, 2100)); // full buckets
  // 16 connections, each looping as fast as latch answers, for 1.5 s
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const counts = { 200: 0, 429: 0, other: 0 };
  const end = Date.now() + 1500;
  try {
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (Date.now() < end) {
        const r = await request(`${s.latchUrl}/integrations`, { agent, headers: { authorization: `Bearer ${s.secretKey}` } });
        counts[r.status === 200 || r.status === 429 ? r.status : 'other']++;
      }
    }));
  } finally {
    agent.destroy();
  }
  // each connection can receive at most one 429 per 250 ms: 16 x (1.5 s / 0.25 s + 1) = 112;
  // answered at once, the same loop gets thousands
  assert.ok(counts[429] > 0 && counts[429] <= 112, JSON.stringify(counts));
  assert.ok(counts[200] >= 40, `the budget (burst 40 + 20/s) is still served: ${JSON.stringify(counts)}`);
  assert.equal(counts.other, 0);
});

// Issue 15 item 7: failed authentications have their own bucket, so a flood of bogus session
// tokens from one address (every end user behind one reverse proxy shares it) cannot use up the
// budget of the valid sessions coming from there.
test('bogus session tokens do not use up the per-IP budget of valid ones', async () => {
  // 1/s, bursts of 2 for both buckets, 429 at once: no refill between the flood and the check
  const p = await startStack({ env: { LATCH_RATE_LIMIT_IP: '1', LATCH_RATE_LIMIT_AUTH_FAIL: '1', LATCH_RATE_LIMIT_DELAY_MS: '0' } });
  try {
    const d = await p.createSession({ end_user: { id: 'rl-bogus' } });
    const bogus = `nango_connect_session_${'0'.repeat(64)}`;
    const res = await burst(8, (i, agent) => request(`${p.latchUrl}/connect/session`, { agent, headers: { authorization: `Bearer ${bogus}` } }), { sockets: 2 });
    const st = res.map((r) => r.status);
    assert.equal(st.filter((x) => x === 401).length, 2, `failures are answered 401 up to their own burst: ${st}`);
    assert.equal(st.filter((x) => x === 429).length, 6, `and 429 past it (LATCH_RATE_LIMIT_AUTH_FAIL): ${st}`);
    const ok = await request(`${p.latchUrl}/connect/session`, { headers: { authorization: `Bearer ${d.token}` } });
    assert.equal(ok.status, 200, 'the valid session from the same address is still served');
    // malformed and missing credentials count as failures too
    const bad = await request(`${p.latchUrl}/connect/session`, { headers: { authorization: 'Bearer nope' } });
    assert.equal(bad.status, 429);
  } finally {
    await p.stop();
  }
});

test('X-Forwarded-For is ignored from a peer that is not a trusted proxy', async () => {
  await new Promise((r) => setTimeout(r, 2100));
  const d = await s.createSession({ end_user: { id: 'rl-spoof' } });
  const get = (xff, agent) => request(`${s.latchUrl}/connect/session`, { agent, headers: { authorization: `Bearer ${d.token}`, 'x-forwarded-for': xff } });
  const res = await burst(40, (i, agent) => get('203.0.113.5', agent), { sockets: 8 });
  assert.ok(res.some((r) => r.status === 429), 'limited');
  // a fresh bucket would have 19 of 20 left; the shared one has at most what refilled meanwhile
  const other = await get('203.0.113.77');
  assert.ok(Number(other.headers['x-ratelimit-remaining']) < 10, `a made-up client address gets no fresh bucket: ${other.headers['x-ratelimit-remaining']}`);
});

test('behind a trusted proxy each client (right-most untrusted X-Forwarded-For entry) has its own bucket', async () => {
  // 1/s, bursts of 2, 429 at once: a refill cannot happen between a flood and the check after it
  const p = await startStack({ env: { LATCH_RATE_LIMIT_IP: '1', LATCH_RATE_LIMIT_DELAY_MS: '0', LATCH_TRUSTED_PROXIES: '10.9.9.0/24, 127.0.0.1' } });
  try {
    const d = await p.createSession({ end_user: { id: 'rl-proxy' } });
    const get = (xff, agent) => request(`${p.latchUrl}/connect/session`, { agent, headers: { authorization: `Bearer ${d.token}`, 'x-forwarded-for': xff } });
    const floodA = async () => {
      const a = await burst(6, (i, agent) => get('203.0.113.5', agent), { sockets: 2 });
      assert.ok(a.some((r) => r.status === 429), 'client A is limited');
    };
    await floodA();
    assert.equal((await get('203.0.113.6')).status, 200, 'client B behind the same proxy is not');
    // A cannot escape by prepending an address: the proxy appends the real one on the right
    await floodA();
    assert.equal((await get('198.51.100.1, 203.0.113.5')).status, 429, 'spoofed entries on the left are ignored');
    // a second trusted hop is skipped
    await floodA();
    assert.equal((await get('203.0.113.5, 10.9.9.4')).status, 429, 'trusted hops are skipped');
    assert.equal((await get('203.0.113.7, 10.9.9.4')).status, 200);
    const log = fs.readFileSync(p.latch.logPath, 'utf8');
    assert.match(log, /ip=203\.0\.113\.6\b.*peer=127\.0\.0\.1|peer=127\.0\.0\.1.*ip=203\.0\.113\.6\b/, 'the log names the client and the proxy');
  } finally {
    await p.stop();
  }
});
