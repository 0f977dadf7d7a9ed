// Load helpers for bench/run: wrk wrapper + parser, a raw-socket "burst" client (N requests
// written at the same instant on N pre-opened keep-alive connections), /proc sampling, stats.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';

export function median(xs) {
  const a = xs.filter((x) => Number.isFinite(x)).sort((p, q) => p - q);
  if (!a.length) return NaN;
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}

export function pct(xs, p) {
  const a = [...xs].sort((x, y) => x - y);
  if (!a.length) return NaN;
  return a[Math.min(a.length - 1, Math.max(0, Math.ceil((p / 100) * a.length) - 1))];
}

/*
 * BENCH_PIN=1: the load generators (wrk, and this node process for the bursts) run on LOAD_CPU;
 * the servers are pinned to the other CPU by bench.mjs.
 */
export const LOAD_CPU = '1';
if (process.env.BENCH_PIN === '1') {
  spawnSync('taskset', ['-a', '-p', '-c', LOAD_CPU, String(process.pid)], { stdio: 'ignore' });
}

export function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => { out += d; });
    c.stderr.on('data', (d) => { err += d; });
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} -> ${code}\n${err}${out}`))));
  });
}

function toMs(v, unit) {
  const x = Number(v);
  if (unit === 'us') return x / 1000;
  if (unit === 'ms') return x;
  if (unit === 's') return x * 1000;
  if (unit === 'm') return x * 60000;
  return NaN;
}

/** Parses `wrk --latency` output: { rps, p50, p75, p90, p99 (ms), non2xx, socketErrors, requests }. */
export function parseWrk(out) {
  const r = { rps: NaN, non2xx: 0, socketErrors: 0, requests: 0 };
  let m = out.match(/Requests\/sec:\s+([\d.]+)/);
  if (m) r.rps = Number(m[1]);
  for (const p of [50, 75, 90, 99]) {
    m = out.match(new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm'));
    if (m) r[`p${p}`] = toMs(m[1], m[2]);
  }
  m = out.match(/Non-2xx or 3xx responses:\s+(\d+)/);
  if (m) r.non2xx = Number(m[1]);
  m = out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  if (m) r.socketErrors = Number(m[1]) + Number(m[2]) + Number(m[3]) + Number(m[4]);
  m = out.match(/(\d+) requests in/);
  if (m) r.requests = Number(m[1]);
  return r;
}

/** Runs wrk; opts: threads, conns, duration (s), headers {}, script, env. */
export async function wrk(url, { threads = 2, conns = 50, duration = 3, headers = {}, script, env } = {}) {
  const args = ['-t', String(threads), '-c', String(conns), '-d', `${duration}s`, '--latency', '--timeout', '5s'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  if (script) args.push('-s', script);
  args.push(url);
  const pinned = process.env.BENCH_PIN === '1';
  const out = await run(pinned ? 'taskset' : 'wrk', pinned ? ['-c', LOAD_CPU, 'wrk', ...args] : args,
    { env: { ...process.env, ...(env || {}) } });
  const r = parseWrk(out);
  r.raw = out;
  return r;
}

/** VmRSS (kB) and thread count of a pid. */
export function procStat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = Number((s.match(/VmRSS:\s+(\d+)/) || [])[1]);
    const threads = Number((s.match(/Threads:\s+(\d+)/) || [])[1]);
    const anon = Number((s.match(/RssAnon:\s+(\d+)/) || [])[1]);
    // PSS: shared library pages divided among the processes that map them
    let pss = NaN;
    try { pss = Number((fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').match(/^Pss:\s+(\d+)/m) || [])[1]); } catch { /* old kernel */ }
    return { rssKb: rss, anonKb: anon, pssKb: pss, threads };
  } catch {
    return { rssKb: NaN, anonKb: NaN, pssKb: NaN, threads: NaN };
  }
}

/* ---- a tiny HTTP/1.1 response reader over a raw socket ---- */

class Conn {
  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.waiter = null;
    sock.on('data', (d) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.check();
    });
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new Error('connection closed')));
  }

  fail(e) {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(e);
    }
  }

  check() {
    if (!this.waiter) return;
    const he = this.buf.indexOf('\r\n\r\n');
    if (he < 0) return;
    const head = this.buf.subarray(0, he).toString('latin1');
    const status = Number(head.slice(9, 12));
    const cl = head.match(/\r\ncontent-length:\s*(\d+)/i);
    let end = -1;
    if (cl) {
      end = he + 4 + Number(cl[1]);
      if (this.buf.length < end) return;
    } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      const t = this.buf.indexOf('\r\n0\r\n\r\n', he + 2);
      if (t < 0) return;
      end = t + 7;
    } else {
      end = he + 4; // no body (204/304) as far as we care
    }
    const body = this.buf.subarray(he + 4, end);
    this.buf = this.buf.subarray(end);
    const w = this.waiter;
    this.waiter = null;
    w.resolve({ status, body });
  }

  request(raw) {
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.sock.write(raw);
      this.check();
    });
  }

  close() {
    this.sock.removeAllListeners('close');
    this.sock.destroy();
  }
}

export function connect(port, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host, noDelay: true }, () => resolve(new Conn(s)));
    s.once('error', reject);
  });
}

export function rawGet(path, headers = {}) {
  let h = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
  for (const [k, v] of Object.entries(headers)) h += `${k}: ${v}\r\n`;
  return Buffer.from(`${h}\r\n`, 'latin1');
}

/**
 * Opens n keep-alive connections, warms each with `warmPath` (e.g. /health), then writes `req` on
 * all of them at once and waits for every response. Meanwhile a separate connection probes
 * `probePath` back to back (latency samples), and /proc/<pid> is sampled every 10 ms.
 * Returns { totalMs, p50, p99, max, ok, bad, statuses, probe: {n,p50,p99,max}, maxThreads, maxRssKb }.
 */
export async function burst({ port, n, req, warm, probe, pid, host = '127.0.0.1' }) {
  const conns = [];
  for (let i = 0; i < n; i += 100) {
    const k = Math.min(100, n - i);
    conns.push(...(await Promise.all(Array.from({ length: k }, () => connect(port, host)))));
  }
  const where = (phase) => (e) => { throw new Error(`burst to port ${port}, ${phase}: ${e.message}`); };
  if (warm) await Promise.all(conns.map((c) => c.request(warm))).catch(where('warm-up'));
  let done = false;
  const probeLat = [];
  let probeP = Promise.resolve();
  if (probe) {
    const pc = await connect(port, host);
    await pc.request(probe).catch(where('probe'));
    probeP = (async () => {
      while (!done) {
        const t = process.hrtime.bigint();
        const r = await pc.request(probe).catch(where('probe'));
        if (r.status === 200) probeLat.push(Number(process.hrtime.bigint() - t) / 1e6);
        await new Promise((res) => setImmediate(res));
      }
      pc.close();
    })();
  }
  let maxThreads = 0;
  let maxRssKb = 0;
  const sample = () => {
    if (!pid) return;
    const s = procStat(pid);
    maxThreads = Math.max(maxThreads, s.threads || 0);
    maxRssKb = Math.max(maxRssKb, s.rssKb || 0);
  };
  sample();
  const timer = setInterval(sample, 10);
  const lat = new Array(n);
  const statuses = {};
  const t0 = process.hrtime.bigint();
  // a request latch never answers must show up as an error, not hang the benchmark
  const guard = setTimeout(() => { for (const c of conns) c.sock.destroy(); }, 30000);
  await Promise.all(
    conns.map(async (c, i) => {
      try {
        const r = await c.request(req);
        statuses[r.status] = (statuses[r.status] || 0) + 1;
      } catch {
        statuses.err = (statuses.err || 0) + 1;
      }
      lat[i] = Number(process.hrtime.bigint() - t0) / 1e6;
    }),
  );
  const totalMs = Number(process.hrtime.bigint() - t0) / 1e6;
  clearTimeout(guard);
  done = true;
  clearInterval(timer);
  sample();
  await probeP;
  for (const c of conns) c.close();
  return {
    totalMs,
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    max: Math.max(...lat),
    ok: statuses[200] || 0,
    statuses,
    probe: { n: probeLat.length, p50: pct(probeLat, 50), p99: pct(probeLat, 99), max: Math.max(0, ...probeLat) },
    maxThreads,
    maxRssKb,
  };
}

/* ---- JSON over a keep-alive agent (setup, imports, connect flow) ---- */

export function makeClient(base, key, maxSockets = 64) {
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  const u = new URL(base);
  // a keep-alive socket that latch's idle timeout (10 s) closes just as a request reuses it
  // fails with ECONNRESET / "socket hang up"; node's documented remedy is to retry on a new
  // socket (every call here is idempotent: reads and upserts by connection id)
  const call = async (method, path, body, headers = {}) => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await callOnce(method, path, body, headers);
      } catch (e) {
        if (attempt >= 2 || !e.reusedSocket) throw e;
      }
    }
  };
  return call;
  function callOnce(method, path, body, headers) {
    return new Promise((resolve, reject) => {
      const h = { ...headers };
      if (key && !('authorization' in h)) h.authorization = `Bearer ${key}`;
      let payload;
      if (body !== undefined) {
        payload = Buffer.from(JSON.stringify(body));
        h['content-type'] = 'application/json';
        h['content-length'] = payload.length;
      }
      const rq = http.request({ host: u.hostname, port: u.port, method, path, headers: h, agent }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks);
          let json = null;
          try { json = JSON.parse(text.toString('utf8')); } catch { /* raw */ }
          resolve({ status: res.statusCode, headers: res.headers, body: text, json });
        });
      });
      rq.on('error', (e) => { e.reusedSocket = rq.reusedSocket; reject(e); });
      if (payload) rq.write(payload);
      rq.end();
    });
  }
}

/** Runs `fn(i)` for i in [from, to) with `conc` workers; returns elapsed ms. */
export async function pool(from, to, conc, fn) {
  let next = from;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: conc }, async () => {
    while (next < to) {
      const i = next++;
      await fn(i);
    }
  }));
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * Open-loop load: starts one `fn()` every 1000/rate ms for `seconds`, whatever the previous ones
 * are doing (a slow server cannot slow the arrivals down). Latency is measured from the scheduled
 * start, so queueing behind a late send counts too (no coordinated omission).
 * Returns { n, ok, statuses, p50, p99, max } (ms).
 */
export async function paced(rate, seconds, fn) {
  const lat = [];
  const statuses = {};
  const pending = [];
  const t0 = performance.now();
  const total = Math.round(rate * seconds);
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    // from the scheduled start when the send is late (queueing counts), from the actual send
    // when it is early (a timer fired early, or the wait was under 1 ms and skipped): the
    // earlier of the two. Never from a time in the future.
    const start = Math.min(due, performance.now());
    pending.push(fn().then((r) => {
      lat.push(performance.now() - start);
      statuses[r.status] = (statuses[r.status] || 0) + 1;
    }, () => { statuses.error = (statuses.error || 0) + 1; }));
  }
  await Promise.all(pending);
  return { n: total, ok: statuses[200] || 0, statuses, p50: pct(lat, 50), p99: pct(lat, 99), max: Math.max(...lat) };
}
