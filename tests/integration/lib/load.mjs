// Many concurrent HTTP requests from one process, with a bounded socket pool.
import fs from 'node:fs';
import http from 'node:http';

export function request(url, { method = 'GET', headers = {}, body, agent } = {}) {
  if (body !== undefined && !Object.keys(headers).some((k) => k.toLowerCase() === 'content-length')) {
    // node sends DELETE bodies without any framing unless told the length
    headers = { ...headers, 'content-length': Buffer.byteLength(body) };
  }
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        let json = null;
        try { json = JSON.parse(buf.toString('utf8')); } catch { /* not json */ }
        resolve({ status: res.statusCode, headers: res.headers, body: buf, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.end(body); else req.end();
  });
}

/** Fires n requests at once (at most `sockets` in flight per agent); resolves all results. */
export async function burst(n, make, { sockets = 256 } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets });
  try {
    return await Promise.all(Array.from({ length: n }, (_, i) => make(i, agent)));
  } finally {
    agent.destroy();
  }
}

export function rssKb(pid) {
  const txt = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(txt)[1]);
}

/** A deterministic PRNG (mulberry32) in [0, 1): failing randomized runs replay from their seed. */
export function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
