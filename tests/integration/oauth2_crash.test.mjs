// Crash consistency of OAuth2 refresh with rotation: many connections with short-lived access
// tokens at oidc-provider (a refresh token is valid exactly once; presenting a consumed one revokes
// the whole grant), readers hammering latch's always-fresh read (and forcing refreshes now and then),
// latch SIGKILLed during refreshes, restarted on the same database. Afterwards every connection
// must still refresh: a lost rotated refresh token shows up at oidc-provider as invalid_grant, which
// fails the test at once (every refresh grant error is recorded).
//
// Kill points, rotating over the rounds (all decided inside this process, which also runs
// oidc-provider, so the check and the kill are atomic in one event loop):
//   upstream  - the moment latch's refresh request reaches the token endpoint (before oidc-provider
//               runs it: the refresh token is not consumed);
//   answered  - the moment a reader receives an access token no reader had seen before, i.e. right
//               after latch answered with a freshly refreshed token: if latch answered before its
//               rotated refresh token was durable, the restarted latch presents the consumed one;
//   random    - a random moment of the round.
// Each kill waits for a moment when no token request is inside oidc-provider and every rotation
// oidc-provider completed has been seen by a reader. A kill between oidc-provider rotating a token
// and latch committing it loses that token whatever latch does (the provider has consumed the old
// one and latch never got to keep the new one); with a strict-rotation provider no client can
// survive that window, so the test does not kill inside it (and says how often it had to wait).
//
// Env: OAUTH2_CRASH_ROUNDS (default 24), OAUTH2_CRASH_SEED, OAUTH2_CRASH_CONNECTIONS (default 16).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startOidcStack, OIDC_PROVIDER_KEY as KEY } from './lib/oidc.mjs';
import { request } from './lib/load.mjs';
import { seededRandom } from './lib/load.mjs';

const ROUNDS = Number(process.env.OAUTH2_CRASH_ROUNDS || 24);
const N = Number(process.env.OAUTH2_CRASH_CONNECTIONS || 16);
const SEED = Number(process.env.OAUTH2_CRASH_SEED || Math.floor(Math.random() * 2 ** 31));
const READERS = 8;
const KINDS = ['upstream', 'answered', 'random'];
const rnd = seededRandom(SEED);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let s;
before(async () => {
  // refresh margin 60 s (stack default) and access tokens for 61 s: fresh for about one second
  s = await startOidcStack({ env: { LATCH_BACKGROUND_REFRESH: 'false', LATCH_REFRESH_LEASE_MS: '3000', LATCH_REFRESH_BACKOFF_MS: '200', LATCH_LOG_LEVEL: 'info' } });
});
after(async () => { await s?.stop(); });

const getPath = (id, force = false) => `/connections/${encodeURIComponent(id)}?provider_config_key=${KEY}&force_refresh=${force}&refresh_token=true`;

test(`SIGKILL during refreshes with rotation: every connection still refreshes (seed ${SEED})`, { timeout: 170000 }, async () => {
  const t0 = Date.now();
  // ---- the connections, through the real flow ----
  const ids = [];
  for (let i = 0; i < N; i++) {
    const from = s.webhooks.received.length;
    const flow = await s.connect();
    assert.equal(flow.cb.status, 200, flow.cb.text.slice(0, 300));
    let wh;
    for (let k = 0; k < 200 && !wh; k++) {
      wh = s.webhooks.received.slice(from).find((w) => w.json?.type === 'auth' && w.json?.success === true);
      if (!wh) await sleep(25);
    }
    assert.ok(wh, 'auth webhook');
    ids.push(wh.json.connectionId);
  }
  s.op.setAccessTokenTTL(61);

  // ---- observation: every access token a reader got; rotations not yet seen by any reader ----
  const seen = new Set();
  let rotIdx = 0;
  const unseen = new Set();
  const syncRotations = () => {
    for (; rotIdx < s.op.rotations.length; rotIdx++) {
      const at = s.op.rotations[rotIdx].access_token;
      if (!seen.has(at)) unseen.add(at);
    }
  };
  const quiescent = () => { syncRotations(); return s.op.inFlight === 0 && unseen.size === 0; };

  let kill = null; // { kind, resolve } while a round waits for its kill
  let killedAt = null;
  const doKill = (why) => {
    if (!kill || killedAt) return false;
    if (!quiescent()) { stats.deferred[why] = (stats.deferred[why] || 0) + 1; return false; }
    s.latch.child.kill('SIGKILL');
    killedAt = Date.now();
    killTimes.push(killedAt);
    stats.kills[kill.kind] = (stats.kills[kill.kind] || 0) + 1;
    kill.resolve();
    return true;
  };
  const lost = [];
  const killTimes = [];
  /** What oidc-provider saw of each refused refresh token: when it was consumed, and whether the token that replaced it reached a reader. */
  const diagnose = () => JSON.stringify(s.op.grantErrors.filter((e) => e.grant_type === 'refresh_token').map((e) => {
    const rot = s.op.rotations.find((r) => r.old === e.refresh_token);
    return {
      refusedAt: e.at, error: e.error,
      consumedAt: rot?.at ?? null, replacementSeenByReader: rot ? seen.has(rot.access_token) : null,
      replacementPresentedLater: rot ? s.op.rotations.some((r) => r.old === rot.refresh_token) : null,
      kills: killTimes.filter((k) => rot && k >= rot.at - 2000 && k <= e.at).map((k) => k - rot.at),
    };
  }), null, 1);
  const stats = { reads: 0, ok: 0, failed: 0, kills: {}, deferred: {}, orphans: 0, skipped: 0 };

  s.op.hooks.beforeToken = async (ctx) => {
    const sock = ctx.req.socket;
    if (!sock.watchedByTest) {
      sock.watchedByTest = true;
      const gone = () => { sock.peerGone = true; };
      sock.on('end', gone);
      sock.on('close', gone);
    }
    if (kill?.kind === 'upstream' && doKill('upstream')) {
      ctx.status = 503; // latch is gone; nothing was run
      return true;
    }
    // A request latch sent around the kill (SIGKILL is not instant: the process may still write
    // while it dies, and what it wrote is read from the socket buffer afterwards) would make
    // oidc-provider rotate for a client that no longer exists: the new refresh token is lost
    // whatever latch does (the window no client survives). So the token endpoint only runs a
    // request whose sender is still connected a moment later and was not killed meanwhile.
    await sleep(30);
    if (killedAt || sock.peerGone || sock.destroyed) {
      stats.orphans++;
      ctx.status = 503;
      return true;
    }
    return false;
  };

  let running = true;
  const agent = new http.Agent({ keepAlive: true, maxSockets: READERS });
  const reader = async () => {
    while (running) {
      if (killedAt) { await sleep(20); continue; }
      const id = ids[Math.floor(rnd() * ids.length)];
      const force = rnd() < 0.05;
      stats.reads++;
      let r;
      try {
        r = await request(`${s.latchUrl}${getPath(id, force)}`, { agent, headers: { authorization: `Bearer ${s.secretKey}` } });
      } catch { stats.failed++; continue; } // latch killed under us
      if (r.status !== 200) {
        stats.failed++;
        // a connection that needs re-authorisation is the failure this test exists for
        if (r.status >= 400 && r.status < 500) lost.push(`${id}: ${r.status} ${r.body.toString().slice(0, 300)}`);
        continue;
      }
      stats.ok++;
      const at = r.json.credentials.access_token;
      const fresh = !seen.has(at);
      seen.add(at);
      unseen.delete(at);
      if (fresh && kill?.kind === 'answered') doKill('answered');
    }
  };
  const readers = Array.from({ length: READERS }, reader);

  try {
    for (let round = 0; round < ROUNDS; round++) {
      const kind = KINDS[round % KINDS.length];
      killedAt = null;
      const fired = new Promise((resolve) => { kill = { kind, resolve }; });
      if (kind === 'random') {
        await sleep(100 + Math.floor(rnd() * 1400));
        for (let i = 0; i < 600 && !killedAt; i++) { doKill('random'); if (!killedAt) await sleep(5); }
      }
      // waits for the kill (at most 8 s); a refused read ends the test at once
      let outcome = 'timeout';
      fired.then(() => { outcome = 'killed'; });
      for (let waited = 0; waited < 8000 && outcome !== 'killed'; waited += 50) {
        assert.deepEqual(lost, [], `round ${round} (${kind}), before the kill: reads refused: ${diagnose()}`);
        await sleep(50);
      }
      kill = null;
      if (outcome !== 'killed') { stats.skipped++; continue; }
      const refreshesBefore = s.op.counts().refresh;
      await s.restartLatch('SIGKILL');
      killedAt = null;
      // right after the restart: every connection answers (refreshing where due) without re-auth
      for (const id of ids) {
        const r = await s.api('GET', getPath(id));
        if (r.status !== 200) console.log(diagnose());
        assert.equal(r.status, 200, `round ${round} (${kind}), connection ${id}: ${r.text.slice(0, 400)}`);
        seen.add(r.json.credentials.access_token);
        unseen.delete(r.json.credentials.access_token);
      }
      assert.ok(s.op.counts().refresh >= refreshesBefore);
      assert.deepEqual(lost, [], `round ${round} (${kind}): reads refused`);
      assert.deepEqual(s.op.grantErrors.filter((e) => e.grant_type === 'refresh_token'), [], `round ${round} (${kind}): refresh grants refused upstream: ${diagnose()}`);
    }
  } finally {
    running = false;
    s.op.hooks.beforeToken = null;
    await Promise.allSettled(readers);
    agent.destroy();
  }

  // ---- afterwards: every connection refreshes, twice, each with the refresh token it was last given ----
  s.op.setAccessTokenTTL(3600);
  for (const id of ids) {
    for (let k = 0; k < 2; k++) {
      const before = s.op.rotations.length;
      const r = await s.api('GET', getPath(id, true));
      assert.equal(r.status, 200, `connection ${id} does not refresh any more: ${r.text.slice(0, 400)}`);
      assert.equal(s.op.rotations.length, before + 1);
      assert.equal(s.op.rotations.at(-1).refresh_token, r.json.credentials.refresh_token, 'the rotated refresh token is what latch keeps');
    }
  }
  assert.deepEqual(s.op.grantErrors, [], `no grant was ever refused by oidc-provider: ${diagnose()}`);
  const killsTotal = Object.values(stats.kills).reduce((a, b) => a + b, 0);
  console.log(JSON.stringify({ seed: SEED, rounds: ROUNDS, connections: N, refreshGrants: s.op.counts().refresh, ...stats, seconds: Math.round((Date.now() - t0) / 1000) }));
  assert.ok(killsTotal >= Math.ceil(ROUNDS * 0.75), `too few kills happened (${killsTotal}/${ROUNDS}): ${JSON.stringify(stats)}`);
  for (const k of KINDS) assert.ok((stats.kills[k] || 0) >= 1, `no kill of kind ${k}: ${JSON.stringify(stats)}`);
  assert.ok(s.op.counts().refresh >= ROUNDS, 'refreshes were happening');
});
