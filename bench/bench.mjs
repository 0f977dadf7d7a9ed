// bench/bench.mjs: the driver behind bench/run. Starts the fake NinjaOne (TLS), a slow 200 ms
// upstream, nginx (the reference) and latch on loopback; runs the six cases of
// docs/benchmarks.md several times each; prints one table of medians (ratios against references
// measured in the same run) and writes the raw numbers to <build>/bench/results.json.
//
// Environment: LATCH_BIN, FAKE_NINJAONE_BIN, BENCH_RUNS (3), BENCH_DURATION (3 s per wrk run),
// BENCH_SCALE (100,10000,100000), BENCH_CASES (1,2,3,4,5,6,7), BENCH_PERF=1 (perf profiles of the
// hot paths into <out>/perf-*.txt), BENCH_OUT (output dir), BENCH_PIN=1 (the steadier mode: every
// server on CPU 0 with one latch HTTP thread and one nginx worker, wrk and this driver on CPU 1,
// so that a ratio measures the servers and not their contention with the load generator).
import { spawn } from 'node:child_process';
import { randomUUID, randomInt } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startFake, makeTestCA, DEFAULT_CLIENT } from '../tests/integration/lib/fake.mjs';
import { median, pct, run, wrk, procStat, burst, rawGet, makeClient, pool, paced, LOAD_CPU } from './lib/load.mjs';
import { startNginx } from './lib/nginx.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SRC = path.resolve(HERE, '..');
const BUILD = process.env.LATCH_BUILD_DIR || path.join(SRC, 'build-bench');
const LATCH_BIN = path.resolve(process.env.LATCH_BIN || path.join(BUILD, 'latch'));
const FAKE_BIN = path.resolve(process.env.FAKE_NINJAONE_BIN || path.join(BUILD, 'fake-ninjaone'));
const RUNS = Number(process.env.BENCH_RUNS || 3);
const DUR = Number(process.env.BENCH_DURATION || 3);
const SCALE = (process.env.BENCH_SCALE || '100,10000,100000').split(',').map(Number);
const CASES = new Set((process.env.BENCH_CASES || '1,2,3,4,5,6,7').split(',').map(Number));
const PERF = process.env.BENCH_PERF === '1';
const PIN = process.env.BENCH_PIN === '1';
const OUT = process.env.BENCH_OUT || path.join(BUILD, PIN ? 'bench-pinned' : 'bench');
const SERVER_CPU = '0';
const PCK = 'ninjaone-rmm';
const BURST_N = 1000;
const SLOW_MS = 200;

const log = (...a) => process.stderr.write(`[bench] ${a.join(' ')}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const results = { started: new Date().toISOString(), runs: RUNS, duration_s: DUR, cases: {} };
const rows = []; // the final table

function row(kase, metric, latch, ref, refName, goal, met, unit = '') {
  rows.push({ kase, metric, latch, ref, refName, goal, met, unit });
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/* ---- CPU pinning (BENCH_PIN=1) ---- */

/* Every thread of pid onto the server CPU (threads it starts later inherit the mask). */
async function pinServer(pid) {
  await run('taskset', ['-a', '-p', '-c', SERVER_CPU, String(pid)]);
}

/* ---- latch ---- */

function healthOnce(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' }, () => s.write('GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    let buf = '';
    s.on('data', (d) => { buf += d; });
    s.on('close', () => resolve(buf.startsWith('HTTP/1.1 200')));
    s.on('error', () => resolve(false));
  });
}

async function startLatch({ dir, env, port }) {
  fs.mkdirSync(dir, { recursive: true });
  const logPath = path.join(dir, 'latch.log');
  const out = fs.openSync(logPath, 'a');
  const t0 = process.hrtime.bigint();
  // taskset execs latch: child.pid is latch's own pid
  const child = spawn(PIN ? 'taskset' : LATCH_BIN, PIN ? ['-c', SERVER_CPU, LATCH_BIN, 'serve'] : ['serve'], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      LATCH_PORT: String(port),
      LATCH_BIND: '127.0.0.1',
      LATCH_PUBLIC_URL: `http://127.0.0.1:${port}`,
      LATCH_DATABASE_URL: path.join(dir, 'latch.db'),
      LATCH_KEY_FILE: path.join(dir, 'latch.key'),
      LATCH_LOG_LEVEL: 'info',
      ...(PIN ? { LATCH_THREADS: '1' } : {}),
      ...env,
    },
    stdio: ['ignore', out, out],
  });
  fs.closeSync(out);
  const deadline = Date.now() + 20000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`latch exited:\n${fs.readFileSync(logPath, 'utf8').slice(-3000)}`);
    if (await healthOnce(port)) break;
    if (Date.now() > deadline) throw new Error('latch did not become healthy');
    await sleep(1);
  }
  const startupMs = Number(process.hrtime.bigint() - t0) / 1e6;
  return {
    child, port, pid: child.pid, startupMs, logPath, url: `http://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await done;
    },
  };
}

/* ---- small https client for the reference token requests ---- */

function tokenRequester(fakeAddr, caPem, conc) {
  const agent = new https.Agent({ keepAlive: true, maxSockets: conc, ca: caPem });
  const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: DEFAULT_CLIENT.client_id, client_secret: DEFAULT_CLIENT.client_secret, scope: 'monitoring management' }).toString();
  return () => new Promise((resolve, reject) => {
    const rq = https.request({ host: fakeAddr, port: 443, servername: 'eu.ninjarmm.com', method: 'POST', path: '/ws/oauth/token', agent,
      headers: { host: 'eu.ninjarmm.com', 'content-type': 'application/x-www-form-urlencoded', 'content-length': form.length } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`token ${res.statusCode}`))));
    });
    rq.on('error', reject);
    rq.end(form);
  });
}

/* ---- perf ---- */

async function perfProfile(pid, name, during) {
  if (!PERF) return during();
  const data = path.join(OUT, `perf-${name}.data`);
  const rec = spawn('perf', ['record', '-F', '999', '--call-graph', 'dwarf,8192', '-o', data, '-p', String(pid)], { stdio: 'ignore' });
  await sleep(300);
  const r = await during();
  rec.kill('SIGINT');
  await new Promise((res) => rec.once('exit', res));
  try {
    const rep = await run('perf', ['report', '-i', data, '--no-children', '--percent-limit', '1.5', '--stdio', '-g', 'none', '--sort', 'dso,symbol']);
    fs.writeFileSync(path.join(OUT, `perf-${name}.txt`), rep);
    const rep2 = await run('perf', ['report', '-i', data, '--children', '--percent-limit', '3', '--stdio', '-g', 'none', '--sort', 'symbol']);
    fs.writeFileSync(path.join(OUT, `perf-${name}-children.txt`), rep2);
    log(`perf profile written to ${path.join(OUT, `perf-${name}.txt`)}`);
  } catch (e) {
    log(`perf report failed: ${e.message.slice(0, 200)}`);
  }
  return r;
}

/* ---- main ---- */

async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  for (const d of fs.readdirSync(OUT)) {
    if (d.startsWith('run-') || d.endsWith('.data') || d.endsWith('.data.old')) fs.rmSync(path.join(OUT, d), { recursive: true, force: true });
  }
  const work = fs.mkdtempSync(path.join(OUT, 'run-'));
  const tlsDir = path.join(BUILD, 'test-tls');
  const tls = await makeTestCA(tlsDir);
  const caPem = fs.readFileSync(tls.ca);
  const oct = `127.253.${randomInt(1, 250)}`;
  const fakeAddr = `${oct}.2`;
  const upAddr = `${oct}.3`;
  const slowAddr = `${oct}.4`;
  const stopList = [];
  const cleanup = async () => { for (const s of stopList.reverse()) { try { await s(); } catch { /* best effort */ } } };
  process.on('SIGINT', async () => { await cleanup(); process.exit(130); });

  try {
    // the machine
    const ver = async (c, a) => { try { return (await run(c, a)).split('\n')[0].trim(); } catch (e) { return (e.message.split('\n')[1] || '').trim(); } };
    results.machine = {
      nproc: os.cpus().length,
      cpu: os.cpus()[0]?.model,
      kernel: os.release(),
      mem_gb: (os.totalmem() / 2 ** 30).toFixed(1),
      latch: await ver(LATCH_BIN, ['version']),
      nginx: (await run('sh', ['-c', 'nginx -v 2>&1'])).trim(),
      wrk: (await run('sh', ['-c', 'wrk -v 2>&1 | head -1; true'])).trim(),
      node: process.version,
      loadavg: os.loadavg().map((x) => x.toFixed(2)).join(' '),
      mode: PIN ? `pinned: servers on CPU ${SERVER_CPU} (1 latch HTTP thread, 1 nginx worker), load on CPU ${LOAD_CPU}` : 'shared: servers and load on all CPUs',
    };
    log(`machine: ${JSON.stringify(results.machine)}`);

    // upstreams
    const fake = await startFake({ bin: FAKE_BIN, tlsDir, bind: fakeAddr, port: 443, tokenLifetime: 3600, clients: [DEFAULT_CLIENT] });
    stopList.push(() => fake.stop());
    if (PIN) await pinServer(fake.pid);
    const slow = spawn(process.execPath, [path.join(HERE, 'slow_upstream.mjs'), '--bind', slowAddr, '--port', '443', '--cert', tls.cert, '--key', tls.key, '--delay', String(SLOW_MS)], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    stopList.push(async () => { slow.kill('SIGTERM'); });
    await new Promise((res) => readline.createInterface({ input: slow.stdout }).once('line', res));
    if (PIN) await pinServer(slow.pid);
    const [staticPort, proxyPort, slowPort, latchPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const benchToken = `bench-${randomUUID()}`;
    const ngx = await startNginx({ dir: path.join(work, 'nginx'), tls: tlsDir, staticPort, proxyPort, slowPort, upAddr, slowAddr, token: benchToken, cpu: PIN ? SERVER_CPU : null });
    stopList.push(() => ngx.stop());

    // latch: empty-store start-up and idle RSS (3 cold starts)
    const secretKey = randomUUID();
    const env = {
      LATCH_SECRET_KEY: secretKey,
      LATCH_RESOLVE: [`eu.ninjarmm.com:443:${fakeAddr}`, `app.ninjarmm.com:443:${upAddr}`, `us2.ninjarmm.com:443:${slowAddr}`].join(','),
      LATCH_CA_FILE: tls.ca,
      // the per-environment (2000/s) and per-IP (100/s) token buckets would cap every case at
      // the limiter instead of measuring latch; the limiter's own cost stays in the path
      LATCH_RATE_LIMIT_ENV: '10000000',
      LATCH_RATE_LIMIT_IP: '10000000',
      // every load generator connects from 127.0.0.1: case 3 holds 1,000 connections at once
      LATCH_MAX_CONNECTIONS_PER_IP: '0',
      // the operations log on or off (LATCH_OPS_LOG=false): its cost on cases 1 and 2
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('LATCH_OPS_'))),
    };
    const latchDir = path.join(work, 'latch');
    const startups = [];
    const idle = [];
    const idleAnon = [];
    const idlePss = [];
    for (let i = 0; i < RUNS; i++) {
      const l = await startLatch({ dir: latchDir, env, port: latchPort });
      startups.push(l.startupMs);
      await sleep(300);
      idle.push(procStat(l.pid).rssKb / 1024);
      idleAnon.push(procStat(l.pid).anonKb / 1024);
      idlePss.push(procStat(l.pid).pssKb / 1024);
      await l.stop();
    }
    results.cases.startup_empty = { startups, idle_rss_mb: idle, idle_anon_mb: idleAnon, idle_pss_mb: idlePss };
    let latch = await startLatch({ dir: latchDir, env, port: latchPort });
    stopList.push(() => latch.stop());
    const call = makeClient(latch.url, secretKey);
    let r = await call('POST', '/integrations', { provider: PCK, unique_key: PCK });
    if (r.status !== 200) throw new Error(`integration: ${r.status} ${r.body}`);
    const future = new Date(Date.now() + 30 * 86400e3).toISOString();
    const past = new Date(Date.now() - 3600e3).toISOString();
    const imp = (id, instance, { expires = future, token = benchToken } = {}) => call('POST', '/connections', {
      provider_config_key: PCK, connection_id: id, connection_config: { instance },
      credentials: { type: 'OAUTH2_CC', token, client_id: DEFAULT_CLIENT.client_id, client_secret: DEFAULT_CLIENT.client_secret, expires_at: expires },
    });
    for (const [id, inst, o] of [['bench-read', 'eu.ninjarmm.com'], ['bench-proxy', 'app.ninjarmm.com'], ['bench-slow', 'us2.ninjarmm.com'], ['bench-live', 'eu.ninjarmm.com', { expires: past }]]) {
      r = await imp(id, inst, o);
      if (r.status !== 201 && r.status !== 200) throw new Error(`import ${id}: ${r.status} ${r.body}`);
    }
    const auth = { Authorization: `Bearer ${secretKey}` };
    // every case starts on a freshly started latch (same database): pending proxy deadline
    // timers, pooled upstream connections and heap growth of one case must not bleed into the next
    const fresh = async () => {
      await latch.stop();
      latch = await startLatch({ dir: latchDir, env, port: latchPort });
    };
    const readPath = `/connections/bench-read?provider_config_key=${PCK}`;
    r = await call('GET', readPath);
    if (r.status !== 200) throw new Error(`read: ${r.status} ${r.body}`);
    fs.writeFileSync(path.join(ngx.www, 'token.json'), r.body);
    results.token_body_bytes = r.body.length;
    // NinjaOne-shaped upstream body: the fake's organizations list, fetched through latch
    r = await call('GET', '/proxy/v2/organizations', undefined, { 'connection-id': 'bench-live', 'provider-config-key': PCK });
    if (r.status !== 200) throw new Error(`proxy to fake: ${r.status} ${r.body}`);
    fs.writeFileSync(path.join(ngx.www, 'v2', 'organizations'), r.body);
    results.proxy_body_bytes = r.body.length;
    log(`token body ${results.token_body_bytes} B, organizations body ${results.proxy_body_bytes} B`);

    if (process.env.BENCH_HOLD === '1') {
      // keep the stack up for manual profiling (perf record -g -p <pid>, wrk by hand)
      const hold = { latch_pid: latch.pid, latch_url: latch.url, secret_key: secretKey, read_path: readPath, nginx_static: staticPort, nginx_proxy: proxyPort, nginx_slow: slowPort, up_addr: upAddr, fake_addr: fakeAddr, dir: work };
      fs.writeFileSync(path.join(OUT, 'hold.json'), JSON.stringify(hold, null, 2));
      log(`holding: ${JSON.stringify(hold)} (Ctrl-C to stop)`);
      await new Promise(() => {});
    }

    /* ---- 1. cached token read vs nginx static ---- */
    if (CASES.has(1)) {
      const L = [];
      const N = [];
      for (let i = 0; i < RUNS; i++) {
        L.push(await wrk(`${latch.url}${readPath}`, { headers: auth, duration: DUR }));
        N.push(await wrk(`http://127.0.0.1:${staticPort}/token.json`, { duration: DUR }));
        log(`1. run ${i + 1}: latch ${L[i].rps.toFixed(0)} rps p99 ${L[i].p99} ms (non2xx ${L[i].non2xx}); nginx ${N[i].rps.toFixed(0)} rps p99 ${N[i].p99} ms`);
      }
      const lr = median(L.map((x) => x.rps));
      const nr = median(N.map((x) => x.rps));
      const lp = median(L.map((x) => x.p99));
      results.cases.read = { latch: L.map(({ raw, ...x }) => x), nginx: N.map(({ raw, ...x }) => x) };
      row('1 cached read', 'requests/s (2 thr, 50 conn)', lr, nr, 'nginx static', '≥ 0.5×', lr / nr >= 0.5);
      row('1 cached read', 'p99 latency ms', lp, median(N.map((x) => x.p99)), 'nginx static', '< 2 ms', lp < 2);
      if (PERF) await perfProfile(latch.pid, 'read', () => wrk(`${latch.url}${readPath}`, { headers: auth, duration: DUR }));
    }

    /* ---- 2. proxy throughput vs nginx proxy_pass ---- */
    if (CASES.has(2)) {
      await fresh();
      const ph = { ...auth, 'Connection-Id': 'bench-proxy', 'Provider-Config-Key': PCK };
      const L = [];
      const N = [];
      // single requests first (no concurrency), then throughput
      const S = { latch: [], nginx: [], direct: [] };
      for (let i = 0; i < RUNS; i++) {
        S.latch.push(await wrk(`${latch.url}/proxy/v2/organizations`, { headers: ph, duration: 2, threads: 1, conns: 1 }));
        S.nginx.push(await wrk(`http://127.0.0.1:${proxyPort}/v2/organizations`, { duration: 2, threads: 1, conns: 1 }));
        S.direct.push(await wrk(`https://${upAddr}/v2/organizations`, { duration: 2, threads: 1, conns: 1, headers: { Authorization: `Bearer ${benchToken}` } }));
      }

      for (let i = 0; i < RUNS; i++) {
        L.push(await wrk(`${latch.url}/proxy/v2/organizations`, { headers: ph, duration: DUR }));
        N.push(await wrk(`http://127.0.0.1:${proxyPort}/v2/organizations`, { duration: DUR }));
        log(`2. run ${i + 1}: latch ${L[i].rps.toFixed(0)} rps (non2xx ${L[i].non2xx}); nginx ${N[i].rps.toFixed(0)} rps`);
      }
      const lr = median(L.map((x) => x.rps));
      const nr = median(N.map((x) => x.rps));
      const d50 = median(S.direct.map((x) => x.p50));
      const la = median(S.latch.map((x) => x.p50)) - d50;
      const na = median(S.nginx.map((x) => x.p50)) - d50;
      results.cases.proxy = { latch: L.map(({ raw, ...x }) => x), nginx: N.map(({ raw, ...x }) => x), single: Object.fromEntries(Object.entries(S).map(([k, v]) => [k, v.map(({ raw, ...x }) => x)])) };
      row('2 proxy', 'requests/s (2 thr, 50 conn)', lr, nr, 'nginx proxy_pass', '≥ 0.7×', lr / nr >= 0.7);
      row('2 proxy', 'added p50 ms, 1 conn', la, na, 'nginx proxy_pass', '< 0.2 ms', la < 0.2);
      if (PERF) await perfProfile(latch.pid, 'proxy', () => wrk(`${latch.url}/proxy/v2/organizations`, { headers: ph, duration: DUR }));
    }

    /* ---- 3. slow upstream fan-out ---- */
    if (CASES.has(3)) {
      await fresh();
      const lreq = rawGet('/proxy/v2/organizations', { ...auth, 'Connection-Id': 'bench-slow', 'Provider-Config-Key': PCK });
      const nreq = rawGet('/v2/organizations');
      const warm = rawGet('/health');
      // warm both pools once (TLS handshakes to the upstream), not counted
      await burst({ port: latch.port, n: BURST_N, req: lreq, warm, pid: latch.pid });
      await burst({ port: slowPort, n: BURST_N, req: nreq });
      const L = [];
      const N = [];
      for (let i = 0; i < RUNS; i++) {
        L.push(await burst({ port: latch.port, n: BURST_N, req: lreq, warm, probe: warm, pid: latch.pid }));
        N.push(await burst({ port: slowPort, n: BURST_N, req: nreq }));
        log(`3. run ${i + 1}: latch all ${L[i].ok}/${BURST_N} in ${L[i].totalMs.toFixed(0)} ms (${JSON.stringify(L[i].statuses)}), threads ${L[i].maxThreads}, rss ${(L[i].maxRssKb / 1024).toFixed(1)} MB, /health p99 ${L[i].probe.p99?.toFixed(2)} ms (n=${L[i].probe.n}); nginx ${N[i].totalMs.toFixed(0)} ms`);
      }
      const lt = median(L.map((x) => x.totalMs));
      const nt = median(N.map((x) => x.totalMs));
      const hp = median(L.map((x) => x.probe.p99));
      const allOk = L.every((x) => x.ok === BURST_N);
      results.cases.fanout = { latch: L, nginx: N };
      row('3 fan-out 1000×200ms', 'all done ms', lt, nt, 'nginx proxy_pass', `≤ ${1.3 * SLOW_MS} ms`, lt <= 1.3 * SLOW_MS && allOk);
      row('3 fan-out 1000×200ms', 'vs upstream delay', lt / SLOW_MS, 1, `${SLOW_MS} ms`, '≤ 1.3×', lt / SLOW_MS <= 1.3);
      row('3 fan-out 1000×200ms', 'max threads', median(L.map((x) => x.maxThreads)), null, '', 'bounded', true, 'n');
      row('3 fan-out 1000×200ms', 'max RSS MB', median(L.map((x) => x.maxRssKb / 1024)), null, '', 'bounded', true, 'MB');
      row('3 fan-out 1000×200ms', '/health p99 ms during', hp, null, '', '< 5 ms', hp < 5);
    }

    /* ---- 4. refresh stampede ---- */
    if (CASES.has(4)) {
      await fresh();
      const warm = rawGet('/health');
      const L = [];
      const C = [];
      const tokenReqs = [];
      for (let i = 0; i < RUNS; i++) {
        const id = `stampede-${i}`;
        r = await imp(id, 'eu.ninjarmm.com', { expires: past, token: `expired-${i}` });
        if (r.status !== 201 && r.status !== 200) throw new Error(`import ${id}: ${r.status}`);
        const before = (await fake.stats()).token_requests;
        L.push(await burst({ port: latch.port, n: BURST_N, req: rawGet(`/connections/${id}?provider_config_key=${PCK}`, auth), warm, pid: latch.pid }));
        const after = (await fake.stats()).token_requests;
        tokenReqs.push(after - before);
        C.push(await burst({ port: latch.port, n: BURST_N, req: rawGet(readPath, auth), warm, pid: latch.pid }));
        log(`4. run ${i + 1}: stampede ${L[i].ok}/${BURST_N} in ${L[i].totalMs.toFixed(0)} ms, token requests ${after - before}; cached burst ${C[i].totalMs.toFixed(0)} ms`);
      }
      const lt = median(L.map((x) => x.totalMs));
      const ct = median(C.map((x) => x.totalMs));
      results.cases.stampede = { stampede: L, cached: C, token_requests: tokenReqs };
      row('4 stampede 1000 reads', 'all done ms', lt, ct, '1000 cached reads', 'one token request', tokenReqs.every((x) => x === 1) && L.every((x) => x.ok === BURST_N));
      row('4 stampede 1000 reads', 'token requests', Math.max(...tokenReqs), 1, '', '= 1', tokenReqs.every((x) => x === 1), 'n');
    }

    /* ---- 6. connect flow ---- */
    if (CASES.has(6)) {
      await fresh();
      const LINKS = Number(process.env.BENCH_LINKS || 300);
      const CONC = 16;
      const L = [];
      const T = [];
      let seq = 0;
      const linkOne = async () => {
        const s = await call('POST', '/connect/sessions', { end_user: { id: `bench-user-${seq++}`, email: 'admin@msp.example' } });
        if (s.status !== 201) throw new Error(`session ${s.status} ${s.body}`);
        const q = new URLSearchParams({ connect_session_token: s.json.data.token, 'params[instance]': 'eu.ninjarmm.com' });
        const a = await call('POST', `/oauth2/auth/${PCK}?${q}`, { client_id: DEFAULT_CLIENT.client_id, client_secret: DEFAULT_CLIENT.client_secret }, { authorization: '' });
        if (a.status !== 200) throw new Error(`link ${a.status} ${a.body}`);
      };
      const tok = tokenRequester(fakeAddr, caPem, CONC);
      await pool(0, 20, CONC, linkOne);
      await pool(0, 50, CONC, tok);
      for (let i = 0; i < RUNS; i++) {
        const ms = await pool(0, LINKS, CONC, linkOne);
        L.push((LINKS * 1000) / ms);
        const tms = await pool(0, LINKS, CONC, tok);
        T.push((LINKS * 1000) / tms);
        log(`6. run ${i + 1}: ${L[i].toFixed(0)} links/s; direct token requests ${T[i].toFixed(0)}/s`);
      }
      if (PERF) await perfProfile(latch.pid, 'connect', () => pool(0, LINKS, CONC, linkOne));
      results.cases.connect = { links_per_s: L, token_per_s: T };
      row('6 connect flow', 'links/s (16 conc)', median(L), median(T), 'direct token req/s', 'measure', true);
    }

    /* ---- 7. noisy neighbour: one environment floods, another's latency ---- */
    if (CASES.has(7)) {
      // the real per-environment limit (default 2000/s); the per-IP limit stays raised because
      // both environments' clients share 127.0.0.1
      const env7 = { ...env, LATCH_RATE_LIMIT_ENV: '2000' };
      await latch.stop();
      latch = await startLatch({ dir: latchDir, env: env7, port: latchPort });
      const created = await run(LATCH_BIN, ['env', 'create', `victim-${randomInt(1e9)}`], {
        cwd: latchDir,
        env: { PATH: process.env.PATH, LATCH_DATABASE_URL: path.join(latchDir, 'latch.db'), LATCH_KEY_FILE: path.join(latchDir, 'latch.key'), LATCH_LOG_LEVEL: 'error' },
      });
      const victimKey = created.trim().split('\n').pop().trim();
      const vcall = makeClient(latch.url, victimKey, 16);
      r = await vcall('POST', '/integrations', { provider: PCK, unique_key: PCK });
      if (r.status !== 200) throw new Error(`victim integration: ${r.status} ${r.body}`);
      r = await vcall('POST', '/connections', {
        provider_config_key: PCK, connection_id: 'victim-read', connection_config: { instance: 'eu.ninjarmm.com' },
        credentials: { type: 'OAUTH2_CC', token: benchToken, client_id: DEFAULT_CLIENT.client_id, client_secret: DEFAULT_CLIENT.client_secret, expires_at: future },
      });
      if (r.status !== 201 && r.status !== 200) throw new Error(`victim import: ${r.status} ${r.body}`);
      const RATE = Number(process.env.BENCH_VICTIM_RATE || 500);
      const victim = () => vcall('GET', `/connections/victim-read?provider_config_key=${PCK}`);
      await paced(RATE, 1, victim); // warm
      const A = [];
      const F = [];
      const W = [];
      for (let i = 0; i < RUNS; i++) {
        A.push(await paced(RATE, DUR, victim));
        const flood = wrk(`${latch.url}${readPath}`, { headers: auth, duration: DUR + 1, threads: 1, conns: 50 });
        await sleep(500);
        F.push(await paced(RATE, DUR, victim));
        W.push(await flood);
        log(`7. run ${i + 1}: victim alone p50 ${A[i].p50.toFixed(2)} p99 ${A[i].p99.toFixed(2)} ms ${JSON.stringify(A[i].statuses)}; during flood p50 ${F[i].p50.toFixed(2)} p99 ${F[i].p99.toFixed(2)} ms ${JSON.stringify(F[i].statuses)}; flooder ${W[i].rps.toFixed(0)} answers/s, non-2xx ${W[i].non2xx}`);
      }
      results.cases.neighbour = { rate: RATE, alone: A, flood: F, flooder: W.map(({ raw, ...x }) => x) };
      const a50 = median(A.map((x) => x.p50));
      const f50 = median(F.map((x) => x.p50));
      const bad = F.reduce((n, x) => n + (x.n - x.ok), 0);
      row('7 noisy neighbour', `victim p50 ms (${RATE}/s) during flood`, f50, a50, 'victim alone', '≤ 1.1×', f50 <= 1.1 * a50);
      row('7 noisy neighbour', 'victim p99 ms during flood', median(F.map((x) => x.p99)), median(A.map((x) => x.p99)), 'victim alone', '–', true);
      row('7 noisy neighbour', 'victim non-200 during flood', bad, null, '', '0', bad === 0, 'n');
      row('7 noisy neighbour', 'flooder answers/s (200 + 429)', median(W.map((x) => x.rps)), 2000, 'its limit /s', 'limited', true, 'n');
      await latch.stop();
      latch = await startLatch({ dir: latchDir, env, port: latchPort });
    }

    /* ---- 5. store scale ---- */
    if (CASES.has(5)) {
      await fresh();
      const S = {};
      let have = 0;
      const impConc = 32;
      for (const n of SCALE) {
        const t = await pool(have + 1, n + 1, impConc, async (i) => {
          const x = await imp(`s-${i}`, 'eu.ninjarmm.com');
          if (x.status !== 201 && x.status !== 200) throw new Error(`import s-${i}: ${x.status} ${x.body}`);
        });
        log(`5. imported ${n - have} connections in ${(t / 1000).toFixed(1)} s (${(((n - have) * 1000) / t).toFixed(0)}/s)`);
        const importRate = ((n - have) * 1000) / t;
        have = n;
        const W = [];
        for (let i = 0; i < RUNS; i++) {
          W.push(await wrk(`${latch.url}/`, { headers: auth, duration: DUR, script: path.join(HERE, 'lua', 'random_read.lua'), env: { BENCH_N: String(n), BENCH_PCK: PCK } }));
        }
        const rss = procStat(latch.pid).rssKb / 1024;
        const anon = procStat(latch.pid).anonKb / 1024;
        S[n] = { anon_mb: anon, rps: median(W.map((x) => x.rps)), p99: median(W.map((x) => x.p99)), non2xx: W.reduce((a, x) => a + x.non2xx, 0), rss_mb: rss, import_per_s: importRate };
        log(`5. n=${n}: ${S[n].rps.toFixed(0)} rps p99 ${S[n].p99} ms non2xx ${S[n].non2xx} rss ${rss.toFixed(1)} MB`);
      }
      // restart on the big store: start-up and idle RSS
      await latch.stop();
      const st = [];
      const idleBig = [];
      for (let i = 0; i < RUNS; i++) {
        latch = await startLatch({ dir: latchDir, env, port: latchPort });
        st.push(latch.startupMs);
        await sleep(300);
        idleBig.push(procStat(latch.pid).rssKb / 1024);
        if (i < RUNS - 1) await latch.stop();
      }
      results.cases.scale = { sizes: S, startup_big: st, idle_big_mb: idleBig };
      const lo = SCALE[0];
      const hi = SCALE[SCALE.length - 1];
      const rpsR = S[hi].rps / S[lo].rps;
      const p99R = S[hi].p99 / S[lo].p99;
      for (const n of SCALE) row('5 store scale', `reads/s @ ${n}`, S[n].rps, S[lo].rps, `@ ${lo}`, '±20 %', Math.abs(S[n].rps / S[lo].rps - 1) <= 0.2);
      for (const n of SCALE) row('5 store scale', `p99 ms @ ${n}`, S[n].p99, S[lo].p99, `@ ${lo}`, '±20 %', Math.abs(S[n].p99 / S[lo].p99 - 1) <= 0.2);
      row('5 store scale', `RSS MB @ ${hi} (after reads)`, S[hi].rss_mb, 64, '64 MB', '< 64 MB', S[hi].rss_mb < 64, 'MB');
      row('5 store scale', `  of which anon (heap) MB`, S[hi].anon_mb, 64, '64 MB', '–', true, 'MB');
      row('5 store scale', `import/s (32 conc)`, median(SCALE.map((n) => S[n].import_per_s)), null, '', 'few 1000/s', true, 'n');
      row('5 store scale', `start-up ms @ ${hi}`, median(st), 100, '100 ms', '< 100 ms', median(st) < 100, 'ms');
      row('5 store scale', `idle RSS MB @ ${hi}`, median(idleBig), 10, '10 MB', '< 10 MB', median(idleBig) < 10, 'MB');
      void rpsR; void p99R;
    }
    const su = results.cases.startup_empty;
    row('5 store scale', 'start-up ms (empty)', median(su.startups), 100, '100 ms', '< 100 ms', median(su.startups) < 100, 'ms');
    row('5 store scale', 'idle RSS MB (empty)', median(su.idle_rss_mb), 10, '10 MB', '< 10 MB', median(su.idle_rss_mb) < 10, 'MB');
    row('5 store scale', '  of which anon (heap) MB', median(su.idle_anon_mb), 10, '10 MB', '–', true, 'MB');
    row('5 store scale', '  PSS MB (shared pages divided)', median(su.idle_pss_mb), 10, '10 MB', '–', true, 'MB');
  } finally {
    await cleanup();
  }

  results.rows = rows;
  results.finished = new Date().toISOString();
  fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify(results, null, 2));
  printTable();
}

function fmt(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  if (Math.abs(x) >= 1000) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(3);
}

function printTable() {
  const m = results.machine || {};
  const lines = [];
  lines.push(`latch benchmarks — medians of ${RUNS} runs, ${DUR} s per wrk run; ${m.nproc} × ${m.cpu}, Linux ${m.kernel}; load before start ${m.loadavg}; ${m.mode}`);
  lines.push('');
  lines.push('| case | metric | latch | reference | ratio | goal | met |');
  lines.push('|---|---|---:|---:|---:|---|:-:|');
  for (const r of rows) {
    const ratio = r.ref ? r.latch / r.ref : null;
    lines.push(`| ${r.kase} | ${r.metric} | ${fmt(r.latch)} | ${r.ref === null ? '–' : `${fmt(r.ref)} (${r.refName})`} | ${ratio === null ? '–' : `${ratio.toFixed(2)}×`} | ${r.goal} | ${r.met ? 'yes' : '**no**'} |`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  fs.writeFileSync(path.join(OUT, 'table.md'), `${lines.join('\n')}\n`);
}

main().catch((e) => {
  log(`FAILED: ${e.stack || e}`);
  process.exit(1);
});
