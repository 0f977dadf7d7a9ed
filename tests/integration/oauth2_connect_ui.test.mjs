// latch's Connect UI with an OAUTH2 integration, in headless Chromium (issue 13): the
// "Connect with <Provider>" button opens the popup, the popup goes latch /oauth/connect ->
// the provider's authorization page (a TLS server written here, at NinjaOne's eu host: Chromium
// maps the name with --host-resolver-rules) -> latch /oauth/callback, whose page posts the result
// back; the UI shows it. Also: the user declines (words), the user closes the popup (words), and
// axe finds nothing serious on the form. Screenshots go to build/test-artifacts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startLatch, api, tmpDir, BUILD, INSTANCES } from './lib/stack.mjs';
import { startGenericUpstream } from './lib/generic_upstream.mjs';
import { axeSerious } from './lib/admin.mjs';

const KEY = 'ninja-oauth';
const CLIENT_ID = 'oauth-client-id-0001';
const CLIENT_SECRET = 'app-secret-DO-NOT-LEAK-4f9c2a';
const BUTTON = 'Connect with NinjaOne RMM (OAuth2)';
const T = 15000;

let up, latch, secretKey, browser, artifacts;
let consent = 'approve'; // what the fake consent screen does: approve | deny | stay
const issued = new Map(); // code -> challenge

before(async () => {
  up = await startGenericUpstream({ hosts: INSTANCES });
  secretKey = randomUUID();
  artifacts = path.join(BUILD, 'test-artifacts');
  fs.mkdirSync(artifacts, { recursive: true });
  up.rule({ method: 'GET', path: '/ws/oauth/authorize' }, (req) => {
    const q = req.query;
    const back = new URL(q.redirect_uri);
    back.searchParams.set('state', q.state);
    if (consent === 'stay') return { status: 200, headers: { 'content-type': 'text/html' }, body: '<!doctype html><title>NinjaOne sign in</title><h1>Sign in to NinjaOne</h1>' };
    if (consent === 'deny') back.searchParams.set('error', 'access_denied');
    else {
      const code = `code-${crypto.randomBytes(6).toString('hex')}`;
      issued.set(code, q.code_challenge);
      back.searchParams.set('code', code);
    }
    return { status: 302, headers: { location: back.toString() }, body: '' };
  });
  up.rule({ method: 'POST', path: '/ws/oauth/token' }, (req) => {
    const f = new URLSearchParams(req.body);
    const ch = issued.get(f.get('code'));
    const ok = ch && crypto.createHash('sha256').update(f.get('code_verifier') || '').digest('base64url') === ch &&
      f.get('client_secret') === CLIENT_SECRET;
    if (!ok) return { status: 400, json: { error: 'invalid_grant' } };
    issued.delete(f.get('code'));
    return { status: 200, json: { access_token: 'at-ui', refresh_token: 'rt-ui', expires_in: 3600, token_type: 'Bearer' } };
  });
  latch = await startLatch({
    dir: tmpDir('oauth2-ui-'),
    env: { LATCH_SECRET_KEY: secretKey, LATCH_RESOLVE: up.resolveFor().join(','), LATCH_CA_FILE: up.tls.ca },
  });
  const r = await api(latch.url, secretKey, 'POST', '/integrations', {
    provider: 'ninjaone-rmm-oauth2', unique_key: KEY,
    credentials: { type: 'OAUTH2', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, scopes: 'monitoring,management,control,offline_access' },
  });
  assert.equal(r.status, 200, r.text);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // the provider's authorization page: NinjaOne's eu host, served by the TLS server above
      `--host-resolver-rules=MAP eu.ninjarmm.com ${up.bind}`, '--ignore-certificate-errors'],
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  await latch?.stop();
  await up?.stop();
});

async function openUi() {
  const r = await api(latch.url, secretKey, 'POST', '/connect/sessions', { end_user: { id: 'u-ui' }, allowed_integrations: [KEY] });
  assert.equal(r.status, 201, r.text);
  const context = await browser.newContext({ viewport: { width: 1000, height: 820 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) errors.push(m.text()); });
  context.on('page', (p) => {
    p.on('pageerror', (e) => errors.push(`popup: ${e}`));
    p.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) errors.push(`popup: ${m.text()}`); });
  });
  await page.goto(`${latch.url}/ui/?session_token=${r.json.data.token}`);
  await page.getByLabel('Instance').selectOption('eu.ninjarmm.com');
  const button = page.getByRole('button', { name: BUTTON });
  await button.waitFor({ state: 'visible', timeout: T });
  return { context, page, button, errors };
}

test('Connect with NinjaOne: popup, consent, callback, the UI says connected; axe finds nothing serious', async () => {
  consent = 'approve';
  const { context, page, button, errors } = await openUi();
  assert.deepEqual(await axeSerious(page), []);
  await page.screenshot({ path: path.join(artifacts, 'oauth2-connect-ui-form.png'), fullPage: true });
  const [popup] = await Promise.all([context.waitForEvent('page', { timeout: T }), button.click()]);
  await page.getByRole('heading', { name: 'Connected' }).waitFor({ timeout: T });
  await page.screenshot({ path: path.join(artifacts, 'oauth2-connect-ui-connected.png'), fullPage: true });
  if (!popup.isClosed()) await popup.waitForEvent('close', { timeout: T }).catch(() => {});
  assert.ok(popup.isClosed(), 'the callback page closes its window');
  const list = await api(latch.url, secretKey, 'GET', `/connections?integrationId=${KEY}`);
  assert.equal(list.json.connections.length, 1, list.text);
  assert.deepEqual(errors, []);
  await context.close();
});

test('the user declines in the popup: the UI says so in words, and can try again', async () => {
  consent = 'deny';
  const { context, page, button, errors } = await openUi();
  await Promise.all([context.waitForEvent('page', { timeout: T }), button.click()]);
  const alert = page.getByRole('alert');
  await alert.getByText('Access was not allowed').waitFor({ timeout: T });
  assert.match(await alert.innerText(), /You declined access in NinjaOne RMM \(OAuth2\)/);
  await page.screenshot({ path: path.join(artifacts, 'oauth2-connect-ui-denied.png'), fullPage: true });
  assert.equal(await button.isEnabled(), true, 'the button is usable again');
  assert.deepEqual(errors, []);
  await context.close();
});

test('the user closes the popup before finishing: the UI says so in words', async () => {
  consent = 'stay';
  const { context, page, button } = await openUi();
  const [popup] = await Promise.all([context.waitForEvent('page', { timeout: T }), button.click()]);
  await popup.waitForLoadState('domcontentloaded');
  await popup.close();
  await page.getByRole('alert').getByText('The sign-in window was closed').waitFor({ timeout: T });
  await page.screenshot({ path: path.join(artifacts, 'oauth2-connect-ui-closed.png'), fullPage: true });
  await context.close();
});

test('a blocked popup (window.open gives nothing, as under a popup blocker) is said in words', async () => {
  consent = 'approve';
  const { context, page, button } = await openUi();
  await page.evaluate(() => { window.open = () => null; });
  await button.click();
  const alert = page.getByRole('alert');
  await alert.getByText('Your browser blocked the sign-in window').waitFor({ timeout: T });
  assert.match(await alert.innerText(), /Allow pop-ups for this page/);
  assert.equal(await button.isEnabled(), true);
  await page.screenshot({ path: path.join(artifacts, 'oauth2-connect-ui-blocked.png'), fullPage: true });
  await context.close();
});
