// bench/instructions.mjs: instructions per request, counted by callgrind (valgrind), for the
// requests whose cost is latch's own code rather than the network: a cached token read (bench
// case 1), the same read spread over many connections (case 5's access pattern), a connection
// list, a metadata write, and a proxied GET (case 2) to the fake NinjaOne over TLS on loopback
// (keep-alive, so no handshake per request; the upstream's own work is not counted). Instruction counts do not depend on what else the machine is
// doing, so two binaries can be compared on a shared, noisy machine (wall-clock ratios cannot).
//
//   node bench/instructions.mjs <latch binary> [<another latch binary> ...]
//
// Each binary is started under callgrind with one HTTP thread and a fresh SQLite store; the
// script seeds it, warms every request kind up (first-use costs: statement preparation, caches),
// then for each kind zeroes the counters (callgrind_control --zero), sends N requests one at a
// time and dumps (callgrind_control --dump); Ir of the dump / N is the figure. Prints one table.
// Environment: INSTR_N (requests per kind, default 300), INSTR_CONNS (connections seeded, 1000).
import { spawn, execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { makeClient } from './lib/load.mjs';
import { startFake, makeTestCA, DEFAULT_CLIENT } from '../tests/integration/lib/fake.mjs';

const N = Number(process.env.INSTR_N || 300);
const CONNS = Number(process.env.INSTR_CONNS || 1000);
// INSTR_KEEP=<dir>: keep each kind's callgrind dump there (for callgrind_annotate) instead of deleting it
const KEEP = process.env.INSTR_KEEP || '';
const PCK = 'ninjaone-rmm';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function totalIr(dir, pid, keepAs) {
  // the newest dump of this pid: callgrind.out.<pid>.<n>
  const files = fs.readdirSync(dir).filter((f) => f.startsWith(`callgrind.out.${pid}.`))
    .map((f) => path.join(dir, f)).sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  if (!files.length) throw new Error('no callgrind dump');
  const text = fs.readFileSync(files[0], 'utf8');
  const m = text.match(/^(?:summary|totals):\s+(\d+)/m);
  if (!m) throw new Error(`no totals in ${files[0]}`);
  if (KEEP) {
    fs.mkdirSync(KEEP, { recursive: true });
    fs.copyFileSync(files[0], path.join(KEEP, keepAs));
  }
  fs.rmSync(files[0]);
  return Number(m[1]);
}

async function measure(bin, up) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latch-instr-'));
  const port = await freePort();
  const key = randomUUID();
  const child = spawn('valgrind', ['--tool=callgrind', '--dump-line=no', '--compress-strings=no',
    `--callgrind-out-file=${dir}/callgrind.out.%p`, bin, 'serve'], {
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
      if (i > 600) throw new Error(`latch under valgrind did not start:\n${stderr.slice(-2000)}`);
      await sleep(100);
    }
    let r = await call('POST', '/integrations', { provider: PCK, unique_key: PCK });
    if (r.status !== 200) throw new Error(`integration: ${r.status} ${r.body}`);
    const future = new Date(Date.now() + 30 * 86400e3).toISOString();
    for (let i = 0; i < CONNS; i++) {
      r = await call('POST', '/connections', {
        provider_config_key: PCK, connection_id: `c${i}`, connection_config: { instance: 'eu.ninjarmm.com' },
        credentials: { type: 'OAUTH2_CC', token: `tok-${i}`, client_id: 'id', client_secret: 'secret', expires_at: future },
      });
      if (r.status !== 201 && r.status !== 200) throw new Error(`import: ${r.status} ${r.body}`);
    }
    // the proxied connection: an expired token and the fake's client, so the warm-up's first call
    // refreshes it through the fake's token endpoint and the rest use a token the fake accepts
    r = await call('POST', '/connections', {
      provider_config_key: PCK, connection_id: 'px', connection_config: { instance: 'eu.ninjarmm.com' },
      credentials: { type: 'OAUTH2_CC', token: 'expired', client_id: DEFAULT_CLIENT.client_id,
        client_secret: DEFAULT_CLIENT.client_secret, expires_at: new Date(Date.now() - 3600e3).toISOString() },
    });
    if (r.status !== 201 && r.status !== 200) throw new Error(`import px: ${r.status} ${r.body}`);
    const kinds = {
      'token read, one connection (case 1)': (i) => ['GET', `/connections/c0?provider_config_key=${PCK}`],
      'token read, spread over connections (case 5)': (i) => ['GET', `/connections/c${(i * 7919) % CONNS}?provider_config_key=${PCK}`],
      'connection list (limit 20)': () => ['GET', '/connections?limit=20'],
      'metadata write': (i) => ['PATCH', '/connections/metadata', { connection_id: `c${i % CONNS}`, provider_config_key: PCK, metadata: { n: i } }],
      'proxied GET (case 2)': () => ['GET', '/proxy/v2/organizations', undefined, { 'Connection-Id': 'px', 'Provider-Config-Key': PCK }],
    };
    const out = {};
    for (const [name, req] of Object.entries(kinds)) {
      for (let i = 0; i < 20; i++) await call(...req(i)); // warm-up
      execFileSync('callgrind_control', ['--zero', String(child.pid)], { stdio: 'ignore' });
      for (let i = 0; i < N; i++) {
        r = await call(...req(i));
        if (r.status !== 200) throw new Error(`${name}: ${r.status} ${r.body}`);
      }
      execFileSync('callgrind_control', ['--dump', String(child.pid)], { stdio: 'ignore' });
      await sleep(200);
      out[name] = totalIr(dir, child.pid, `${path.basename(bin)}-${Object.keys(out).length + 1}.callgrind`) / N;
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
  process.stderr.write('usage: node bench/instructions.mjs <latch binary> [<latch binary> ...]\n');
  process.exit(2);
}
const tlsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'latch-instr-tls-'));
const tls = await makeTestCA(tlsDir);
const addr = `127.252.${1 + Math.floor(Math.random() * 250)}.2`;
const fake = await startFake({ tlsDir, bind: addr, port: 443, tokenLifetime: 86400, clients: [DEFAULT_CLIENT] });
const results = [];
try {
  for (const b of bins) {
    process.stderr.write(`[instr] ${b}\n`);
    results.push(await measure(path.resolve(b), { addr, ca: tls.ca }));
  }
} finally {
  await fake.stop();
  fs.rmSync(tlsDir, { recursive: true, force: true });
}
const names = Object.keys(results[0]);
const head = ['request', ...bins.map((b, i) => `binary ${i + 1} Ir/request`), ...(bins.length > 1 ? bins.slice(1).map((b, i) => `${i + 2} vs 1`) : [])];
const lines = [`instructions per request (callgrind, N=${N}, ${CONNS} connections, 1 HTTP thread)`, '', `| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
for (const n of names) {
  const v = results.map((r) => r[n]);
  lines.push(`| ${n} | ${v.map((x) => Math.round(x).toLocaleString('en')).join(' | ')}${v.length > 1 ? ` | ${v.slice(1).map((x) => `${(x / v[0]).toFixed(3)}×`).join(' | ')}` : ''} |`);
}
bins.forEach((b, i) => lines.push(`${i ? '' : '\n'}binary ${i + 1}: ${b}`));
process.stdout.write(`${lines.join('\n')}\n`);
