// Hostile values in every template input (issue 12), driven by the catalogue: for every provider
// latch marks linkable in API_KEY / BASIC / TWO_STEP / OAUTH2_CC, every connection_config and
// credential field that a request template uses (proxy.base_url, proxy.headers, proxy.query,
// proxy.verification, token_url, token_params, token_headers) gets values that would change the
// host, the path or a header of an outbound request. Each must be refused (4xx) by the link route
// of @nangohq/frontend and by the import route (POST /connections), before any socket: the hosts
// such values point at are pinned (LATCH_RESOLVE) to the generic fake upstream, which must see no
// TCP connection at all. latch stays healthy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startLatch, api, tmpDir } from './lib/stack.mjs';
import { loadCatalog, genValues, MODES } from './lib/catalog.mjs';
import { startGenericUpstream } from './lib/generic_upstream.mjs';

const PARALLEL = 8;
const EVIL = ['evil.com', 'attacker.example', 'internal.corp'];

// position -> values that would move the request somewhere else or split a header
const HOSTILE = {
  host: ['evil.com/', 'evil.com#', 'evil.com?', 'x@evil.com', 'evil.com\\', 'evil.com/x/..', 'a.b/../../evil.com', 'evil.com%2f', 'evil.com\u3002', 'evil.com\r\nX: 1', 'evil.com\u0000'],
  path: ['../../../evil', 'a/../../b', 'a?x=evil', 'a#frag', '%2e%2e%2fevil', 'a/b\\..\\c', 'a\r\nX-Injected: 1', 'a\u0000b'],
  header: ['v\r\nX-Injected: 1', 'v\nX-Injected: 1', 'v\rX-Injected: 1', 'v\u0000x'],
};
// Values put in a query are percent-encoded and values inside base64(...) (Basic) are encoded: neither
// can change a host, path or header, so they are not positions here.

let up;
let latch;
let secretKey;
let catalogue;
let linkable = [];

/** Where each input of an entry is used: {name: Set('host'|'path'|'header'|'query')}, by section. */
function inputs(entry) {
  const out = { connection_config: new Map(), credentials: new Map() };
  const add = (sec, name, pos) => { if (!out[sec].has(name)) out[sec].set(name, new Set()); out[sec].get(name).add(pos); };
  const scanUrl = (u) => {
    if (typeof u !== 'string') return;
    for (const alt of u.split(/\s*\|\|\s*/)) {
      const authorityEnd = alt.replace(/^https?:\/\//, '').search(/\//);
      const prefix = alt.match(/^https?:\/\//)?.[0].length ?? 0;
      const queryAt = alt.search(/[?#]/); // a value after '?' is a percent-encoded query value
      for (const m of alt.matchAll(/\$\{(connectionConfig|credentials)\.(\w+)\}/g)) {
        if (queryAt >= 0 && m.index > queryAt) continue;
        const inHost = authorityEnd < 0 || m.index < prefix + authorityEnd || m.index === 0;
        add(m[1] === 'connectionConfig' ? 'connection_config' : 'credentials', m[2], inHost ? 'host' : 'path');
      }
    }
  };
  scanUrl(entry.proxy?.base_url); scanUrl(entry.token_url); scanUrl(entry.proxy?.verification?.base_url_override);
  for (const ep of entry.proxy?.verification?.endpoints || []) scanUrl(`https://h/${ep}`);
  const scanHeader = (obj, pos) => {
    for (const v of Object.values(obj || {})) {
      if (typeof v !== 'string') continue;
      const plain = v.replace(/\$\{base64\([\s\S]*?\)\}/g, ''); // base64(...) encodes what it wraps
      for (const m of plain.matchAll(/\$\{(connectionConfig|credentials)\.(\w+)\}/g)) add(m[1] === 'connectionConfig' ? 'connection_config' : 'credentials', m[2], pos);
      for (const m of plain.matchAll(/\$\{(apiKey|username|password)\}/g)) add('credentials', m[1], pos);
    }
  };
  scanHeader(entry.proxy?.headers, 'header'); scanHeader(entry.token_headers, 'header'); scanHeader(entry.proxy?.verification?.headers, 'header');
  // hidden / automated fields are not the user's to set
  for (const sec of ['connection_config', 'credentials']) {
    for (const name of [...out[sec].keys()]) {
      const def = entry[sec]?.[name];
      if (def && (def.hidden || def.automated)) out[sec].delete(name);
    }
  }
  return out;
}

before(async () => {
  catalogue = loadCatalog();
  up = await startGenericUpstream({ hosts: EVIL });
  secretKey = crypto.randomUUID();
  latch = await startLatch({
    dir: tmpDir('hostile12-'),
    // rate limits off: hundreds of links from one address would otherwise meet the per-IP budget
    // of the browser routes on a fast machine, and a 429 says nothing about the value
    env: { LATCH_SECRET_KEY: secretKey, LATCH_RESOLVE: up.resolveFor(EVIL).join(','), LATCH_CA_FILE: up.tls.ca, LATCH_ALLOW_PRIVATE: 'true', LATCH_LOG_LEVEL: 'warn', LATCH_RATE_LIMIT_IP: '1000000', LATCH_RATE_LIMIT_ENV: '1000000' },
  });
  const r = await api(latch.url, secretKey, 'GET', '/providers');
  assert.equal(r.status, 200);
  const byName = new Map((r.json.data ?? r.json).map((p) => [p.name, p]));
  linkable = Object.entries(catalogue.merged).filter(([k, e]) => e && MODES.includes(e.auth_mode) && byName.get(k)?.latch?.linkable === true).map(([k]) => k);
});

after(async () => {
  await latch?.stop();
  await up?.stop();
});

async function pool(items, n, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

const ROUTE = { API_KEY: 'api-auth/api-key', BASIC: 'api-auth/basic', TWO_STEP: 'auth/two-step', OAUTH2_CC: 'oauth2/auth' };

test('hostile values in every template input are refused by the link and import routes, no socket opened', { timeout: 600000 }, async () => {
  assert.ok(linkable.length > 0, 'latch marks no provider linkable');
  const call = (m, p, b) => api(latch.url, secretKey, m, p, b);
  const problems = [];
  let attempts = 0;
  let i = 0;
  await pool(linkable, PARALLEL, async (key) => {
    const entry = catalogue.merged[key];
    const idx = ++i;
    const r0 = await call('POST', '/integrations', { provider: key, unique_key: key });
    if (r0.status !== 200) { problems.push(`${key}: POST /integrations ${r0.status}`); return; }
    const base = genValues(entry, { seed: 7000 + idx, tag: `h${idx}` });
    const ins = inputs(entry);
    for (const sec of ['connection_config', 'credentials']) {
      for (const [name, positions] of ins[sec]) {
        const values = new Set();
        for (const p of positions) for (const v of HOSTILE[p] || []) values.add(v);
        for (const bad of values) {
          attempts++;
          const cc = { ...base.connectionConfig };
          const cred = { ...base.credentials };
          if (sec === 'connection_config') cc[name] = bad; else cred[name] = bad;
          const s = await call('POST', '/connect/sessions', { end_user: { id: `h-${idx}` }, allowed_integrations: [key] });
          const q = [`connect_session_token=${s.json?.data?.token}`, ...Object.entries(cc).map(([k, v]) => `params[${encodeURIComponent(k)}]=${encodeURIComponent(v)}`)];
          const body = entry.auth_mode === 'TWO_STEP' ? { type: 'TWO_STEP', ...cred } : cred;
          const l = await api(latch.url, null, 'POST', `/${ROUTE[entry.auth_mode]}/${key}?${q.join('&')}`, body);
          // refused for the value itself (400), not for any other reason a 4xx could have
          if (l.status !== 400) problems.push(`${key} link ${sec}.${name}=${JSON.stringify(bad)}: ${l.status} ${l.text.slice(0, 160)}`);
          const impCred = { type: entry.auth_mode, ...cred };
          if (entry.auth_mode === 'OAUTH2_CC' || entry.auth_mode === 'TWO_STEP') impCred.token = `tok${crypto.randomBytes(6).toString('hex')}`;
          const im = await call('POST', '/connections', { provider_config_key: key, connection_id: `hostile-${idx}`, connection_config: cc, credentials: impCred });
          if (im.status !== 400) problems.push(`${key} import ${sec}.${name}=${JSON.stringify(bad)}: ${im.status} ${im.text.slice(0, 160)}`);
        }
      }
    }
  });
  const counts = up.counts();
  console.log(`${attempts} hostile values over ${linkable.length} linkable providers; upstream saw ${counts.tcp} TCP connections`);
  assert.ok(attempts > linkable.length, 'every provider had template inputs to try');
  assert.equal(counts.tcp, 0, `sockets were opened to a hostile host: ${JSON.stringify(up.requests.slice(0, 5).map((q) => `${q.host}${q.url}`))}`);
  if (problems.length) console.log(`NOT REFUSED (${problems.length}):\n  ${problems.join('\n  ')}`);
  assert.equal(problems.length, 0, `${problems.length} hostile value(s) not refused, first: ${problems.slice(0, 5).join(' | ')}`);
  const h = await api(latch.url, null, 'GET', '/health');
  assert.equal(h.status, 200);
});
