// A host app on another origin for the browser tests: serves the files of tests/integration/fixtures
// (`/<name>.html`, `/<name>.js`; `/` is `index`) and the real @nangohq/frontend ESM build from
// node_modules at /sdk/. On 127.0.0.1; `url` names it `localhost` unless told otherwise, so that it
// is another origin (and another site) than latch at 127.0.0.1.
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const FIXTURES = path.join(import.meta.dirname, '..', 'fixtures');

export async function startHostServer({ index = 'host.html', hostname = 'localhost' } = {}) {
  const sdkDir = path.dirname(require.resolve('@nangohq/frontend'));
  const server = http.createServer(async (req, res) => {
    const u = new URL(req.url, 'http://x');
    const name = u.pathname === '/' ? index : u.pathname.slice(1);
    let file = null;
    if (/^[A-Za-z0-9_.-]+\.(html|js)$/.test(name)) file = path.join(FIXTURES, name);
    else if (/^sdk\/[A-Za-z0-9_.-]+\.js$/.test(name)) file = path.join(sdkDir, path.basename(name));
    if (!file) { res.writeHead(404).end(); return; }
    const type = file.endsWith('.html') ? 'text/html; charset=utf-8' : 'text/javascript; charset=utf-8';
    try {
      res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' }).end(await fs.readFile(file));
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://${hostname}:${server.address().port}`,
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }),
  };
}
