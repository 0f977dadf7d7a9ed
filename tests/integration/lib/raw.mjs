// Raw HTTP/1.1 over node:net, for tests about framing and connection handling that fetch() hides:
// exact bytes out, every byte back, and how the connection ended (closed by latch or not).
import net from 'node:net';

/**
 * Sends data on a new connection; collects every byte until latch closes the connection or
 * timeoutMs passes. halfClose: shut the write side after sending (EOF), halfCloseAfterMs later
 * (so that the EOF reaches latch on its own, after the request bytes were processed). Resolves
 * {how: 'closed'|'timeout'|'error', bytes, ms, responses}; ms is the time from the last write.
 */
export function exchange(port, data, { halfClose = false, halfCloseAfterMs = 0, timeoutMs = 5000, host = '127.0.0.1', localAddress } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host, ...(localAddress ? { localAddress } : {}) });
    const chunks = [];
    let done = false;
    let t0 = Date.now();
    let timer = null;
    const finish = (how) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const bytes = Buffer.concat(chunks);
      resolve({ how, bytes, ms: Date.now() - t0, responses: parseResponses(bytes) });
    };
    sock.on('error', () => finish('error'));
    sock.on('close', () => finish('closed'));
    sock.on('data', (c) => chunks.push(c));
    sock.on('connect', () => {
      sock.write(data, () => {
        t0 = Date.now();
        timer = setTimeout(() => finish('timeout'), timeoutMs);
        if (halfClose && halfCloseAfterMs > 0) setTimeout(() => { t0 = Date.now(); sock.end(); }, halfCloseAfterMs);
        else if (halfClose) sock.end();
      });
    });
  });
}

/** Every complete response in buf: [{status, headers (lower-case names), body}]. */
export function parseResponses(buf) {
  const out = [];
  let off = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', off);
    if (end < 0) break;
    const lines = buf.subarray(off, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) break;
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    const body = buf.subarray(end + 4, end + 4 + len);
    out.push({ status: Number(m[1]), headers, body: body.toString('utf8') });
    off = end + 4 + len;
  }
  return out;
}

/** Request bytes: head from method, target and headers (object), then body (string/Buffer). */
export function rawRequest(method, target, headers = {}, body = undefined, version = 'HTTP/1.1') {
  const head = `${method} ${target} ${version}\r\n` +
    Object.entries({ host: '127.0.0.1', ...headers }).filter(([, v]) => v !== null)
      .map(([k, v]) => (Array.isArray(v) ? v.map((x) => `${k}: ${x}\r\n`).join('') : `${k}: ${v}\r\n`)).join('') + '\r\n';
  const b = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  return Buffer.concat([Buffer.from(head, 'latin1'), b]);
}
