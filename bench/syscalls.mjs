// bench/syscalls.mjs: system calls and thread wake-ups per request of latch, counted (not
// timed), so two binaries can be compared on a shared, noisy machine. For each binary: latch
// with one HTTP thread and a fresh SQLite store, the fake NinjaOne over TLS on loopback, a warm-up
// (so the upstream connection is kept alive and statements are prepared), then N requests of a
// kind, one at a time on one kept-alive client connection, while
//   - the voluntary + involuntary context switches of every latch thread are read from
//     /proc/<pid>/task/*/status before and after (a voluntary switch is a thread going to sleep:
//     each one is a wake-up later), and
//   - `strace -c -f -p <pid>` counts the system calls (a second pass, strace slows latch down).
//
//   node bench/syscalls.mjs <latch binary> [<another latch binary> ...]
//
// Environment: SYSC_N (requests per kind, default 500).
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { makeClient } from './lib/load.mjs';
import { startFake, makeTestCA, DEFAULT_CLIENT } from '../tests/integration/lib/fake.mjs';

const N = Number(process.env.SYSC_N || 500);
const PCK = 'ninjaone-rmm';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function switches(pid) {
  let vol = 0;
  let invol = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    let st = '';
    try { st = fs.readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8'); } catch { continue; }
    vol += Number(st.match(/^voluntary_ctxt_switches:\s+(\d+)/m)?.[1] ?? 0);
    invol += Number(st.match(/^nonvoluntary_ctxt_switches:\s+(\d+)/m)?.[1] ?? 0);
  }
  return { vol, invol };
}

async function measure(bin, up) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latch-sysc-'));
  const port = await freePort();
  const key = randomUUID();
  const child = spawn(bin, ['serve'], {
    cwd: dir,
    env: {
      PATH: process.env.PATH, LATCH_PORT: String(port), LATCH_BIND: '127.0.0.1', LATCH_THREADS: '1',
      LATCH_DATABASE_URL: path.join(dir, 'latch.db'), LATCH_KEY_FILE: path.join(dir, 'latch.key'),
      LATCH_SECRET_KEY: key, LATCH_LOG_LEVEL: 'warn', LATCH_BACKGROUND_REFRESH: 'false',
      LATCH_RATE_LIMIT_ENV: '0', LATCH_RATE_LIMIT_IP: '0',
      LATCH_RESOLVE: `eu.ninjarmm.com:443:${up.addr}`, LATCH_CA_FILE: up.ca, LATCH_ALLOW_PRIVATE: 'true',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const call = makeClient(`http://127.0.0.1:${port}`, key, 1);
  try {
    for (let i = 0; ; i++) {
      try { if ((await call('GET', '/health')).status === 200) break; } catch { /* not up yet */ }
      if (i > 100) throw new Error(`latch did not start:\n${stderr.slice(-2000)}`);
      await sleep(100);
    }
    let r = await call('POST', '/integrations', { provider: PCK, unique_key: PCK });
    if (r.status !== 200) throw new Error(`integration: ${r.status} ${r.body}`);
    r = await call('POST', '/connections', {
      provider_config_key: PCK, connection_id: 'px', connection_config: { instance: 'eu.ninjarmm.com' },
      credentials: { type: 'OAUTH2_CC', token: 'expired', client_id: DEFAULT_CLIENT.client_id,
        client_secret: DEFAULT_CLIENT.client_secret, expires_at: new Date(Date.now() - 3600e3).toISOString() },
    });
    if (r.status !== 201 && r.status !== 200) throw new Error(`import px: ${r.status} ${r.body}`);
    const kinds = {
      'token read': () => ['GET', `/connections/px?provider_config_key=${PCK}`],
      'proxied GET (case 2)': () => ['GET', '/proxy/v2/organizations', undefined, { 'Connection-Id': 'px', 'Provider-Config-Key': PCK }],
    };
    const out = {};
    for (const [name, req] of Object.entries(kinds)) {
      const run = async () => {
        for (let i = 0; i < N; i++) {
          r = await call(...req(i));
          if (r.status !== 200) throw new Error(`${name}: ${r.status} ${r.body}`);
        }
      };
      for (let i = 0; i < 50; i++) await call(...req(i)); // warm-up
      const a = switches(child.pid);
      await run();
      const b = switches(child.pid);
      // strace pass: -c summary of every thread
      const sf = path.join(dir, 'strace.txt');
      const st = spawn('strace', ['-c', '-f', '-o', sf, '-p', String(child.pid)], { stdio: 'ignore' });
      await sleep(1000);
      await run();
      await sleep(200);
      const stDone = new Promise((res) => st.once('exit', res));
      st.kill('SIGINT');
      await stDone;
      const text = fs.readFileSync(sf, 'utf8');
      const total = Number(text.match(/^\s*100\.00\s+[\d.]+\s+\d+\s+(\d+)/m)?.[1] ?? NaN);
      const per = {};
      for (const m of text.matchAll(/^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/gm)) if (m[2] !== 'total') per[m[2]] = Number(m[1]) / N;
      out[name] = { vol: (b.vol - a.vol) / N, invol: (b.invol - a.invol) / N, sys: total / N, per };
    }
    return out;
  } finally {
    const done = new Promise((res) => child.once('exit', res));
    child.kill('SIGTERM');
    await done;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const bins = process.argv.slice(2);
if (!bins.length) {
  process.stderr.write('usage: node bench/syscalls.mjs <latch binary> [<latch binary> ...]\n');
  process.exit(2);
}
const tlsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'latch-sysc-tls-'));
const tls = await makeTestCA(tlsDir);
const addr = `127.252.${1 + Math.floor(Math.random() * 250)}.3`;
const fake = await startFake({ tlsDir, bind: addr, port: 443, tokenLifetime: 86400, clients: [DEFAULT_CLIENT] });
const results = [];
try {
  for (const b of bins) {
    process.stderr.write(`[sysc] ${b}\n`);
    results.push(await measure(path.resolve(b), { addr, ca: tls.ca }));
  }
} finally {
  await fake.stop();
  fs.rmSync(tlsDir, { recursive: true, force: true });
}
const lines = [`per request (N=${N}, one client connection, 1 HTTP thread): system calls (strace -c -f), context switches of latch's threads (/proc)`, ''];
lines.push(`| request | binary | system calls | voluntary switches (wake-ups) | involuntary | calls by name |`, '|---|---|---:|---:|---:|---|');
for (const n of Object.keys(results[0])) {
  results.forEach((r, i) => {
    const x = r[n];
    const top = Object.entries(x.per).sort((p, q) => q[1] - p[1]).slice(0, 8).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
    lines.push(`| ${n} | ${i + 1} | ${x.sys.toFixed(1)} | ${x.vol.toFixed(2)} | ${x.invol.toFixed(2)} | ${top} |`);
  });
}
bins.forEach((b, i) => lines.push(`${i ? '' : '\n'}binary ${i + 1}: ${b}`));
process.stdout.write(`${lines.join('\n')}\n`);
