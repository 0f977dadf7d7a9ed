// Catalogue-wide conformance (issue 12), driven by the catalogue itself: Nango's pinned
// providers.yaml merged with latch's overlay, read here with a YAML parser, independently of latch.
//
// One latch, one generic fake upstream (lib/generic_upstream.mjs: TLS with a test-CA certificate
// for every host under test, pinned with LATCH_RESOLVE). For every provider that latch's
// GET /providers marks linkable in the modes API_KEY, BASIC, TWO_STEP and OAUTH2_CC:
//   1. POST /integrations, POST /connect/sessions;
//   2. link through @nangohq/frontend's own route (the unchanged SDK's auth() in node; plain fetch
//      to the same route only where the SDK would drop a credential field), with credential and
//      connection_config values generated from the entry's field definitions;
//   3. check the credentials arrived exactly where the entry says: at the verification endpoint
//      (API_KEY/BASIC with proxy.verification) or at the token endpoint (OAUTH2_CC/TWO_STEP: client
//      auth in body or Basic, body_format, token_params, token_headers), and latch's "verified";
//   4. one proxied request (/proxy/... with Connection-Id, Provider-Config-Key): host, path, the
//      auth headers / query the entry's proxy.headers / proxy.query templates give.
// Prints `N linked and proxied of M linkable (of 1013)` and every failure with its reason; fails
// if any linkable provider fails. The MSP list of the issue is checked by name in a second test.
//
// Env: CONFORMANCE_ONLY=key1,key2 (a subset), CONFORMANCE_PARALLEL (8).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Nango from '@nangohq/frontend';
import { startLatch, api, tmpDir, BUILD } from './lib/stack.mjs';
import {
  loadCatalog, genValues, MODES, DYNAMIC, interp, interpAlt, templateCtx, expectedAuth, joinUrl, setPath,
} from './lib/catalog.mjs';
import { startGenericUpstream } from './lib/generic_upstream.mjs';

const PARALLEL = Number(process.env.CONFORMANCE_PARALLEL || 8);
const ONLY = process.env.CONFORMANCE_ONLY ? new Set(process.env.CONFORMANCE_ONLY.split(',')) : null;
const CATALOGUE_SIZE = 1013;

export const MSP = {
  API_KEY: ['ninjaone-saas-backup', 'autotask', 'itglue', 'sentinelone', 'knowbe4'],
  BASIC: ['connectwise-psa', 'huntress', 'freshservice', 'freshdesk', 'auvik', 'bitdefender', 'zendesk-api-key'],
  TWO_STEP: ['datto-rmm-password-grant', 'nable-ncentral', 'passportal'],
  OAUTH2_CC: ['halo-psa', 'connectwise-rmm', 'pax8', 'immybot', 'crowdstrike', 'microsoft-oauth2-cc', 'microsoft-intune'],
};

let catalogue;
let plans; // key -> plan
let up;
let latch;
let secretKey;
let providers; // latch's GET /providers, by name
const results = new Map(); // key -> { ok, reason, linkable, latchReason }

const short = (s, n = 300) => (s.length > n ? `${s.slice(0, n)}…` : s);

/** Everything the test needs to know about one provider before latch starts (its hosts). */
function makePlan(key, entry, i) {
  const tag = `c${i}x${crypto.randomBytes(2).toString('hex')}`;
  const values = genValues(entry, { seed: 1000 + i, tag });
  const plan = { key, entry, mode: entry.auth_mode, tag, values, hosts: new Set(), token: null, metadata: {} };
  // connection_config a token response fills in (token_response_metadata): the fake answers it
  for (const m of [].concat(entry.token_response_metadata || [])) {
    const v = `https://${tag}-m.conformance.example.com`;
    plan.metadata[m] = v;
    values.ccAll[m] = v;
  }
  if (plan.mode === 'OAUTH2_CC' || plan.mode === 'TWO_STEP') {
    plan.token = `tok${tag}${crypto.randomBytes(12).toString('hex')}`;
    const tu = interpAlt(entry.token_url, templateCtx(values));
    if (tu && tu !== DYNAMIC) {
      try { plan.tokenUrl = new URL(tu); plan.hosts.add(plan.tokenUrl.hostname); } catch { /* reported at run time */ }
    }
  }
  const base = interpAlt(entry.proxy?.base_url, templateCtx(values, { token: plan.token }));
  if (base && base !== DYNAMIC) {
    try { plan.base = new URL(joinUrl(base, '')); plan.hosts.add(plan.base.hostname); } catch { /* reported */ }
  }
  const ver = entry.proxy?.verification;
  if (ver && Array.isArray(ver.endpoints) && ver.endpoints.length) {
    const vb = ver.base_url_override ? interpAlt(ver.base_url_override, templateCtx(values)) : base;
    if (vb && vb !== DYNAMIC) {
      const ep = interp(String(ver.endpoints[0]), templateCtx(values));
      try {
        plan.verification = { method: (ver.method || 'GET').toUpperCase(), url: new URL(joinUrl(vb, ep || '')), headers: ver.headers || {} };
        plan.hosts.add(plan.verification.url.hostname);
      } catch { /* reported */ }
    }
  }
  return plan;
}

/** The token answer the entry's token_response paths expect. */
function tokenAnswer(plan) {
  const tr = plan.entry.token_response || {};
  const body = {};
  setPath(body, tr.token || 'access_token', plan.token);
  const expPath = tr.token_expiration || 'expires_in';
  if (tr.token_expiration_strategy === 'expireAt') setPath(body, expPath, new Date(Date.now() + 3600e3).toISOString());
  else setPath(body, expPath, 3600);
  if (!tr.token) body.token_type = 'Bearer';
  Object.assign(body, plan.metadata);
  return body;
}

function parseBody(rec) {
  const ct = String(rec.headers['content-type'] || '');
  if (/json/.test(ct)) { try { return JSON.parse(rec.body); } catch { return null; } }
  return Object.fromEntries(new URLSearchParams(rec.body));
}

/** Compares one expected header map against a recorded request; pushes problems. */
function checkHeaders(what, rec, want, problems) {
  for (const [k, v] of Object.entries(want)) {
    const got = rec.headers[k.toLowerCase()];
    if (v === DYNAMIC) {
      if (!got || got.includes('${')) problems.push(`${what}: header ${k} missing or uninterpolated (${got})`);
    } else if (got !== v) problems.push(`${what}: header ${k} = ${JSON.stringify(got)}, want ${JSON.stringify(v)}`);
  }
}

function checkQuery(what, rec, want, problems) {
  for (const [k, v] of Object.entries(want)) {
    if (v === DYNAMIC) { if (!(k in rec.query)) problems.push(`${what}: query ${k} missing`); continue; }
    if (rec.query[k] !== v) problems.push(`${what}: query ${k} = ${JSON.stringify(rec.query[k])}, want ${JSON.stringify(v)}`);
  }
}

/** Credentials the entry's own URL templates put in a URL (algolia's /1/keys/${apiKey}, twilio's
 *  /Accounts/${credentials.username}/...): Nango sends them there, so they may appear. */
function urlCredentials(entry) {
  const urls = [entry.proxy?.base_url, entry.token_url, entry.proxy?.verification?.base_url_override,
    ...(entry.proxy?.verification?.endpoints || [])].filter((x) => typeof x === 'string');
  const names = new Set();
  for (const u of urls) {
    for (const m of u.matchAll(/\$\{(?:credentials\.)?(\w+)\}/g)) names.add(m[1]);
  }
  return names;
}

/** A secret may only travel where the entry puts it: not in a URL unless proxy.query or a URL
 *  template of the entry says so. */
function checkNotInUrl(what, rec, plan, allowed, problems) {
  const inUrl = urlCredentials(plan.entry);
  for (const [name, v] of Object.entries(plan.values.credentials)) {
    if (!v || v.length < 8 || allowed.has(v) || inUrl.has(name)) continue;
    if (rec.url.includes(v) || rec.url.includes(encodeURIComponent(v))) problems.push(`${what}: credential ${name} appears in the URL ${short(rec.url, 120)}`);
  }
}

/** Deep-compares interpolated token_params with what the token endpoint got. */
function checkParams(what, got, tpl, ctx, problems, prefix = '') {
  for (const [k, v] of Object.entries(tpl || {})) {
    const name = prefix + k;
    if (v && typeof v === 'object') { checkParams(what, got?.[k] ?? {}, v, ctx, problems, `${name}.`); continue; }
    const want = interpAlt(String(v), ctx);
    if (want === null) continue; // an absent optional input: Nango leaves it out
    const g = got?.[k];
    if (want === DYNAMIC) { if (g === undefined) problems.push(`${what}: param ${name} missing`); continue; }
    if (String(g) !== want) problems.push(`${what}: param ${name} = ${JSON.stringify(g)}, want ${JSON.stringify(want)}`);
  }
}

async function linkOne(plan) {
  const { key, entry, values } = plan;
  const problems = [];
  let r = await api(latch.url, secretKey, 'POST', '/integrations', { provider: key, unique_key: key });
  if (r.status !== 200 && r.status !== 201) return { ok: false, reason: `POST /integrations: ${r.status} ${short(r.text)}` };
  r = await api(latch.url, secretKey, 'POST', '/connect/sessions', { end_user: { id: `conf-${plan.tag}`, email: `${plan.tag}@conformance.example.com` }, allowed_integrations: [key] });
  if (r.status !== 201 && r.status !== 200) return { ok: false, reason: `POST /connect/sessions: ${r.status} ${short(r.text)}` };
  const token = r.json.data.token;

  // the token endpoint answers for this provider
  let removeRule = null;
  if (plan.tokenUrl) {
    removeRule = up.rule({ host: plan.tokenUrl.hostname, path: plan.tokenUrl.pathname }, () => ({ status: 200, json: tokenAnswer(plan) }));
  }
  const mark = up.requests.length;
  // 2. link through the SDK's route
  let credentials;
  if (plan.mode === 'API_KEY') credentials = { apiKey: values.credentials.apiKey ?? '' };
  else if (plan.mode === 'BASIC') credentials = { username: values.credentials.username ?? '', password: values.credentials.password ?? '' };
  else if (plan.mode === 'TWO_STEP') credentials = { type: 'TWO_STEP', ...values.credentials };
  else credentials = { client_id: values.credentials.client_id, client_secret: values.credentials.client_secret };
  const extra = Object.keys(values.credentials).filter((k) => !(k in credentials));
  let linkRes;
  const params = values.connectionConfig;
  if (!extra.length) {
    const nango = new Nango({ host: latch.url, connectSessionToken: token });
    try {
      linkRes = { status: 200, json: await nango.auth(key, { credentials, params }) };
    } catch (e) {
      linkRes = { status: 0, text: `${e.type ?? ''} ${e.message}` };
    }
  } else {
    // the SDK keeps only apiKey/username/password (API_KEY, BASIC) or client_id/secret: send every
    // field the entry declares, to the same route, with the SDK's query string
    const route = { API_KEY: 'api-auth/api-key', BASIC: 'api-auth/basic', OAUTH2_CC: 'oauth2/auth' }[plan.mode];
    const q = [`connect_session_token=${token}`, ...Object.entries(params).map(([k, v]) => `params[${encodeURIComponent(k)}]=${encodeURIComponent(v)}`)];
    linkRes = await api(latch.url, null, 'POST', `/${route}/${key}?${q.join('&')}`, { ...credentials, ...values.credentials });
  }
  removeRule?.();
  if (linkRes.status !== 200) return { ok: false, reason: `link: ${linkRes.status} ${short(linkRes.text ?? JSON.stringify(linkRes.json))}` };
  const connectionId = linkRes.json?.connectionId;
  if (!connectionId) return { ok: false, reason: `link answer has no connectionId: ${short(JSON.stringify(linkRes.json))}` };
  const linkReqs = up.requests.slice(mark).filter((q) => plan.hosts.has(q.host));
  const verified = linkRes.json?.latch?.verified;
  if (typeof verified !== 'boolean') problems.push(`link answer lacks latch.verified: ${short(JSON.stringify(linkRes.json))}`);

  // 3. where the credentials arrived
  if (plan.mode === 'API_KEY' || plan.mode === 'BASIC') {
    const auth = expectedAuth(entry, values);
    if (plan.verification) {
      const v = plan.verification;
      const hit = linkReqs.find((q) => q.host === v.url.hostname && q.path === v.url.pathname);
      if (!hit) problems.push(`verification: no ${v.method} ${v.url.href} upstream (saw ${linkReqs.map((q) => `${q.method} ${q.host}${q.path}`).join(', ') || 'nothing'})`);
      else {
        if (hit.method !== v.method) problems.push(`verification: method ${hit.method}, want ${v.method}`);
        // Nango's testConnectionCredentials passes verification.headers as the proxy call's own
        // headers, which override proxy.headers (buildProxyHeaders: { ...headers, ...config.headers })
        const vh = {};
        for (const [k, x] of Object.entries(v.headers)) { const y = interp(String(x), templateCtx(values)); if (y !== null) vh[k.toLowerCase()] = y; }
        const want = Object.fromEntries(Object.entries(auth.headers).map(([k, x]) => [k.toLowerCase(), x]));
        checkHeaders('verification', hit, { ...want, ...vh }, problems);
        checkQuery('verification', hit, { ...Object.fromEntries(v.url.searchParams), ...auth.query }, problems);
        checkNotInUrl('verification', hit, plan, new Set(Object.values(auth.query)), problems);
      }
      if (verified !== true) problems.push(`latch.verified is ${verified} although the entry defines proxy.verification`);
    } else {
      if (linkReqs.length) problems.push(`no verification is defined, yet latch called upstream: ${linkReqs.map((q) => `${q.method} ${q.host}${q.path}`).join(', ')}`);
      if (verified !== false) problems.push(`latch.verified is ${verified} although the entry defines no verification`);
    }
  } else {
    const ctx = templateCtx(values);
    const tu = plan.tokenUrl;
    const hit = tu && linkReqs.find((q) => q.host === tu.hostname && q.path === tu.pathname);
    if (!tu) problems.push(`test cannot compute the token URL ${entry.token_url}`);
    else if (!hit) problems.push(`token request: none at ${tu.href} (saw ${linkReqs.map((q) => `${q.method} ${q.host}${q.path}`).join(', ') || 'nothing'})`);
    else {
      const wantMethod = (entry.token_request_method || 'POST').toUpperCase();
      if (hit.method !== wantMethod) problems.push(`token request: method ${hit.method}, want ${wantMethod}`);
      const body = hit.method === 'GET' ? hit.query : parseBody(hit);
      if (!body) problems.push(`token request: body not parseable as ${hit.headers['content-type']}: ${short(hit.body, 120)}`);
      if (entry.body_format === 'json' && !/json/.test(String(hit.headers['content-type']))) problems.push(`token request: content-type ${hit.headers['content-type']}, body_format json`);
      if ((entry.body_format === 'form' || (plan.mode === 'OAUTH2_CC' && !entry.body_format)) && hit.method !== 'GET' && !/x-www-form-urlencoded/.test(String(hit.headers['content-type']))) {
        problems.push(`token request: content-type ${hit.headers['content-type']}, want form`);
      }
      checkParams('token request', body, entry.token_params, ctx, problems);
      const th = {};
      for (const [k, v] of Object.entries(entry.token_headers || {})) { const x = interpAlt(String(v), ctx); if (x !== null) th[k.toLowerCase()] = x; }
      if (plan.mode === 'OAUTH2_CC') {
        const { client_id: id, client_secret: sec } = values.credentials;
        if (entry.token_request_auth_method === 'basic') {
          const plain = `Basic ${Buffer.from(`${id}:${sec}`).toString('base64')}`;
          if (hit.headers.authorization !== plain && !th.authorization) problems.push(`token request: Authorization ${hit.headers.authorization}, want Basic client credentials`);
          if (body && body.client_secret !== undefined) problems.push('token request: client_secret in the body although token_request_auth_method is basic');
        } else if (entry.token_request_auth_method === 'custom') {
          // Nango: client_id/client_secret sent as username/password in the body
          if (body && (body.username !== id || body.password !== sec)) problems.push(`token request: custom auth wants username/password in the body (${Object.keys(body).join(',')})`);
        } else if (body && (body.client_id !== id || body.client_secret !== sec)) {
          problems.push(`token request: client_id/client_secret not in the body (${Object.keys(body).join(',')})`);
        }
        // (Nango adds no grant_type of its own: token_params carry it, checked above)
      }
      checkHeaders('token request', hit, th, problems);
      checkNotInUrl('token request', hit, plan, new Set(), problems);
    }
  }

  // 4. one proxied request
  const endpoint = `/conformance/${plan.tag}`;
  const pmark = up.requests.length;
  const pr = await api(latch.url, secretKey, 'GET', `/proxy${endpoint}?probe=${plan.tag}`, undefined, { headers: { 'connection-id': connectionId, 'provider-config-key': key } });
  const preqs = up.requests.slice(pmark).filter((q) => plan.hosts.has(q.host));
  if (pr.status !== 200) problems.push(`proxy: ${pr.status} ${short(pr.text)}`);
  const base = interpAlt(entry.proxy?.base_url, templateCtx(values, { token: plan.token }));
  if (!base || base === DYNAMIC) problems.push(`test cannot compute proxy.base_url ${entry.proxy?.base_url}`);
  else {
    const want = new URL(joinUrl(base, endpoint));
    const hit = preqs.find((q) => q.host === want.hostname && q.path === want.pathname);
    if (!hit) problems.push(`proxy: no request at ${want.href} (saw ${preqs.map((q) => `${q.method} ${q.host}${q.path}`).join(', ') || 'nothing'})`);
    else {
      if (hit.method !== 'GET') problems.push(`proxy: method ${hit.method}`);
      const auth = expectedAuth(entry, values, { token: plan.token });
      checkHeaders('proxy', hit, auth.headers, problems);
      checkQuery('proxy', hit, { probe: plan.tag, ...auth.query }, problems);
      checkNotInUrl('proxy', hit, plan, new Set(Object.values(auth.query)), problems);
    }
  }
  return problems.length ? { ok: false, reason: problems.join('; ') } : { ok: true };
}

// latch takes at most 4096 LATCH_RESOLVE entries in 256 KiB (src/net/destpolicy.c,
// DESTPOLICY_MAX_PINS): the whole catalogue's hosts fit in one batch; batching (latch restarted on
// the same database with each batch pinned) stays for a catalogue that outgrows it.
const MAX_PINS = 4000;
let latchDir;
let restarts = 0;
async function pinHosts(hosts) {
  if (latch) { await latch.stop(); restarts++; }
  latch = await startLatch({
    dir: latchDir,
    port: latch?.port,
    env: {
      LATCH_SECRET_KEY: secretKey,
      LATCH_RESOLVE: up.resolveFor(hosts).join(','),
      LATCH_CA_FILE: up.tls.ca,
      LATCH_ALLOW_PRIVATE: 'true',
      LATCH_LOG_LEVEL: 'info',
      // one address links hundreds of providers in a few seconds: on a fast machine that is past
      // the per-IP budget of the browser routes (100/s, bursts of 200), which it.ratelimit tests
      LATCH_RATE_LIMIT_IP: '1000000',
      LATCH_RATE_LIMIT_ENV: '1000000',
    },
  });
}

/** Packs host groups into batches of at most MAX_PINS hosts. */
function batches(groups) {
  const out = [];
  let cur = [];
  let n = 0;
  for (const g of groups) {
    const h = new Set(g.flatMap((p) => [...p.hosts])).size;
    if (n + h > MAX_PINS && cur.length) { out.push(cur); cur = []; n = 0; }
    cur.push(g);
    n += h;
  }
  if (cur.length) out.push(cur);
  return out;
}

/** Runs fn over items, at most n at a time. */
async function pool(items, n, fn) {
  let next = 0;
  const workers = Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) { const it = items[next++]; await fn(it); }
  });
  await Promise.all(workers);
}

/** Groups plans whose hosts overlap (they run one after another: requests are told apart by host). */
function groupsByHost(list) {
  const parent = new Map();
  const find = (x) => { while (parent.get(x) !== x) x = parent.get(x); return x; };
  const union = (a, b) => { parent.set(find(a), find(b)); };
  for (const p of list) { parent.set(`p:${p.key}`, `p:${p.key}`); for (const h of p.hosts) if (!parent.has(`h:${h}`)) parent.set(`h:${h}`, `h:${h}`); }
  for (const p of list) for (const h of p.hosts) union(`p:${p.key}`, `h:${h}`);
  const groups = new Map();
  for (const p of list) { const r = find(`p:${p.key}`); if (!groups.has(r)) groups.set(r, []); groups.get(r).push(p); }
  return [...groups.values()];
}

before(async () => {
  catalogue = loadCatalog();
  plans = new Map();
  let i = 0;
  for (const [key, entry] of Object.entries(catalogue.merged)) {
    i++;
    if (!entry || !MODES.includes(entry.auth_mode)) continue;
    if (ONLY && !ONLY.has(key)) continue;
    try { plans.set(key, makePlan(key, entry, i)); } catch (e) { plans.set(key, { key, entry, mode: entry.auth_mode, hosts: new Set(), error: e.message }); }
  }
  const hosts = [...new Set([...plans.values()].flatMap((p) => [...p.hosts]))];
  up = await startGenericUpstream({ hosts });
  secretKey = crypto.randomUUID();
  latchDir = tmpDir('conformance-');
  await pinHosts(hosts.slice(0, MAX_PINS));
  const r = await api(latch.url, secretKey, 'GET', '/providers');
  assert.equal(r.status, 200, r.text);
  providers = new Map((r.json.data ?? r.json).map((p) => [p.name, p]));
});

after(async () => {
  await latch?.stop().catch((e) => console.error(String(e).slice(0, 2000)));
  await up?.stop();
});

test('GET /providers: Nango\'s whole catalogue, its fields unchanged, a latch.linkable verdict on each', () => {
  assert.equal(Object.keys(catalogue.merged).length, CATALOGUE_SIZE, 'the pinned catalogue has 1013 entries');
  assert.equal(providers.size, CATALOGUE_SIZE, `latch offers ${providers.size} providers, the catalogue has ${CATALOGUE_SIZE}`);
  const problems = [];
  for (const [key, entry] of Object.entries(catalogue.merged)) {
    const p = providers.get(key);
    if (!p) { problems.push(`${key}: missing`); continue; }
    if (typeof p.latch?.linkable !== 'boolean') problems.push(`${key}: no latch.linkable`);
    else if (!p.latch.linkable && !(typeof p.latch.reason === 'string' && p.latch.reason.length > 5)) problems.push(`${key}: not linkable without a reason`);
    if (p.auth_mode !== entry.auth_mode) problems.push(`${key}: auth_mode ${p.auth_mode}, catalogue ${entry.auth_mode}`);
    if (p.display_name !== entry.display_name) problems.push(`${key}: display_name ${p.display_name}, catalogue ${entry.display_name}`);
    if (entry.proxy?.base_url && p.proxy?.base_url !== entry.proxy.base_url) problems.push(`${key}: proxy.base_url changed`);
  }
  assert.deepEqual(problems.slice(0, 40), [], `${problems.length} problem(s)`);
});

// The figures README and docs/oauth2-linkability.md state for the pinned catalogue: fewer
// linkable providers is a regression this test must show, not a number that silently drifts.
test('GET /providers: at least the documented number of providers is linkable (837 of 1013; OAUTH2 278 of 354)', () => {
  let all = 0;
  let oauth2 = 0;
  let oauth2Of = 0;
  for (const p of providers.values()) {
    if (p.latch?.linkable === true) all++;
    if (p.auth_mode === 'OAUTH2') {
      oauth2Of++;
      if (p.latch?.linkable === true) oauth2++;
    }
  }
  assert.equal(oauth2Of, 354, 'the pinned catalogue has 354 OAUTH2 entries');
  assert.ok(oauth2 >= 278, `OAUTH2 linkable: ${oauth2}, documented 278`);
  assert.ok(all >= 837, `linkable: ${all} of ${providers.size}, documented 837`);
});

test('every linkable API_KEY / BASIC / TWO_STEP / OAUTH2_CC provider links through the SDK route and proxies', { timeout: 600000 }, async () => {
  const t0 = Date.now();
  const linkable = [];
  const notLinkable = [];
  for (const plan of plans.values()) {
    const p = providers.get(plan.key);
    if (p?.latch?.linkable === true) linkable.push(plan);
    else notLinkable.push({ key: plan.key, mode: plan.mode, reason: p?.latch?.reason ?? '(no latch field)' });
  }
  for (const n of notLinkable) results.set(n.key, { ok: false, linkable: false, latchReason: n.reason });
  for (const batch of batches(groupsByHost(linkable))) {
    await pinHosts([...new Set(batch.flat().flatMap((p) => [...p.hosts]))]);
    await pool(batch, PARALLEL, async (group) => {
      for (const plan of group) {
        let res;
        if (plan.error) res = { ok: false, reason: `test could not make values: ${plan.error}` };
        else {
          try { res = await linkOne(plan); } catch (e) { res = { ok: false, reason: `exception: ${e.stack?.split('\n').slice(0, 3).join(' ')}` }; }
        }
        results.set(plan.key, { ...res, linkable: true });
      }
    });
  }
  const failures = linkable.filter((p) => !results.get(p.key).ok);
  const n = linkable.length - failures.length;
  const byMode = {};
  for (const p of linkable) { const m = (byMode[p.mode] ??= { linkable: 0, ok: 0, of: 0 }); m.linkable++; if (results.get(p.key).ok) m.ok++; }
  for (const p of plans.values()) (byMode[p.mode] ??= { linkable: 0, ok: 0, of: 0 }).of++;
  const lines = [`${n} linked and proxied of ${linkable.length} linkable (of ${CATALOGUE_SIZE})`,
    `  per mode: ${Object.entries(byMode).map(([m, x]) => `${m} ${x.ok}/${x.linkable} linkable/${x.of}`).join(', ')}`,
    `  ${((Date.now() - t0) / 1000).toFixed(1)} s, ${restarts} latch restarts (host batches), ${up.requests.length} upstream requests, ${up.tlsErrors.length} TLS errors`];
  if (failures.length) {
    lines.push(`FAILURES (${failures.length}):`);
    for (const p of failures) lines.push(`  ${p.key} [${p.mode}]: ${results.get(p.key).reason}`);
  }
  const reasons = new Map();
  for (const x of notLinkable) { if (!reasons.has(x.reason)) reasons.set(x.reason, []); reasons.get(x.reason).push(x.key); }
  lines.push(`not linkable (${notLinkable.length}), by reason:`);
  for (const [reason, keys] of [...reasons.entries()].sort((a, b) => b[1].length - a[1].length)) lines.push(`  ${keys.length} × ${reason}: ${keys.join(', ')}`);
  const report = lines.join('\n');
  console.log(report);
  fs.mkdirSync(path.join(BUILD, 'test-artifacts'), { recursive: true });
  fs.writeFileSync(path.join(BUILD, 'test-artifacts', 'conformance.txt'), `${report}\n`);
  assert.ok(linkable.length > 0, 'latch marks no provider of these modes linkable');
  assert.deepEqual(failures.map((p) => `${p.key}: ${results.get(p.key).reason}`), []);
});

test('the MSP stack, by name: each linked and proxied, or not linkable with a reason', () => {
  const problems = [];
  for (const [mode, keys] of Object.entries(MSP)) {
    for (const key of keys) {
      if (ONLY && !ONLY.has(key)) continue;
      const entry = catalogue.merged[key];
      if (!entry) { problems.push(`${key}: not in the catalogue`); continue; }
      if (entry.auth_mode !== mode) problems.push(`${key}: auth_mode ${entry.auth_mode}, the issue lists it under ${mode}`);
      const r = results.get(key);
      if (!r) { problems.push(`${key}: not run`); continue; }
      if (r.linkable && !r.ok) problems.push(`${key}: linkable but failed: ${r.reason}`);
      if (!r.linkable && !(r.latchReason && r.latchReason.length > 5 && r.latchReason !== '(no latch field)')) problems.push(`${key}: not linkable and no reason given`);
      if (!r.linkable) console.log(`MSP ${key} not linkable: ${r.latchReason}`);
    }
  }
  assert.ok(results.size > 0, 'the conformance run did not run');
  assert.deepEqual(problems, []);
});
