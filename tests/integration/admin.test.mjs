// Admin dashboard in Chromium (issue 14): sign in, create an integration, create a connect link,
// link an account through it (the fake NinjaOne), see the connection healthy, break it (the fake
// revokes the client) and see the failure with the upstream's exact error, send a test webhook,
// create an API key (shown once). Every page is screenshotted on a desktop and a phone
// (390x844), light and dark, into build/test-artifacts/admin-*.png, and checked with axe-core,
// as is every state of the Connect UI (form, errors, success; light and dark).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { startStack } from './lib/stack.mjs';
import { createAdmin, axeSerious } from './lib/admin.mjs';

const EMAIL = 'ops@example.com';
const PASSWORD = 'Correct-Horse-' + crypto.randomBytes(6).toString('hex');
const KEY = 'ninja-dash';
const T = 20000;
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 900 };

let stack;
let browser;
const axeFindings = [];

before(async () => {
  stack = await startStack({ tokenLifetime: 3600 });
  createAdmin(stack, EMAIL, PASSWORD);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (stack) await stack.stop().catch(() => {});
});

async function openPage({ viewport = DESKTOP, colorScheme = 'light', isMobile = false } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, isMobile, hasTouch: isMobile });
  const page = await context.newPage();
  const rec = { console: [], pageErrors: [] };
  page.on('console', (m) => rec.console.push(m.type() + ': ' + m.text()));
  page.on('pageerror', (e) => rec.pageErrors.push(String(e)));
  return { context, page, rec };
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(stack.artifactsDir, `admin-${name}.png`), fullPage: true });
}

/** Screenshot + axe; a serious or critical violation fails the test (collected, then asserted). */
async function check(page, name) {
  await shot(page, name);
  const v = await axeSerious(page);
  for (const x of v) axeFindings.push(`${name}: ${x}`);
}

function assertClean(rec) {
  assert.deepEqual(rec.pageErrors, [], 'uncaught page errors');
  const csp = rec.console.filter((l) => /Content Security Policy/i.test(l));
  assert.deepEqual(csp, [], 'CSP violations');
}

async function signIn(page) {
  await page.goto(stack.latchUrl + '/admin/');
  await page.locator('#email').waitFor({ timeout: T });
  await page.fill('#email', EMAIL);
  await page.fill('#password', PASSWORD);
  await page.click('#login-btn');
  await page.locator('h1:has-text("Connections")').waitFor({ timeout: T });
}

async function linkThroughConnectUi(link, { colorScheme = 'light', prefix }) {
  const { context, page, rec } = await openPage({ colorScheme });
  try {
    await page.goto(link);
    await page.locator('#f-params-instance').waitFor({ timeout: T });
    await page.selectOption('#f-params-instance', stack.client.instance);
    await check(page, `${prefix}-connect-ui-form`);
    await page.fill('#f-credentials-client_id', 'abc'); // live validation error
    await page.locator('#f-credentials-client_id-error').waitFor({ timeout: T });
    await page.fill('#f-credentials-client_id', stack.client.client_id);
    await page.fill('#f-credentials-client_secret', 'Wrong_' + crypto.randomBytes(10).toString('hex'));
    await page.click('#submit-btn');
    await page.locator('#form-alert').waitFor({ state: 'visible', timeout: 30000 });
    await check(page, `${prefix}-connect-ui-error`);
    await page.fill('#f-credentials-client_secret', stack.client.client_secret);
    await page.click('#submit-btn');
    await page.locator('#success-text').waitFor({ state: 'visible', timeout: 30000 });
    await check(page, `${prefix}-connect-ui-success`);
    assertClean(rec);
  } finally {
    await context.close();
  }
}

const PAGES = ['connections', 'integrations', 'link', 'log', 'settings'];

test('dashboard: sign in, integration, connect link, link, healthy, broken with the upstream error, test webhook, API key', { timeout: 300000 }, async () => {
  const { context, page, rec } = await openPage();
  try {
    // sign-in page, and a wrong password first
    await page.goto(stack.latchUrl + '/admin/');
    await page.locator('#email').waitFor({ timeout: T });
    await check(page, 'desktop-light-login');
    await page.fill('#email', EMAIL);
    await page.fill('#password', 'not-the-password');
    await page.click('#login-btn');
    await page.locator('#login-error .alert').waitFor({ timeout: T });
    assert.match(await page.locator('#login-error').innerText(), /Wrong email or password/);
    await check(page, 'desktop-light-login-error');
    await signIn(page);

    // an integration
    await page.click('a[data-page="integrations"]');
    await page.locator('#new-key').waitFor({ timeout: T });
    await page.selectOption('#new-provider', 'ninjaone-rmm');
    await page.fill('#new-key', KEY);
    await page.fill('#new-name', 'NinjaOne (dashboard)');
    await page.click('#create-int');
    await page.locator('#int-msg .alert-ok').waitFor({ timeout: T });
    await page.locator(`td:has-text("${KEY}")`).first().waitFor({ timeout: T });

    // a connect link for a customer
    await page.click('a[data-page="link"]');
    await page.locator('#link-user').waitFor({ timeout: T });
    await page.selectOption('#link-int', KEY);
    await page.fill('#link-user', 'cust-42');
    await page.fill('#link-email', 'it@customer.example');
    await page.fill('#link-name', 'Customer 42');
    await page.click('#link-btn');
    const link = await (await page.locator('#link-value')).inputValue({ timeout: T });
    assert.match(link, /\/ui\/\?session_token=nango_connect_session_[0-9a-f]{64}$/);
    await check(page, 'desktop-light-link-created');

    // the customer links their account through it (Connect UI: form, error, success)
    await linkThroughConnectUi(link, { prefix: 'light' });

    // the connection is healthy
    await page.goto(stack.latchUrl + '/admin/#/connections?q=customer.example');
    const row = page.locator('#connections tbody tr');
    await row.first().waitFor({ timeout: T });
    assert.equal(await row.count(), 1);
    assert.match(await row.first().innerText(), /Healthy/);
    assert.match(await row.first().innerText(), /Customer 42/);
    await check(page, 'desktop-light-connections');
    await row.first().locator('a').click();
    await page.locator('#h-facts').waitFor({ timeout: T });
    assert.match(await page.locator('dl.facts').innerText(), /Healthy/);
    await check(page, 'desktop-light-connection-healthy');
    const connUrl = page.url();

    // break it: the fake NinjaOne revokes the client (new secret) and every token; the next
    // proxy call gets a 401, latch refreshes and the token endpoint says invalid_client
    const cid = new URL(connUrl.replace('#/', '')).searchParams.get('id');
    await stack.fake.addClient({ ...stack.client, client_secret: 'Revoked_' + crypto.randomBytes(12).toString('hex') });
    await stack.fake.expireAll();
    const p = await stack.api('GET', '/proxy/v2/organizations', undefined, { headers: { 'Connection-Id': cid, 'Provider-Config-Key': KEY } });
    assert.notEqual(p.status, 200, 'the proxy call fails once the client is revoked');
    await page.reload();
    await page.locator('#h-facts').waitFor({ timeout: T });
    const facts = await page.locator('dl.facts').innerText();
    assert.match(facts, /Needs re-authorisation|Refresh failing/);
    const lastError = await page.locator('#last-error').innerText();
    // the upstream's own error code, verbatim, as the refresher recorded it
    assert.match(lastError, /\binvalid_client\b/, 'the upstream error code');
    assert.match(await page.locator('#h-err').locator('..').innerText(), /auth/);
    // the connection's history (the operations log, written within ~200 ms): the failed
    // refresh, its error code and the upstream's own reason
    let failed = [];
    for (let i = 0; i < 25 && !failed.length; i++) {
      if (i) { await new Promise((r) => setTimeout(r, 200)); await page.reload(); }
      await page.locator('#history table, #history p, #history .alert').first().waitFor({ timeout: T });
      const rows = page.locator('#history tbody tr');
      for (let j = 0; j < await rows.count(); j++) {
        const cells = await rows.nth(j).locator('td').allInnerTexts();
        if (/^(refresh|proxy)$/.test(cells[1].trim()) && /failure/.test(cells[2])) failed.push(cells);
      }
    }
    assert.ok(failed.length, 'a failed refresh or proxy call in the history');
    const refresh = failed.find((c) => c[1].trim() === 'refresh');
    assert.ok(refresh, 'the failed refresh in the history');
    assert.equal(refresh[3].trim(), 'refresh_failed', 'the error code');
    assert.match(refresh[5], /\breason invalid_client\b/, 'the upstream error code');
    assert.match(refresh[5], /\bwhy 401\b/);
    assert.ok(failed.some((c) => c[1].trim() === 'proxy'), 'the failed proxy call in the history');
    await check(page, 'desktop-light-connection-broken');

    // the connection list shows the failure at a glance
    await page.goto(stack.latchUrl + '/admin/#/connections');
    await page.locator('#connections tbody tr').first().waitFor({ timeout: T });
    assert.match(await page.locator('#connections').innerText(), /Needs re-authorisation|Refresh failing/);

    // a reconnect link for the customer
    await page.goto(connUrl);
    await page.locator('#reconnect-btn').click();
    assert.match(await page.locator('#link-value').inputValue({ timeout: T }), /session_token=nango_connect_session_/);

    // settings: send a test webhook and see the result; the receiver got a signed test event
    await page.click('a[data-page="settings"]');
    await page.locator('#wh-test').waitFor({ timeout: T });
    const before = stack.webhooks.received.length;
    await page.click('#wh-test');
    const res = page.locator('#wh-test-out .alert');
    await res.first().waitFor({ timeout: T });
    assert.match(await res.first().innerText(), /HTTP 200/);
    const hook = stack.webhooks.received.slice(before).find((r) => r.json && r.json.type === 'test');
    assert.ok(hook, 'the receiver got the test event');
    assert.match(hook.headers['x-nango-hmac-sha256'] || '', /^[0-9a-f]{64}$/);

    // an API key, shown once, and it works
    await page.fill('#key-label', 'ci-pipeline');
    await page.click('#key-create');
    const newKey = await page.locator('#new-key-value').inputValue({ timeout: T });
    assert.match(newKey, /^[0-9a-f-]{36}$/);
    const ok = await fetch(stack.latchUrl + '/integrations', { headers: { authorization: 'Bearer ' + newKey } });
    assert.equal(ok.status, 200);
    await check(page, 'desktop-light-settings-key-created');
    await page.reload();
    await page.locator('#keys tbody tr').first().waitFor({ timeout: T });
    assert.ok(!(await page.content()).includes(newKey), 'the key is not shown again');

    assertClean(rec);
  } finally {
    await context.close();
  }
});

test('every page on a desktop and a phone, light and dark: screenshots and axe', { timeout: 300000 }, async () => {
  for (const [form, viewport, isMobile] of [['desktop', DESKTOP, false], ['phone', PHONE, true]]) {
    for (const scheme of ['light', 'dark']) {
      const { context, page, rec } = await openPage({ viewport, colorScheme: scheme, isMobile });
      try {
        await page.goto(stack.latchUrl + '/admin/');
        await page.locator('#email').waitFor({ timeout: T });
        await check(page, `${form}-${scheme}-login`);
        await signIn(page);
        for (const p of PAGES) {
          await page.goto(stack.latchUrl + '/admin/#/' + p);
          await page.locator('#page-title').waitFor({ timeout: T });
          await page.waitForLoadState('networkidle');
          await check(page, `${form}-${scheme}-${p}`);
        }
        await page.goto(stack.latchUrl + '/admin/#/connections');
        await page.locator('#connections tbody tr a').first().click();
        await page.locator('#h-facts').waitFor({ timeout: T });
        await page.waitForLoadState('networkidle');
        await check(page, `${form}-${scheme}-connection`);
        assertClean(rec);
      } finally {
        await context.close();
      }
    }
  }
  // the Connect UI in dark mode too (form, error, success)
  const s = await stack.createSession({ end_user: { id: 'dark-user', email: 'dark@customer.example' }, allowed_integrations: [KEY] });
  await stack.fake.addClient({ ...stack.client }); // the client is valid again
  await linkThroughConnectUi(s.connect_link, { colorScheme: 'dark', prefix: 'dark' });
  assert.deepEqual(axeFindings, [], 'serious or critical axe violations');
});
