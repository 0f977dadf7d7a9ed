// Connect UI browser tests: a real latch + the fake NinjaOne (lib/stack.mjs), driven through
// headless Chromium with playwright-core. Screenshots go to stack.artifactsDir.
//
// Covered:
//  1. connect link: form built from the provider, live validation, a rejected secret shows an
//     actionable error, fixing it connects; the secret never appears in a URL, the DOM or the console.
//  2. embedded through the real @nangohq/frontend openConnectUI(): ready/session_token handshake,
//     Escape closes, the host receives {type:'connect'} and then {type:'close'}.
//  3. keyboard only: tab order, focus ring, show/hide with the keyboard, Enter submits.
//  4. 375x812 phone and dark mode (system preference and ?theme=).
//  5. unknown, malformed and missing session tokens.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { startStack } from './lib/stack.mjs';
import { startHostServer } from './lib/host_server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const KEY = 'ninjaone-rmm';
const HOSTS = ['app.ninjarmm.com', 'us2.ninjarmm.com', 'eu.ninjarmm.com', 'ca.ninjarmm.com', 'oc.ninjarmm.com'];
const INSTANCE = () => (stack.client && stack.client.instance) || 'eu.ninjarmm.com';
const WRONG_SECRET = 'WrongSecret_' + crypto.randomBytes(12).toString('hex');
const T = 15000; // per-step wait

let stack;
let browser;
let host; // { url, close }
let artifacts;

before(async () => {
  stack = await startStack({ tokenLifetime: 3600 });
  artifacts = stack.artifactsDir || path.join(here, '..', '..', 'build', 'test-artifacts');
  await fs.mkdir(artifacts, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  });
  host = await startHostServer({ index: 'host.html', hostname: '127.0.0.1' });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (host) await host.close().catch(() => {});
  if (stack) await stack.stop().catch(() => {});
});

// ------------------------------------------------------------------------------------------------
// helpers

let sessionSeq = 0;

async function newSession(extra = {}) {
  const endUserId = 'ui-user-' + (++sessionSeq) + '-' + crypto.randomBytes(3).toString('hex');
  const s = await stack.createSession({
    end_user: { id: endUserId, email: endUserId + '@example.com', display_name: 'UI test ' + sessionSeq },
    allowed_integrations: [KEY],
    ...extra
  });
  const token = s.token || (s.data && s.data.token);
  assert.match(token, /^nango_connect_session_[a-f0-9]{64}$/);
  const link = s.connect_link || (s.data && s.data.connect_link) || `${stack.latchUrl}/ui/?session_token=${token}`;
  return { token, link, endUserId };
}

// A browser context + page that records every request URL, navigation and console line.
async function openPage(opts = {}) {
  const context = await browser.newContext({
    viewport: opts.viewport || { width: 1100, height: 860 },
    colorScheme: opts.colorScheme || 'light',
    deviceScaleFactor: opts.deviceScaleFactor || 1,
    isMobile: !!opts.isMobile,
    hasTouch: !!opts.isMobile
  });
  const page = await context.newPage();
  const rec = { requests: [], navigations: [], console: [], pageErrors: [], posts: [] };
  page.on('request', (r) => {
    rec.requests.push(r.url());
    if (r.method() === 'POST') rec.posts.push({ url: r.url(), body: r.postData() || '', headers: r.headers() });
  });
  page.on('framenavigated', (f) => rec.navigations.push(f.url()));
  page.on('console', (m) => rec.console.push(m.type() + ': ' + m.text()));
  page.on('pageerror', (e) => rec.pageErrors.push(String(e)));
  return { context, page, rec };
}

function shot(page, name, opts = {}) {
  return page.screenshot({ path: path.join(artifacts, `connect-ui-${name}.png`), fullPage: true, ...opts });
}

function assertNoCspOrScriptErrors(rec) {
  assert.deepEqual(rec.pageErrors, [], 'uncaught page errors');
  // Inline scripts/styles or calls outside connect-src would break the UI under latch's CSP.
  // (img-src is left out: a logo URL built from a public URL on another host is a config matter.)
  const csp = rec.console.filter((l) => /Content Security Policy/i.test(l) && /script-src|style-src|connect-src|default-src/.test(l));
  assert.deepEqual(csp, [], 'CSP violations');
}

async function visible(locator, timeout = T) {
  await locator.first().waitFor({ state: 'visible', timeout });
  return locator.first();
}

async function getConnection(connectionId) {
  const r = await stack.api('GET', `/connections/${encodeURIComponent(connectionId)}?provider_config_key=${KEY}`);
  assert.equal(r.status, 200, 'GET /connections/:id -> ' + JSON.stringify(r.json));
  return r.json;
}

// Field ids are derived from the provider definition: f-<group>-<name>.
const SEL = {
  instance: '#f-params-instance',
  clientId: '#f-credentials-client_id',
  secret: '#f-credentials-client_secret',
  clientIdError: '#f-credentials-client_id-error',
  submit: '#submit-btn',
  alert: '#form-alert',
  success: '#success-text',
  fatalTitle: '#fatal-title'
};

// ------------------------------------------------------------------------------------------------
// 1. connect link

test('connect link: form from the provider, validation, rejected secret, then connected', { timeout: 90000 }, async () => {
  const { link, token, endUserId } = await newSession();
  const { context, page, rec } = await openPage();
  try {
    await page.goto(link);
    const instance = await visible(page.locator(SEL.instance));

    // The form: an instance select with the five hosts, Client ID, masked Client Secret.
    assert.equal(await instance.evaluate((e) => e.tagName), 'SELECT');
    const options = await instance.evaluate((e) => [...e.options].map((o) => o.value).filter(Boolean));
    assert.deepEqual([...options].sort(), [...HOSTS].sort());
    assert.equal(await page.locator('label[for="f-params-instance"]').count(), 1);
    const clientId = page.locator(SEL.clientId);
    const secret = page.locator(SEL.secret);
    assert.equal(await clientId.getAttribute('type'), 'text');
    assert.equal(await secret.getAttribute('type'), 'password');
    assert.equal(await secret.getAttribute('autocomplete'), 'off');
    assert.equal(await secret.getAttribute('spellcheck'), 'false');
    assert.match(await page.locator('label[for="f-credentials-client_id"]').innerText(), /Client ID/);
    assert.match(await page.locator('label[for="f-credentials-client_secret"]').innerText(), /Client Secret/);
    assert.match(await page.locator('#form-title').innerText(), /NinjaOne RMM/);
    await shot(page, '01-form');

    // Live validation: a too-short Client ID is flagged while typing.
    await clientId.click();
    await clientId.pressSequentially('abc', { delay: 20 });
    const idErr = await visible(page.locator(SEL.clientIdError));
    assert.match(await idErr.innerText(), /Incorrect Client ID/);
    assert.equal(await clientId.getAttribute('aria-invalid'), 'true');
    assert.match(await clientId.getAttribute('aria-describedby'), /f-credentials-client_id-error/);
    // ...and cleared as soon as it is valid.
    await clientId.fill(stack.client.client_id);
    await page.locator(SEL.clientIdError).waitFor({ state: 'hidden', timeout: T });
    assert.equal(await clientId.getAttribute('aria-invalid'), 'false');

    // Wrong secret -> NinjaOne rejects it -> actionable message, values kept.
    await instance.selectOption(INSTANCE());
    await secret.fill(WRONG_SECRET);
    await page.locator(SEL.submit).click();
    const alert = await visible(page.locator(SEL.alert));
    const alertText = await alert.innerText();
    assert.match(alertText, /rejected/i);
    assert.match(alertText, /Client ID/);
    assert.ok(alertText.includes(INSTANCE()), 'the message names the chosen instance');
    assert.equal(await secret.getAttribute('aria-invalid'), 'true', 'the credential fields are highlighted');
    assert.equal(await clientId.inputValue(), stack.client.client_id, 'Client ID kept');
    assert.equal(await instance.inputValue(), INSTANCE(), 'instance kept');
    assert.equal(await page.locator(SEL.submit).isEnabled(), true, 'can retry');
    await shot(page, '02-rejected');

    // Fix the secret and retry.
    await secret.fill(stack.client.client_secret);
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url().includes('/oauth2/auth/') && r.request().method() === 'POST', { timeout: 30000 }),
      page.locator(SEL.submit).click()
    ]);
    assert.equal(resp.status(), 200);
    const result = await resp.json();
    assert.equal(result.providerConfigKey, KEY);
    assert.equal(typeof result.connectionId, 'string');
    const success = await visible(page.locator(SEL.success));
    assert.match(await success.innerText(), /You are now connected to NinjaOne RMM/);
    await shot(page, '03-connected');

    // The request is the one @nangohq/frontend makes: instance in the query, credentials in the JSON body.
    const post = rec.posts.filter((p) => p.url.includes('/oauth2/auth/')).pop();
    const postUrl = new URL(post.url);
    assert.equal(postUrl.pathname, `/oauth2/auth/${KEY}`);
    assert.equal(postUrl.searchParams.get('connect_session_token'), token);
    assert.equal(postUrl.searchParams.get('params[instance]'), INSTANCE());
    assert.match(post.headers['content-type'] || '', /^application\/json/);
    assert.deepEqual(JSON.parse(post.body), { client_id: stack.client.client_id, client_secret: stack.client.client_secret });

    // The connection exists with the chosen instance.
    const conn = await getConnection(result.connectionId);
    assert.equal(conn.provider_config_key, KEY);
    assert.equal(conn.connection_config && conn.connection_config.instance, INSTANCE());
    const list = await stack.api('GET', '/connections');
    assert.equal(list.status, 200);
    const mine = (list.json.connections || []).filter((c) => c.connection_id === result.connectionId);
    assert.equal(mine.length, 1, 'listed in GET /connections');
    if (mine[0].end_user) assert.equal(mine[0].end_user.id, endUserId);

    // The secret never left the JSON body: not in any URL, navigation, console line or the DOM.
    for (const s of [WRONG_SECRET, stack.client.client_secret]) {
      for (const u of [...rec.requests, ...rec.navigations, page.url()]) {
        assert.ok(!u.includes(s) && !u.includes(encodeURIComponent(s)), 'secret in URL ' + u);
      }
      assert.ok(!rec.console.some((l) => l.includes(s)), 'secret in console');
      assert.ok(!(await page.content()).includes(s), 'secret in DOM');
      const inDom = await page.evaluate((sec) => [...document.querySelectorAll('input')].some((i) => i.value.includes(sec)) ||
        document.body.innerText.includes(sec), s);
      assert.ok(!inDom, 'secret still in an input after success');
    }
    assertNoCspOrScriptErrors(rec);
  } finally {
    await context.close();
  }
});

// ------------------------------------------------------------------------------------------------
// 2. embedded through @nangohq/frontend

test('embedded: openConnectUI handshake, Escape closes, connect event reaches the host', { timeout: 90000 }, async () => {
  const { token } = await newSession();
  const { context, page, rec } = await openPage();
  try {
    const hostUrl = `${host.url}/?latch=${encodeURIComponent(stack.latchUrl)}&token=${encodeURIComponent(token)}`;
    await page.goto(hostUrl);
    await page.waitForFunction(() => window.hostReady === true, null, { timeout: T });

    // Open, then close with Escape.
    await page.evaluate(() => window.openUI());
    const iframe = page.locator('iframe#connect-ui');
    await iframe.waitFor({ state: 'attached', timeout: T });
    const src = await iframe.getAttribute('src');
    const srcUrl = new URL(src);
    assert.equal(srcUrl.origin, new URL(stack.latchUrl).origin);
    assert.equal(srcUrl.pathname, '/ui/');
    assert.equal(srcUrl.searchParams.get('apiURL'), stack.latchUrl);
    assert.ok(!src.includes(token), 'the SDK passes the token by postMessage, not in the URL');
    let frame = page.frameLocator('iframe#connect-ui');
    await visible(frame.locator(SEL.instance));
    await page.waitForFunction(() => window.events.some((e) => e.type === 'ready'), null, { timeout: T });
    await frame.locator(SEL.instance).focus();
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => window.events.some((e) => e.type === 'close'), null, { timeout: T });
    await page.waitForFunction(() => !document.querySelector('iframe#connect-ui'), null, { timeout: T });

    // Reopen and connect.
    await page.evaluate(() => { window.events = []; window.openUI(); });
    frame = page.frameLocator('iframe#connect-ui');
    await visible(frame.locator(SEL.instance));
    assert.equal(await frame.locator('#close-btn').isVisible(), true, 'close button shown when embedded');
    await frame.locator(SEL.instance).selectOption(INSTANCE());
    await frame.locator(SEL.clientId).fill(stack.client.client_id);
    await frame.locator(SEL.secret).fill(stack.client.client_secret);
    await shot(page, '06-embedded-form');
    await frame.locator(SEL.submit).click();
    await page.waitForFunction(() => window.events.some((e) => e.type === 'connect'), null, { timeout: 30000 });
    await visible(frame.locator(SEL.success));
    assert.match(await frame.locator(SEL.success).innerText(), /You are now connected to NinjaOne RMM/);
    await shot(page, '07-embedded-connected');

    const events = await page.evaluate(() => window.events);
    const connect = events.find((e) => e.type === 'connect');
    assert.equal(connect.payload.providerConfigKey, KEY);
    assert.equal(typeof connect.payload.connectionId, 'string');
    assert.ok(connect.payload.connectionId.length > 0);
    assert.ok(!JSON.stringify(events).includes(stack.client.client_secret), 'no secret in events');
    const conn = await getConnection(connect.payload.connectionId);
    assert.equal(conn.connection_config && conn.connection_config.instance, INSTANCE());

    // "Done" closes the modal.
    await frame.locator('#done-btn').click();
    await page.waitForFunction(() => window.events.some((e) => e.type === 'close'), null, { timeout: T });
    await page.waitForFunction(() => !document.querySelector('iframe#connect-ui'), null, { timeout: T });

    for (const u of rec.requests) assert.ok(!u.includes(stack.client.client_secret), 'secret in URL ' + u);
    assertNoCspOrScriptErrors(rec);
  } finally {
    await context.close();
  }
});

test('embedded: a rejected secret posts an error event to the host', { timeout: 60000 }, async () => {
  const { token } = await newSession();
  const { context, page, rec } = await openPage();
  try {
    await page.goto(`${host.url}/?latch=${encodeURIComponent(stack.latchUrl)}&token=${encodeURIComponent(token)}`);
    await page.waitForFunction(() => window.hostReady === true, null, { timeout: T });
    await page.evaluate(() => window.openUI());
    const frame = page.frameLocator('iframe#connect-ui');
    await visible(frame.locator(SEL.instance));
    await frame.locator(SEL.instance).selectOption(INSTANCE());
    await frame.locator(SEL.clientId).fill(stack.client.client_id);
    await frame.locator(SEL.secret).fill(WRONG_SECRET);
    await frame.locator(SEL.submit).click();
    await page.waitForFunction(() => window.events.some((e) => e.type === 'error'), null, { timeout: 30000 });
    const err = (await page.evaluate(() => window.events)).find((e) => e.type === 'error');
    assert.equal(typeof err.payload.errorType, 'string');
    assert.match(err.payload.errorMessage, /rejected/i);
    assert.ok(!JSON.stringify(err).includes(WRONG_SECRET));
    assert.equal(await frame.locator(SEL.alert).isVisible(), true);
    assertNoCspOrScriptErrors(rec);
  } finally {
    await context.close();
  }
});

// ------------------------------------------------------------------------------------------------
// 3. keyboard only

async function activeId(page) {
  return page.evaluate(() => {
    const a = document.activeElement;
    return a ? (a.id || a.getAttribute('aria-label') || a.textContent.trim() || a.tagName) : null;
  });
}

async function tabUntil(page, id, max = 12) {
  const seen = [];
  for (let i = 0; i < max; i++) {
    const cur = await activeId(page);
    seen.push(cur);
    if (cur === id) return seen;
    await page.keyboard.press('Tab');
  }
  assert.fail(`could not reach #${id} with Tab; focus went through ${JSON.stringify(seen)}`);
}

test('keyboard only: tab order, focus ring, show/hide, Enter submits', { timeout: 90000 }, async () => {
  const { link } = await newSession();
  const { context, page, rec } = await openPage();
  try {
    await page.goto(link);
    await visible(page.locator(SEL.instance));
    // The first field has focus when the form opens.
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'f-params-instance', null, { timeout: T });

    // Pick the instance by typing on the focused select.
    await page.keyboard.type(INSTANCE().split('.')[0], { delay: 50 });
    assert.equal(await page.locator(SEL.instance).inputValue(), INSTANCE());

    // Tab through the form: instance -> client id -> secret -> show/hide -> submit.
    const order = [];
    order.push(...await tabUntil(page, 'f-credentials-client_id'));
    await page.keyboard.type(stack.client.client_id);
    await page.keyboard.press('Tab');
    order.push(...await tabUntil(page, 'f-credentials-client_secret'));
    await page.keyboard.type(stack.client.client_secret);
    await page.keyboard.press('Tab');
    // The show/hide toggle works with the keyboard.
    const toggleName = await activeId(page);
    assert.match(toggleName, /Show Client Secret/);
    await page.keyboard.press('Space');
    assert.equal(await page.locator(SEL.secret).getAttribute('type'), 'text');
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-pressed')), 'true');
    await page.keyboard.press('Enter');
    assert.equal(await page.locator(SEL.secret).getAttribute('type'), 'password');
    await page.keyboard.press('Tab');
    order.push(...await tabUntil(page, 'submit-btn'));
    const idx = (id) => order.indexOf(id);
    assert.ok(idx('f-params-instance') < idx('f-credentials-client_id') && idx('f-credentials-client_id') < idx('f-credentials-client_secret'),
      'tab order follows the form: ' + JSON.stringify(order));
    // A visible focus ring on the button.
    const ring = await page.evaluate(() => {
      const cs = getComputedStyle(document.activeElement);
      return { style: cs.outlineStyle, width: parseFloat(cs.outlineWidth) };
    });
    assert.notEqual(ring.style, 'none', 'focus ring on the submit button');
    assert.ok(ring.width >= 2, 'focus ring at least 2px');
    await shot(page, '08-keyboard-focus');

    // Back to the secret and submit with Enter from the field.
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Shift+Tab');
    assert.equal(await activeId(page), 'f-credentials-client_secret');
    await page.keyboard.press('Enter');
    const success = await visible(page.locator(SEL.success), 30000);
    assert.match(await success.innerText(), /You are now connected to NinjaOne RMM/);
    assertNoCspOrScriptErrors(rec);
  } finally {
    await context.close();
  }
});

// ------------------------------------------------------------------------------------------------
// 4. phone + dark mode

function isDark(rgb) {
  const m = /rgba?\((\d+),\s*(\d+),\s*(\d+)/.exec(rgb);
  assert.ok(m, 'colour ' + rgb);
  const [r, g, b] = m.slice(1).map(Number);
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) < 80;
}

test('phone viewport (375x812) and dark mode', { timeout: 90000 }, async () => {
  const { link } = await newSession();

  // Phone, light.
  {
    const { context, page, rec } = await openPage({ viewport: { width: 375, height: 812 }, deviceScaleFactor: 2, isMobile: true });
    try {
      await page.goto(link);
      await visible(page.locator(SEL.instance));
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, 'no horizontal scrolling on a phone (overflow ' + overflow + 'px)');
      const box = await page.locator(SEL.submit).boundingBox();
      assert.ok(box.width >= 280 && box.height >= 44, 'a large touch target for Connect');
      const fontSize = await page.locator(SEL.clientId).evaluate((e) => parseFloat(getComputedStyle(e).fontSize));
      assert.ok(fontSize >= 16, 'inputs >= 16px (no zoom on focus)');
      await shot(page, '04-phone');
      assertNoCspOrScriptErrors(rec);
    } finally {
      await context.close();
    }
  }

  // System dark preference.
  {
    const { context, page, rec } = await openPage({ colorScheme: 'dark' });
    try {
      await page.goto(link);
      await visible(page.locator(SEL.instance));
      const bg = await page.locator('#card').evaluate((e) => getComputedStyle(e).backgroundColor);
      assert.ok(isDark(bg), 'dark card, got ' + bg);
      const fg = await page.locator('#form-title').evaluate((e) => getComputedStyle(e).color);
      assert.ok(!isDark(fg), 'light text, got ' + fg);
      await shot(page, '05-dark');
      // Phone + dark.
      await page.setViewportSize({ width: 375, height: 812 });
      await shot(page, '05-dark-phone');
      assertNoCspOrScriptErrors(rec);
    } finally {
      await context.close();
    }
  }

  // ?theme= overrides the system preference both ways.
  for (const [scheme, theme, wantDark] of [['light', 'dark', true], ['dark', 'light', false]]) {
    const { context, page } = await openPage({ colorScheme: scheme });
    try {
      await page.goto(link + (link.includes('?') ? '&' : '?') + 'theme=' + theme);
      await visible(page.locator(SEL.instance));
      const bg = await page.locator('#card').evaluate((e) => getComputedStyle(e).backgroundColor);
      assert.equal(isDark(bg), wantDark, `?theme=${theme} with system ${scheme}: ${bg}`);
    } finally {
      await context.close();
    }
  }
});

// ------------------------------------------------------------------------------------------------
// 5. bad session tokens

test('unknown, malformed or missing session token: the link-expired message', { timeout: 60000 }, async () => {
  const { context, page, rec } = await openPage();
  try {
    const unknown = 'nango_connect_session_' + crypto.randomBytes(32).toString('hex');
    await page.goto(`${stack.latchUrl}/ui/?session_token=${unknown}`);
    const title = await visible(page.locator(SEL.fatalTitle));
    assert.match(await title.innerText(), /expired/i);
    assert.match(await page.locator('#fatal-text').innerText(), /new link/i);
    assert.equal(await page.locator('#view-form').isVisible(), false);
    await shot(page, '09-expired');

    await page.goto(`${stack.latchUrl}/ui/?session_token=not-a-token`);
    await page.waitForFunction(() => /expired/i.test(document.getElementById('fatal-title').textContent) &&
      !document.getElementById('view-fatal').hidden, null, { timeout: T });

    await page.goto(`${stack.latchUrl}/ui/`);
    await page.waitForFunction(() => !document.getElementById('view-fatal').hidden, null, { timeout: T });
    assert.match(await page.locator(SEL.fatalTitle).innerText(), /Open this page from your app/i);
    assertNoCspOrScriptErrors({ ...rec, console: rec.console.filter((l) => !/status of 401/.test(l)) });
  } finally {
    await context.close();
  }
});
