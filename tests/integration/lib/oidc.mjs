// A real OAuth 2.0 / OpenID Connect authorization server for the OAuth2 tests: `oidc-provider` from
// npm (certified by the OpenID Foundation; nobody here wrote it), served over TLS with a certificate
// from the test CA at https://auth.oidc.test (pinned to a random loopback address with LATCH_RESOLVE,
// trusted by latch with LATCH_CA_FILE: latch's production outbound path, TLS verification on).
//
// Configured as a strict provider: PKCE S256 required, refresh tokens issued and rotated on every
// use (a consumed refresh token presented again revokes the whole grant, as oidc-provider does),
// access-token lifetime settable per test, a revocation endpoint, and oidc-provider's own
// development interactions (login + consent forms) which `authorize()` below completes over HTTP
// as a browser would (cookies, redirects, form posts) — or aborts, giving `error=access_denied`.
//
//   const op = await startOidc({ redirectUri: `${latchUrl}/oauth/callback` });
//   op.setAccessTokenTTL(2);                    // seconds, for tokens issued from now on
//   const end = await op.authorize(authUrl);    // -> the redirect back to latch (not followed)
//   op.grants.authorization_code / op.grants.refresh_token / op.tokenRequests / op.rotations
//   await op.revokeRefreshToken(rt);            // over the revocation endpoint
//   await op.stop();
//
// `providerEntry()` is the Nango-format providers.yaml entry latch loads for it.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { randomInt } from 'node:crypto';
import YAML from 'yaml';
import Provider from 'oidc-provider';
import { makeHostCert } from './generic_upstream.mjs';
import { BUILD } from './catalog.mjs';

export const OIDC_HOST = 'auth.oidc.test';
export const OIDC_PROVIDER_KEY = 'oidc-test';
export const OIDC_CLIENT = Object.freeze({
  client_id: 'latch-test-client',
  client_secret: 'oidc-test-secret-4f8a2c91d7e35b06a1c8',
});
export const OIDC_SCOPES = Object.freeze(['openid', 'offline_access', 'devices:read']);

/** An unbounded in-memory adapter (oidc-provider's own keeps only 1,000 entries in an LRU, which a
 * test with many connections would overflow, evicting live refresh tokens). */
function makeAdapterClass() {
  const store = new Map(); // key -> { payload, expiresAt }
  const grants = new Map(); // grantId -> Set(key)
  const byUid = new Map();
  const byUserCode = new Map();
  const live = (k) => {
    const e = store.get(k);
    if (!e) return undefined;
    if (e.expiresAt && e.expiresAt <= Date.now()) { store.delete(k); return undefined; }
    return e.payload;
  };
  return class MapAdapter {
    constructor(name) { this.name = name; }
    key(id) { return `${this.name}:${id}`; }
    async upsert(id, payload, expiresIn) {
      const k = this.key(id);
      store.set(k, { payload: structuredClone(payload), expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
      if (payload.grantId) {
        if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
        grants.get(payload.grantId).add(k);
      }
      if (payload.uid) byUid.set(payload.uid, id);
      if (payload.userCode) byUserCode.set(payload.userCode, id);
    }
    async find(id) { const p = live(this.key(id)); return p ? structuredClone(p) : undefined; }
    async findByUid(uid) { const id = byUid.get(uid); return id ? this.find(id) : undefined; }
    async findByUserCode(code) { const id = byUserCode.get(code); return id ? this.find(id) : undefined; }
    async consume(id) { const e = store.get(this.key(id)); if (e) e.payload.consumed = Math.floor(Date.now() / 1000); }
    async destroy(id) { store.delete(this.key(id)); }
    async revokeByGrantId(grantId) {
      for (const k of grants.get(grantId) || []) store.delete(k);
      grants.delete(grantId);
    }
  };
}

/**
 * Starts oidc-provider on <bind>:443 for https://auth.oidc.test.
 * redirectUri: latch's /oauth/callback (registered for the client).
 * authMethod: 'client_secret_post' (default) or 'client_secret_basic'.
 */
export async function startOidc({ redirectUri, bind, authMethod = 'client_secret_post', accessTokenTTL = 3600, dir } = {}) {
  bind ??= `127.${randomInt(1, 250)}.${randomInt(1, 250)}.${randomInt(2, 250)}`;
  fs.mkdirSync(path.join(BUILD, 'test-tmp'), { recursive: true });
  dir ??= fs.mkdtempSync(path.join(BUILD, 'test-tmp', 'oidc-'));
  const tls = await makeHostCert([OIDC_HOST], dir);
  const state = { accessTokenTTL, inFlight: 0 };

  const tokenRequests = []; // every POST /token: { at, grant_type, status, error, client_id }
  const grants = { authorization_code: 0, refresh_token: 0 }; // successful grants by type
  const grantErrors = []; // { grant_type, error, description }
  const rotations = []; // refresh grants: { at, grantId, old, refresh_token, access_token }
  const issued = []; // code grants: { at, grantId, refresh_token, access_token }
  const authRequests = []; // every GET /auth with its query
  const hooks = { beforeToken: null };

  const provider = new Provider(`https://${OIDC_HOST}`, {
    adapter: process.env.OIDC_DEFAULT_ADAPTER ? undefined : makeAdapterClass(),
    clients: [{
      client_id: OIDC_CLIENT.client_id,
      client_secret: OIDC_CLIENT.client_secret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: authMethod,
    }],
    scopes: [...OIDC_SCOPES],
    claims: { openid: ['sub'], email: ['email'] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub, email: `${sub}@example.test` }) }),
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true, allowedPolicy: async () => true },
      introspection: { enabled: true },
    },
    // refresh tokens for every code grant of a client allowed the refresh_token grant (whether or not
    // the authorization request asked for prompt=consent, which oidc-provider otherwise requires for
    // offline_access), rotated on every use
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    ttl: {
      AccessToken: () => state.accessTokenTTL,
      AuthorizationCode: 60,
      RefreshToken: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
      Interaction: 600,
      Session: 3600,
      IdToken: 3600,
    },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    // no cached consent between authorizations: every flow shows login + consent
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
  });
  provider.on('server_error', (_ctx, err) => { grantErrors.push({ grant_type: 'server_error', error: String(err?.stack || err) }); });
  provider.on('grant.error', (ctx, err) => {
    grantErrors.push({ at: Date.now(), grant_type: ctx.oidc?.params?.grant_type, error: err.error, description: err.error_description, refresh_token: ctx.oidc?.params?.refresh_token });
  });
  provider.on('grant.success', (ctx) => {
    const gt = ctx.oidc.params.grant_type;
    grants[gt] = (grants[gt] || 0) + 1;
    const body = ctx.body || {};
    if (gt === 'refresh_token') {
      rotations.push({ at: Date.now(), grantId: ctx.oidc.entities.RefreshToken?.grantId, old: ctx.oidc.params.refresh_token, refresh_token: body.refresh_token, access_token: body.access_token });
    } else if (gt === 'authorization_code') {
      issued.push({ at: Date.now(), grantId: ctx.oidc.entities.AuthorizationCode?.grantId, refresh_token: body.refresh_token, access_token: body.access_token });
    }
  });
  provider.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/auth') authRequests.push({ at: Date.now(), query: { ...ctx.query } });
    const isToken = ctx.method === 'POST' && ctx.path === '/token';
    if (isToken && hooks.beforeToken) {
      const stop = await hooks.beforeToken(ctx);
      if (stop) return;
    }
    if (isToken) state.inFlight++;
    try {
      await next();
    } finally {
      if (isToken) state.inFlight--;
    }
    if (isToken) {
      tokenRequests.push({ at: Date.now(), grant_type: ctx.oidc?.params?.grant_type, status: ctx.status, error: ctx.body?.error, client_id: ctx.oidc?.client?.clientId });
    }
  });

  const server = https.createServer({ key: fs.readFileSync(tls.key), cert: fs.readFileSync(tls.cert) }, provider.callback());
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(443, bind, resolve); });
  const agent = new https.Agent({ ca: fs.readFileSync(tls.ca), keepAlive: false });

  /** An HTTPS request to the provider (pinned to its loopback address, verified with the test CA). */
  function request(url, { method = 'GET', headers = {}, body } = {}) {
    const u = new URL(url);
    if (u.hostname !== OIDC_HOST) throw new Error(`not the provider: ${url}`);
    return new Promise((resolve, reject) => {
      const req = https.request({
        host: OIDC_HOST, servername: OIDC_HOST, port: 443, path: u.pathname + u.search, method, headers, agent,
        lookup: (_h, opts, cb) => (opts?.all ? cb(null, [{ address: bind, family: 4 }]) : cb(null, bind, 4)),
      }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      });
      req.on('error', reject);
      if (body) req.write(body);
      req.end();
    });
  }

  const op = {
    bind, host: OIDC_HOST, issuer: `https://${OIDC_HOST}`, provider, tls, dir,
    tokenRequests, grants, grantErrors, rotations, issued, authRequests, hooks,
    /** LATCH_RESOLVE entry for the provider host. */
    resolve: `${OIDC_HOST}:443:${bind}`,
    setAccessTokenTTL(seconds) { state.accessTokenTTL = seconds; },
    /** Token requests inside oidc-provider right now (entered, not yet answered). */
    get inFlight() { return state.inFlight; },
    /** Snapshot of the counters, to compare before/after. */
    counts() { return { token: tokenRequests.length, code: grants.authorization_code || 0, refresh: grants.refresh_token || 0 }; },
    request,
    /**
     * Plays the browser from latch's redirect to the provider's /auth up to the provider's redirect
     * back to the client: cookies kept, redirects followed, oidc-provider's login and consent forms
     * posted (as `login`), or the interaction aborted (deny: the user said no). Resolves to the
     * callback URL the provider redirected to (not followed), plus the trail of visited URLs.
     */
    async authorize(authUrl, { login = 'user-1', deny = false, stopAt = redirectUri } = {}) {
      const jar = new Map();
      const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
      const keep = (res) => {
        for (const c of [].concat(res.headers['set-cookie'] || [])) {
          const [kv] = c.split(';');
          const i = kv.indexOf('=');
          jar.set(kv.slice(0, i).trim(), kv.slice(i + 1));
        }
      };
      const trail = [];
      let url = authUrl;
      let method = 'GET';
      let body;
      for (let hop = 0; hop < 20; hop++) {
        if (url.startsWith(stopAt)) return { callbackUrl: url, trail };
        trail.push(url);
        const headers = { cookie: cookieHeader() };
        if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
        const res = await request(url, { method, headers, body });
        keep(res);
        if (res.status >= 300 && res.status < 400 && res.headers.location) {
          url = new URL(res.headers.location, url).toString();
          method = 'GET';
          body = undefined;
          continue;
        }
        if (res.status !== 200) throw new Error(`authorization server answered ${res.status} at ${url}: ${res.text.slice(0, 500)}`);
        const m = /<form[^>]*action="([^"]+)"[^>]*method="post"/i.exec(res.text);
        const prompt = /name="prompt" value="(\w+)"/.exec(res.text)?.[1];
        if (!m || !prompt) throw new Error(`no interaction form at ${url}: ${res.text.slice(0, 500)}`);
        const uid = new URL(m[1], url).pathname.split('/')[2];
        if (deny) { url = new URL(`/interaction/${uid}/abort`, url).toString(); method = 'GET'; body = undefined; continue; }
        url = new URL(m[1].replace(/&amp;/g, '&'), url).toString();
        method = 'POST';
        body = prompt === 'login' ? new URLSearchParams({ prompt, login, password: 'any' }).toString() : new URLSearchParams({ prompt }).toString();
      }
      throw new Error(`authorization did not come back to ${stopAt}: ${trail.join(' -> ')}`);
    },
    /** Revokes a refresh token at the provider's revocation endpoint (RFC 7009), as an admin would. */
    async revokeRefreshToken(token) {
      const r = await request(`${op.issuer}/token/revocation`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token, token_type_hint: 'refresh_token', client_id: OIDC_CLIENT.client_id, client_secret: OIDC_CLIENT.client_secret }).toString(),
      });
      if (r.status !== 200) throw new Error(`revocation: ${r.status} ${r.text}`);
    },
    /** Introspects a token (RFC 7662): { active, ... }. */
    async introspect(token) {
      const r = await request(`${op.issuer}/token/introspection`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token, client_id: OIDC_CLIENT.client_id, client_secret: OIDC_CLIENT.client_secret }).toString(),
      });
      return JSON.parse(r.text);
    },
    /** Redeems a refresh token directly (to show the provider rejects an old one). */
    async refreshDirect(refreshToken) {
      const r = await request(`${op.issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: OIDC_CLIENT.client_id, client_secret: OIDC_CLIENT.client_secret }).toString(),
      });
      return { status: r.status, json: JSON.parse(r.text) };
    },
    stop() {
      return new Promise((resolve) => {
        agent.destroy();
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
    },
  };
  return op;
}

/** The Nango-format providers.yaml entry for the provider (what latch is under test with). */
export function providerEntry(extra = {}) {
  return {
    display_name: 'OIDC Test Provider',
    categories: ['dev-tools'],
    auth_mode: 'OAUTH2',
    authorization_url: `https://${OIDC_HOST}/auth`,
    token_url: `https://${OIDC_HOST}/token`,
    default_scopes: [...OIDC_SCOPES],
    scope_separator: ' ',
    authorization_params: { response_type: 'code' },
    token_params: { grant_type: 'authorization_code' },
    refresh_params: { grant_type: 'refresh_token' },
    authorization_method: 'body',
    body_format: 'form',
    proxy: { base_url: `https://${OIDC_HOST}` },
    docs: 'https://github.com/panva/node-oidc-provider',
    ...extra,
  };
}

/** Writes a providers file with the test provider (and any other entries); returns its path. */
export function writeProvidersFile(dir, entries = {}) {
  const file = path.join(dir, 'providers.yaml');
  fs.writeFileSync(file, YAML.stringify({ [OIDC_PROVIDER_KEY]: providerEntry(), ...entries }));
  return file;
}

/**
 * latch in front of oidc-provider: latch's port chosen first so that the client's redirect_uri is
 * latch's /oauth/callback; a providers file with the Nango-format entry (LATCH_PROVIDERS_FILE);
 * LATCH_RESOLVE pins auth.oidc.test to oidc-provider's loopback address; LATCH_CA_FILE trusts the
 * test CA; the integration `oidc-test` is created with the app credentials (Nango's
 * `credentials: {type: "OAUTH2", ...}`). Refresh margin 60 s: a token issued with a TTL below 60 s
 * is stale at once, one issued for an hour is fresh.
 */
export async function startOidcStack({ env = {}, accessTokenTTL = 3600, authMethod, entry = {}, createIntegration = true } = {}) {
  const { startLatch, startWebhookReceiver, freePort, tmpDir, api, BACKEND, BUILD: SBUILD } = await import('./stack.mjs');
  const dir = tmpDir('latch-oidc-');
  let pg = null;
  if (BACKEND === 'postgres') {
    const { startPg } = await import('./pg.mjs');
    pg = await startPg();
  }
  const port = await freePort();
  const latchUrl = `http://127.0.0.1:${port}`;
  const op = await startOidc({ redirectUri: `${latchUrl}/oauth/callback`, accessTokenTTL, authMethod });
  const webhooks = await startWebhookReceiver();
  const providersFile = path.join(dir, 'providers.yaml');
  fs.writeFileSync(providersFile, YAML.stringify({ [OIDC_PROVIDER_KEY]: providerEntry(entry) }));
  const secretKey = crypto.randomUUID();
  const fullEnv = {
    LATCH_SECRET_KEY: secretKey,
    LATCH_PROVIDERS_FILE: providersFile,
    LATCH_RESOLVE: [op.resolve, `${webhooks.host}:${webhooks.port}:127.0.0.1`].join(','),
    LATCH_CA_FILE: op.tls.ca,
    LATCH_ALLOW_HTTP: '1', // only for the plain-http webhook receiver
    LATCH_WEBHOOK_URL: webhooks.url,
    LATCH_WEBHOOK_BACKOFF_MS: '200',
    LATCH_REFRESH_MARGIN_S: '60',
    ...(pg ? { LATCH_DATABASE_URL: pg.url } : {}),
    ...env,
  };
  let latch = await startLatch({ dir, env: fullEnv, port });
  const artifactsDir = path.join(SBUILD, 'test-artifacts');
  fs.mkdirSync(artifactsDir, { recursive: true });
  const s = {
    dir, op, webhooks, secretKey, env: fullEnv, pg, artifactsDir, key: OIDC_PROVIDER_KEY,
    get latchUrl() { return latch.url; },
    get latch() { return latch; },
    api(method, p, body, o) { return api(latch.url, secretKey, method, p, body, o); },
    logs() { return fs.readFileSync(latch.logPath, 'utf8'); },
    async createSession(body) {
      const r = await s.api('POST', '/connect/sessions', body ?? { end_user: { id: 'user-1', email: 'admin@msp.example' }, allowed_integrations: [OIDC_PROVIDER_KEY] });
      if (r.status !== 201) throw new Error(`createSession: ${r.status} ${r.text}`);
      return r.json.data;
    },
    /** GET /oauth/connect/:key as @nangohq/frontend opens it; resolves to {status, location, text}. */
    async connectStart(token, { key = OIDC_PROVIDER_KEY, wsClientId, params = {} } = {}) {
      const q = new URLSearchParams({ connect_session_token: token });
      if (wsClientId) q.set('ws_client_id', wsClientId);
      for (const [k, v] of Object.entries(params)) q.set(`params[${k}]`, v);
      const r = await fetch(`${latch.url}/oauth/connect/${encodeURIComponent(key)}?${q}`, { redirect: 'manual' });
      return { status: r.status, location: r.headers.get('location'), text: await r.text() };
    },
    /** GET of the callback URL the provider redirected the browser to. */
    async callback(url) {
      const r = await fetch(url, { redirect: 'manual' });
      return { status: r.status, text: await r.text(), headers: r.headers };
    },
    /**
     * The whole flow as a browser would do it: session, connect, login + consent at the provider,
     * callback. Resolves to { start, auth, cb, connectionId } (connectionId from the auth webhook).
     */
    async connect({ deny = false, login = 'user-1', session } = {}) {
      const sess = session ?? await s.createSession();
      const start = await s.connectStart(sess.token);
      if (start.status !== 302 || !start.location) throw new Error(`connect: ${start.status} ${start.text.slice(0, 400)}`);
      const auth = await op.authorize(start.location, { deny, login });
      const cb = await s.callback(auth.callbackUrl);
      return { session: sess, start, auth, cb };
    },
    async restartLatch(signal = 'SIGTERM', extraEnv = {}) {
      await latch.stop(signal);
      latch = await startLatch({ dir, env: { ...fullEnv, ...extraEnv }, port });
    },
    async stop() {
      const results = await Promise.allSettled([latch.stop()]);
      results.push(...await Promise.allSettled([op.stop(), webhooks.close(), pg ? pg.destroy() : null]));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    },
  };
  if (createIntegration) {
    const r = await s.api('POST', '/integrations', {
      provider: OIDC_PROVIDER_KEY, unique_key: OIDC_PROVIDER_KEY,
      credentials: { type: 'OAUTH2', client_id: OIDC_CLIENT.client_id, client_secret: OIDC_CLIENT.client_secret, scopes: OIDC_SCOPES.join(',') },
    });
    if (r.status !== 200 && r.status !== 201) throw new Error(`create integration: ${r.status} ${r.text}`);
  }
  return s;
}
