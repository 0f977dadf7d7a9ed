// A NinjaOne-shaped HTTPS upstream that answers every request after DELAY ms without blocking
// (one setTimeout per request), for the slow-upstream fan-out case of bench/run.
//
//   node slow_upstream.mjs --bind 127.a.b.c --port 443 --cert server.pem --key server.key --delay 200
//
// Prints {"port":N} on stdout when listening. Keep-alive, no connection cap.
import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const delay = Number(args.delay ?? 200);
const body = JSON.stringify([{ id: 1, name: 'Bench Org', nodeApprovalMode: 'AUTOMATIC', description: 'slow upstream' }]);
let served = 0;
let inflight = 0;
let maxInflight = 0;

function handler(req, res) {
  req.resume();
  req.on('end', () => {
    if (req.url === '/__stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ served, inflight, max_inflight: maxInflight }));
      return;
    }
    inflight++;
    if (inflight > maxInflight) maxInflight = inflight;
    setTimeout(() => {
      inflight--;
      served++;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    }, delay);
  });
}

const server = args.cert
  ? https.createServer({ cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key) }, handler)
  : http.createServer(handler);
server.keepAliveTimeout = 120000;
server.headersTimeout = 130000;
server.requestTimeout = 0;
server.maxConnections = 100000;
server.listen(Number(args.port ?? 0), args.bind ?? '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
