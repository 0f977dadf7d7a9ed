// OAuth2 popup flow in headless Chromium (playwright-core, /usr/bin/chromium) against oidc-provider
// (lib/oidc.mjs, real TLS; Chromium reaches auth.oidc.test through --host-resolver-rules):
//  a. the UNCHANGED @nangohq/frontend auth() from a host page on another origin: popup, login and
//     consent at the provider, result over latch's WebSocket;
//  b. the same through latch's Connect UI (connect link): its button opens the popup, the callback
//     page posts the result to the opener;
//  c. the user closes the popup; the browser blocks the popup: both end in words, not a hang.
// Screenshots: build/test-artifacts/oauth2-*.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startOidcStack, OIDC_PROVIDER_KEY as KEY, OIDC_HOST } from './lib/oidc.mjs';
import { startHostServer } from './lib/host_server.mjs';

const T = 20000;

let s;
let browser;
let host;

before(async () => {
  s = await startOidcStack({ env: { LATCH_BACKGROUND_REFRESH: 'false' } });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // the authorization server's name goes to its loopback address; nothing else resolves
      `--host-resolver-rules=MAP ${OIDC_HOST} ${s.op.bind}, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost`],
  });
  host = await startHostServer({ index: 'oauth_host.html' });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (host) await host.close().catch(() => {});
  if (s) await s.stop();
});

function shot(page, name) {
  return page.screenshot({ path: path.join(s.artifactsDir, `oauth2-${name}.png`), fullPage: true }).catch(() => {});
}

async function newContext({ blockPopups = false } = {}) {
  // the browser side of the provider's certificate is not under test (latch's side is verified)
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1000, height: 760 } });
  if (blockPopups) {
    // what a popup blocker does: window.open answers null
    await context.addInitScript(() => { window.open = () => null; });
  }
  const rec = { console: [], pageErrors: [] };
  context.on('page', (p) => {
    p.on('console', (m) => rec.console.push(`${m.type()}: ${m.text()}`));
    p.on('pageerror', (e) => rec.pageErrors.push(String(e)));
  });
  return { context, rec };
}

/** In the provider's popup: sign in and consent (or cancel). */
async function completeAtProvider(popup, { deny = false, name = 'a' } = {}) {
  await popup.waitForURL((u) => u.hostname === OIDC_HOST, { timeout: T });
  await popup.locator('input[name="login"]').waitFor({ timeout: T });
  await shot(popup, `${name}-provider-login`);
  if (deny) {
    await popup.getByText('[ Cancel ]').click();
    return;
  }
  await popup.locator('input[name="login"]').fill('browser-user');
  await popup.locator('input[name="password"]').fill('any');
  await popup.locator('button[type="submit"]').click();
  await popup.getByRole('button', { name: /Continue/ }).waitFor({ timeout: T });
  await shot(popup, `${name}-provider-consent`);
  await popup.getByRole('button', { name: /Continue/ }).click();
}

async function newSession() {
  return s.createSession({ end_user: { id: `browser-${Date.now()}`, email: 'browser@example.test' }, allowed_integrations: [KEY] });
}

async function openHost(context, token) {
  const page = await context.newPage();
  await page.goto(`${host.url}/oauth_host.html?${new URLSearchParams({ latch: s.latchUrl, token, key: KEY })}`);
  await page.waitForFunction(() => window.hostReady === true, null, { timeout: T });
  return page;
}

/** latch's Connect UI (connect link) and its button for the provider. */
async function openConnectUI(context, sess) {
  const page = await context.newPage();
  await page.goto(sess.connect_link || `${s.latchUrl}/ui/?session_token=${sess.token}`);
  const button = page.getByRole('button', { name: /(connect|sign in|log in|authori[sz]e|continue)/i }).first();
  await button.waitFor({ timeout: T });
  return { page, button };
}

/** Clicks and resolves to the popup the click opened. */
async function popupFrom(context, click) {
  const [popup] = await Promise.all([context.waitForEvent('page', { timeout: T }), click()]);
  return popup;
}

test('a. unchanged @nangohq/frontend auth() from another origin: popup, consent, result over the WebSocket', { timeout: 120000 }, async () => {
  const sess = await newSession();
  const { context, rec } = await newContext();
  try {
    const page = await openHost(context, sess.token);
    const frames = [];
    page.on('websocket', (ws) => { ws.on('framereceived', (f) => frames.push(String(f.payload))); ws.on('close', () => frames.push('closed')); });
    await shot(page, 'a-host');
    const popup = await popupFrom(context, () => page.click('#auth'));
    await completeAtProvider(popup, { name: 'a' });
    await page.waitForFunction(() => window.authResult || window.authError, null, { timeout: T });
    const result = await page.evaluate(() => ({ r: window.authResult, e: window.authError }));
    await shot(page, 'a-host-linked');
    assert.equal(result.e, null, `auth() failed: ${JSON.stringify(result.e)}; WebSocket frames: ${JSON.stringify(frames)}`);
    assert.equal(result.r.providerConfigKey, KEY);
    assert.ok(result.r.connectionId, JSON.stringify(result.r));
    const c = await s.api('GET', `/connections/${encodeURIComponent(result.r.connectionId)}?provider_config_key=${KEY}`);
    assert.equal(c.status, 200, c.text);
    assert.equal(c.json.credentials.access_token, s.op.issued.at(-1).access_token);
    // the popup closes itself
    await popup.waitForEvent('close', { timeout: T }).catch(() => {});
    assert.ok(popup.isClosed(), 'the callback page closed the popup');
    assert.deepEqual(rec.pageErrors, []);
  } finally {
    await context.close();
  }
});

test('b. latch\'s Connect UI: its button opens the popup; the result arrives by postMessage', { timeout: 120000 }, async () => {
  const sess = await newSession();
  const { context, rec } = await newContext();
  const before = (await s.api('GET', '/connections')).json.connections.filter((x) => x.provider_config_key === KEY).length;
  const codes = s.op.counts().code;
  try {
    const { page, button } = await openConnectUI(context, sess);
    await shot(page, 'b-connect-ui');
    const popup = await popupFrom(context, () => button.click());
    await shot(page, 'b-connect-ui-waiting');
    await completeAtProvider(popup, { name: 'b' });
    await page.getByText(/(connected|linked|success)/i).first().waitFor({ timeout: T });
    await shot(page, 'b-connect-ui-connected');
    const after = (await s.api('GET', '/connections')).json.connections.filter((x) => x.provider_config_key === KEY).length;
    assert.equal(after, before + 1, 'one new connection');
    assert.equal(s.op.counts().code, codes + 1, 'one code exchange');
    assert.deepEqual(rec.pageErrors, []);
  } finally {
    await context.close();
  }
});

test('c. the user closes the popup: auth() and the Connect UI say so in words', { timeout: 120000 }, async () => {
  // the SDK (detectClosedAuthWindow): window_closed
  {
    const sess = await newSession();
    const { context } = await newContext();
    try {
      const page = await openHost(context, sess.token);
      const popup = await popupFrom(context, () => page.click('#auth'));
      await popup.waitForURL((u) => u.hostname === OIDC_HOST, { timeout: T });
      await popup.close();
      await page.waitForFunction(() => window.authError, null, { timeout: T });
      const e = await page.evaluate(() => window.authError);
      assert.equal(e.type, 'window_closed');
      await shot(page, 'c-sdk-closed');
    } finally {
      await context.close();
    }
  }
  // the Connect UI
  {
    const sess = await newSession();
    const { context } = await newContext();
    try {
      const { page, button } = await openConnectUI(context, sess);
      const popup = await popupFrom(context, () => button.click());
      await popup.waitForURL((u) => u.hostname === OIDC_HOST, { timeout: T });
      await popup.close();
      await page.getByText(/(closed|cancel)/i).first().waitFor({ timeout: T });
      await shot(page, 'c-connect-ui-closed');
      // and it can be tried again: the button is there
      await page.getByRole('button', { name: /(connect|sign in|log in|authori[sz]e|continue|try again)/i }).first().waitFor({ timeout: T });
    } finally {
      await context.close();
    }
  }
});

test('c. the user denies at the provider: the Connect UI says so in words', { timeout: 120000 }, async () => {
  const sess = await newSession();
  const { context } = await newContext();
  try {
    const { page, button } = await openConnectUI(context, sess);
    const popup = await popupFrom(context, () => button.click());
    await completeAtProvider(popup, { deny: true, name: 'c-deny' });
    await page.getByText(/(denied|declined|refused|did not (allow|grant|authori[sz]e)|cancel)/i).first().waitFor({ timeout: T });
    await shot(page, 'c-connect-ui-denied');
  } finally {
    await context.close();
  }
});

test('c. a blocked popup: auth() and the Connect UI say so in words', { timeout: 120000 }, async () => {
  {
    const sess = await newSession();
    const { context } = await newContext({ blockPopups: true });
    try {
      const page = await openHost(context, sess.token);
      await page.click('#auth');
      await page.waitForFunction(() => window.authError, null, { timeout: T });
      const e = await page.evaluate(() => window.authError);
      assert.equal(e.type, 'blocked_by_browser');
      await shot(page, 'c-sdk-blocked');
    } finally {
      await context.close();
    }
  }
  {
    const sess = await newSession();
    const { context } = await newContext({ blockPopups: true });
    try {
      const { page, button } = await openConnectUI(context, sess);
      await button.click();
      await page.getByText(/(pop-?up|blocked)/i).first().waitFor({ timeout: T });
      await shot(page, 'c-connect-ui-blocked');
    } finally {
      await context.close();
    }
  }
});
