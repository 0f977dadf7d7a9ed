// Helpers for the admin dashboard tests: an admin account made with the real CLI, sign-in over
// HTTP (cookie + CSRF token), and axe-core run inside Chromium pages.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { LATCH_BIN } from './stack.mjs';

const require = createRequire(import.meta.url);
const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** `latch admin create <email>` with the password on stdin (the non-TTY path). */
export function createAdmin(stack, email, password) {
  const r = spawnSync(LATCH_BIN, ['admin', 'create', email], { input: password + '\n', env: stack.cliEnv(), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`latch admin create: ${r.status} ${r.stderr}`);
  return r;
}

/** Signs in over HTTP; returns { cookie, csrf, res }. */
export async function login(url, email, password) {
  const res = await fetch(url + '/admin/api/login', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }),
  });
  const json = await res.json().catch(() => null);
  const set = res.headers.get('set-cookie') || '';
  const m = /latch_admin=([^;]*)/.exec(set);
  return { res, json, setCookie: set, cookie: m ? `latch_admin=${m[1]}` : null, csrf: json && json.data ? json.data.csrf_token : null };
}

/** A request to the dashboard API with an optional session. */
export async function adminApi(url, method, path, { cookie, csrf, body, headers = {} } = {}) {
  const h = { ...headers };
  if (cookie) h.cookie = cookie;
  if (csrf) h['x-csrf-token'] = csrf;
  if (body !== undefined) h['content-type'] = 'application/json';
  const r = await fetch(url + '/admin/api/' + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

/**
 * Runs axe-core in the page (evaluated through DevTools, so the page's strict CSP stays on) and
 * returns the serious and critical violations, as readable strings.
 */
export async function axeSerious(page) {
  await page.evaluate(AXE_SOURCE + '\n;0');
  const res = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    // label-content-name-mismatch (WCAG 2.5.3) is experimental in axe 4, so off unless asked
    const r = await axe.run(document, { resultTypes: ['violations'], rules: { 'label-content-name-mismatch': { enabled: true } } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
  });
  return res.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.join(', ')}`);
}
