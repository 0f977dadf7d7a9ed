// The provider catalogue as the tests see it, read independently of latch: Nango's pinned
// providers.yaml (build/upstream/providers.yaml, fetched by scripts/fetch-upstream-providers)
// deep-merged with latch's overlay (providers/providers.yaml: objects merge key by key, lists and
// values of the overlay replace; as src/domain/catalog.c), aliases resolved.
//
// Also the test oracle for an entry:
//   - genValues(entry, seed): credential and connection_config values that satisfy the entry's
//     field definitions (pattern, enum, format, example), unique per call;
//   - interp(template, ctx): Nango's template language (${apiKey}, ${username}, ${password},
//     ${credentials.x}, ${connectionConfig.x}, ${accessToken}, ${base64(...)}, `a || b`), giving
//     DYNAMIC for the parts whose value is only known at request time (${now...}, ${random}, ...);
//   - expectations(...): where the credentials must arrive upstream for the link and the proxy.
// Written from Nango's documented semantics, not from latch's code, so that it can disagree.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import YAML from 'yaml';

const HERE = path.dirname(new URL(import.meta.url).pathname);
export const SRC = process.env.LATCH_SOURCE_DIR || path.resolve(HERE, '../../..');
export const BUILD = process.env.LATCH_BUILD_DIR || path.join(SRC, 'build');
export const UPSTREAM_FILE = path.join(BUILD, 'upstream', 'providers.yaml');
export const OVERLAY_FILE = path.join(SRC, 'providers', 'providers.yaml');
export const MODES = ['API_KEY', 'BASIC', 'TWO_STEP', 'OAUTH2_CC'];

/** { upstream: {key: raw entry}, overlay, merged: {key: resolved entry} } */
export function loadCatalog() {
  if (!fs.existsSync(UPSTREAM_FILE)) {
    throw new Error(`${UPSTREAM_FILE} missing: run ./scripts/fetch-upstream-providers ${path.dirname(UPSTREAM_FILE)}`);
  }
  const upstream = YAML.parse(fs.readFileSync(UPSTREAM_FILE, 'utf8'));
  const overlay = YAML.parse(fs.readFileSync(OVERLAY_FILE, 'utf8')) || {};
  const raw = { ...upstream };
  for (const [k, e] of Object.entries(overlay)) raw[k] = deepMerge(upstream[k], e);
  const merged = {};
  for (const key of Object.keys(raw)) merged[key] = resolveAlias(raw, key);
  return { upstream, overlay, merged };
}

function deepMerge(a, b) {
  const obj = (x) => x && typeof x === 'object' && !Array.isArray(x);
  if (!obj(a) || !obj(b)) return b;
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = deepMerge(a[k], v);
  return out;
}

function resolveAlias(raw, key, seen = new Set()) {
  const e = raw[key];
  if (!e || !e.alias) return e;
  if (seen.has(key)) throw new Error(`alias loop at ${key}`);
  seen.add(key);
  const base = resolveAlias(raw, e.alias, seen);
  if (!base) return e;
  const { alias, ...own } = e;
  return { ...base, ...own, __alias_of: alias };
}

// ---- values that satisfy a field definition ----

/** A deterministic PRNG (mulberry32). */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// A small regex-to-string generator for the patterns found in the catalogue: literals, escapes,
// classes with ranges, groups, alternation, ? * + {n} {n,} {n,m}, ^ and $.
function parseRegex(src) {
  let i = 0;
  function alt() {
    const branches = [seq()];
    while (src[i] === '|') { i++; branches.push(seq()); }
    return { t: 'alt', branches };
  }
  function seq() {
    const items = [];
    while (i < src.length && src[i] !== '|' && src[i] !== ')') {
      let atom = parseAtom();
      if (atom === null) continue;
      atom = quant(atom);
      items.push(atom);
    }
    return { t: 'seq', items };
  }
  function quant(atom) {
    const c = src[i];
    let min = 1, max = 1;
    if (c === '?') { min = 0; max = 1; i++; }
    else if (c === '*') { min = 0; max = Infinity; i++; }
    else if (c === '+') { min = 1; max = Infinity; i++; }
    else if (c === '{' && /^\{\d+(,\d*)?\}/.test(src.slice(i))) {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(src.slice(i));
      i += m[0].length;
      min = Number(m[1]);
      max = m[2] ? (m[3] ? Number(m[3]) : Infinity) : min;
    } else return atom;
    if (src[i] === '?' || src[i] === '+') i++; // lazy / possessive
    return { t: 'rep', atom, min, max };
  }
  function esc(c) {
    switch (c) {
      case 'd': return { t: 'set', chars: '0123456789' };
      case 'w': return { t: 'set', chars: 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_' };
      case 's': return { t: 'set', chars: ' ' };
      case 'n': return { t: 'lit', c: '\n' };
      case 't': return { t: 'lit', c: '\t' };
      default: return { t: 'lit', c };
    }
  }
  function parseAtom() {
    const c = src[i++];
    if (c === '^' || c === '$') return null;
    if (c === '(') {
      if (src[i] === '?') {
        if (src[i + 1] === ':') i += 2;
        else if (src[i + 1] === '=' || src[i + 1] === '!') throw new Error('lookaround');
        else if (src[i + 1] === '<') { const j = src.indexOf('>', i); i = j + 1; }
      }
      const g = alt();
      if (src[i++] !== ')') throw new Error('unbalanced');
      return g;
    }
    if (c === '[') return parseClass();
    if (c === '.') return { t: 'set', chars: 'abcdefghijklmnopqrstuvwxyz0123456789' };
    if (c === '\\') return esc(src[i++]);
    return { t: 'lit', c };
  }
  function parseClass() {
    let neg = false;
    if (src[i] === '^') { neg = true; i++; }
    let chars = '';
    let first = true;
    while (i < src.length && (src[i] !== ']' || first)) {
      first = false;
      let c = src[i++];
      if (c === '\\') {
        const e = esc(src[i++]);
        if (e.t === 'set') { chars += e.chars; continue; }
        c = e.c;
      }
      if (src[i] === '-' && src[i + 1] !== ']' && i + 1 < src.length) {
        i++;
        let d = src[i++];
        if (d === '\\') d = esc(src[i++]).c ?? d;
        for (let x = c.charCodeAt(0); x <= d.charCodeAt(0); x++) chars += String.fromCharCode(x);
      } else chars += c;
    }
    i++; // ]
    if (neg) {
      const all = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
      chars = [...all].filter((x) => !chars.includes(x)).join('');
    }
    return { t: 'set', chars };
  }
  const ast = alt();
  if (i !== src.length) throw new Error(`regex parse stopped at ${i}`);
  return ast;
}

function genFrom(ast, rnd) {
  switch (ast.t) {
    case 'alt': return genFrom(ast.branches[0], rnd);
    case 'seq': return ast.items.map((x) => genFrom(x, rnd)).join('');
    case 'lit': return ast.c;
    case 'set': {
      // prefer letters and digits: they survive URLs, headers and Basic unchanged
      const nice = [...ast.chars].filter((c) => /[A-Za-z0-9]/.test(c));
      const pool = nice.length ? nice : [...ast.chars];
      return pool[Math.floor(rnd() * pool.length)];
    }
    case 'rep': {
      let n;
      if (ast.max === Infinity) n = Math.max(ast.min, 12);
      else n = Math.max(ast.min, Math.min(ast.max, 12));
      let s = '';
      for (let k = 0; k < n; k++) s += genFrom(ast.atom, rnd);
      return s;
    }
    default: throw new Error(`bad node ${ast.t}`);
  }
}

export function genFromPattern(pattern, rnd) {
  const re = new RegExp(pattern);
  const ast = parseRegex(pattern);
  for (let attempt = 0; attempt < 8; attempt++) {
    const s = genFrom(ast, rnd);
    if (re.test(s)) return s;
  }
  return null;
}

/** A value for one field definition, or throws naming why it cannot be made. */
export function genField(def, { rnd, name, tag, secret }) {
  if (Array.isArray(def.enum) && def.enum.length) return String(def.enum[0]);
  if (def.pattern) {
    let re = null;
    try { re = new RegExp(def.pattern); } catch { /* a pattern JavaScript cannot compile (freshteam's) */ }
    if (re) {
      const v = genFromPattern(def.pattern, rnd);
      if (v !== null) return v;
      if (def.example !== undefined && re.test(String(def.example))) return String(def.example);
      throw new Error(`cannot make a value for ${name} matching ${def.pattern}`);
    }
    if (def.example !== undefined) return String(def.example);
  }
  switch (def.format) {
    case 'hostname': return `${tag}.conformance.example.com`;
    case 'email': return `${tag}@conformance.example.com`;
    case 'uuid': return crypto.randomUUID();
    case 'uri': case 'url': return `https://${tag}.conformance.example.com`;
    default: break;
  }
  const hex = Array.from({ length: 24 }, () => '0123456789abcdef'[Math.floor(rnd() * 16)]).join('');
  return secret ? `S${hex}` : `v${hex.slice(0, 12)}`;
}

const HOSTISH = /(subdomain|domain|host|instance|region|zone|tenant|site|env|server|account|company|org|shop|store|workspace|platform|url)/i;

/**
 * Values for an entry: { connectionConfig: {...sent}, credentials: {...sent},
 *   ccAll / credAll: sent + hidden default values (what the templates see) }.
 * tag is a short unique token used for hosts (so that every provider gets its own host).
 */
export function genValues(entry, { seed, tag }) {
  const rnd = prng(seed);
  const out = { connectionConfig: {}, credentials: {}, ccAll: {}, credAll: {} };
  for (const [sec, sent, all] of [['connection_config', out.connectionConfig, out.ccAll], ['credentials', out.credentials, out.credAll]]) {
    for (const [name, def] of Object.entries(entry[sec] || {})) {
      if (!def || typeof def !== 'object') continue;
      if (def.hidden || def.automated) {
        if (def.default_value !== undefined) all[name] = String(def.default_value);
        continue;
      }
      if (def.optional && !requestTemplates(entry).some((t) => t.includes(`connectionConfig.${name}`) || t.includes(`credentials.${name}`))) continue;
      let v;
      const role = sec === 'connection_config' ? hostRole(entry, name) : null;
      // a field that ends up in a host name: a clean DNS name, unique per provider
      const host = `${tag}.conformance.example.com`;
      const cands = role === 'host' ? [host, tag, ...withHost(def.example, host, false)]
        : role === 'label' ? [tag]
          : role === 'tail' ? [host, tag]
            : role === 'url' ? [`https://${host}`, host, ...withHost(def.example, host, true)] : [];
      if (/^port$/i.test(name)) cands.unshift('443');
      if (!def.enum && !(def.format && !['hostname', 'uri', 'url'].includes(def.format))) v = cands.find((c) => { try { return !def.pattern || new RegExp(def.pattern).test(c); } catch { return false; } });
      if (v === undefined && sec === 'connection_config' && !def.pattern && !def.enum && !def.format && HOSTISH.test(name)) v = tag;
      if (v === undefined) v = genField(def, { rnd, name, tag, secret: sec === 'credentials' });
      sent[name] = v;
      all[name] = v;
    }
  }
  if (entry.auth_mode === 'OAUTH2_CC') {
    // Nango's OAUTH2_CC entries often leave client_id / client_secret undeclared: they always exist
    for (const name of ['client_id', 'client_secret']) {
      if (out.credentials[name] === undefined) {
        const v = genField({}, { rnd, name, tag, secret: true });
        out.credentials[name] = v;
        out.credAll[name] = v;
      }
    }
  }
  return out;
}

/** The entry's example with its host replaced by host (aws-scim's https://scim.../x/scim/v2). */
function withHost(example, host, scheme) {
  if (typeof example !== 'string') return [];
  const m = /^(https?:\/\/)?([A-Za-z0-9.-]+)(:\d+)?(\/.*)?$/.exec(example);
  if (!m) return [];
  return [`${scheme ? (m[1] || 'https://') : ''}${host}${m[3] || ''}${m[4] || ''}`];
}

/** How a connection_config field is used in the entry's URL templates: host, label, url or null. */
function hostRole(entry, name) {
  const urls = [entry.proxy?.base_url, entry.token_url, entry.proxy?.verification?.base_url_override].filter((x) => typeof x === 'string');
  const ph = '${connectionConfig.' + name + '}';
  for (const u of urls) {
    for (const alt of u.split(/\s*\|\|\s*/)) {
      const i = alt.indexOf(ph);
      if (i < 0) continue;
      const before = alt.slice(0, i);
      const after = alt.slice(i + ph.length);
      if (i === 0) return 'url';
      if (/^https?:\/\/$/.test(before)) return /^[.-]/.test(after) ? 'label' : 'host';
      // the end of the host (https://rest.${x}): a DNS name of its own, the TLD included
      if (/^https?:\/\/[^/]*$/.test(before)) return /^([/?#]|$)/.test(after) ? 'tail' : 'label';
    }
  }
  return null;
}

// ---- Nango's template language ----

export const DYNAMIC = Symbol('dynamic');
const DYNAMIC_RE = /\$\{(now|random|method|path|host|params|endpoint|bodyCanonicalParams|awsSigV4|ed25519Sign|hmacSha1Hex|sha256Base64|sha256Hex)\b/;

/** Finds the matching closing brace of the ${ that opens at s[start]. */
function closeOf(s, start) {
  let depth = 0;
  for (let k = start; k < s.length; k++) {
    if (s[k] === '$' && s[k + 1] === '{') { depth++; k++; continue; }
    if (s[k] === '}') { depth--; if (depth === 0) return k; }
  }
  return -1;
}

/**
 * Interpolates a template; returns the string, DYNAMIC when the value depends on request time, or
 * null when a placeholder has no value (or an empty one).
 */
export function interp(tpl, ctx) {
  if (typeof tpl !== 'string') return tpl == null ? null : String(tpl);
  if (DYNAMIC_RE.test(tpl)) return DYNAMIC;
  let out = '';
  let k = 0;
  while (k < tpl.length) {
    if (tpl[k] === '$' && tpl[k + 1] === '{') {
      const end = closeOf(tpl, k);
      if (end < 0) return null;
      const inner = tpl.slice(k + 2, end).trim();
      let v;
      const fn = /^base64\(([\s\S]*)\)$/.exec(inner);
      if (fn) {
        const arg = interp(fn[1], ctx);
        if (arg === null || arg === DYNAMIC) return arg;
        v = Buffer.from(arg, 'utf8').toString('base64');
      } else v = lookup(inner, ctx);
      if (v === undefined || v === null || v === '') return null;
      out += v;
      k = end + 1;
    } else out += tpl[k++];
  }
  return out;
}

function lookup(name, ctx) {
  const m = /^(connectionConfig|credentials)\.(.+)$/.exec(name);
  if (m) return (m[1] === 'connectionConfig' ? ctx.connectionConfig : ctx.credentials)?.[m[2]];
  return ctx.vars?.[name];
}

/** `a || b || c`: the first alternative whose placeholders all have values (Nango's rule). */
export function interpAlt(tpl, ctx) {
  if (typeof tpl !== 'string') return interp(tpl, ctx);
  const parts = tpl.split(/\s*\|\|\s*/);
  for (const p of parts) {
    const v = interp(p.trim(), ctx);
    if (v !== null) return v;
  }
  return null;
}

export function templateCtx(values, { token } = {}) {
  const cred = values.credAll;
  return {
    connectionConfig: values.ccAll,
    credentials: cred,
    vars: { apiKey: cred.apiKey, username: cred.username, password: cred.password, accessToken: token, token },
  };
}

/** The URL a base and an endpoint make (Nango joins them with exactly one slash). */
export function joinUrl(base, endpoint) {
  const b = base.endsWith('/') ? base.slice(0, -1) : base;
  const e = endpoint.startsWith('/') ? endpoint.slice(1) : endpoint;
  return e ? `${b}/${e}` : b;
}

/**
 * The auth an upstream request made for this connection must carry:
 * { headers: {lower-name: value|DYNAMIC}, query: {name: value} }.
 * mode: the entry's auth_mode; token: the access token (token modes).
 */
export function expectedAuth(entry, values, { token } = {}) {
  const ctx = templateCtx(values, { token });
  const headers = {};
  const query = {};
  const cred = values.credAll;
  const mode = entry.auth_mode;
  const ph = entry.proxy?.headers || {};
  if (mode === 'BASIC') headers.authorization = `Basic ${Buffer.from(`${cred.username ?? ''}:${cred.password ?? ''}`).toString('base64')}`;
  if (mode === 'OAUTH2_CC') headers.authorization = `Bearer ${token}`;
  if (mode === 'TWO_STEP' && !Object.values(ph).some((v) => typeof v === 'string' && v.includes('${accessToken}'))) headers.authorization = `Bearer ${token}`;
  for (const [k, v] of Object.entries(ph)) {
    const val = interpAlt(String(v), ctx);
    if (val === null) continue; // a header whose inputs are absent is not sent
    headers[k.toLowerCase()] = val;
  }
  for (const [k, v] of Object.entries(entry.proxy?.query || {})) {
    if (typeof v !== 'string') continue;
    const val = interpAlt(v, ctx);
    if (val === null) continue;
    query[k] = val;
  }
  return { headers, query };
}

/** Where the proxy sends an endpoint for this connection: URL object, or null if no base. */
export function proxyUrl(entry, values, endpoint, { token } = {}) {
  const base = interpAlt(entry.proxy?.base_url, templateCtx(values, { token }));
  if (!base || base === DYNAMIC) return null;
  return new URL(joinUrl(base, endpoint));
}

/** Every template string an entry uses for requests (for "does the oracle understand it"). */
export function requestTemplates(entry) {
  const out = [];
  const add = (x) => { if (typeof x === 'string') out.push(x); else if (x && typeof x === 'object') Object.values(x).forEach(add); };
  add(entry.proxy?.base_url); add(entry.proxy?.headers); add(entry.proxy?.query); add(entry.proxy?.verification);
  add(entry.token_url); add(entry.token_params); add(entry.token_headers);
  return out;
}

/** Sets a value at a dotted path ("tokens.access.token") in obj. */
export function setPath(obj, dotted, value) {
  const parts = dotted.split('.');
  let o = obj;
  for (let k = 0; k < parts.length - 1; k++) o = (o[parts[k]] ??= {});
  o[parts[parts.length - 1]] = value;
  return obj;
}
