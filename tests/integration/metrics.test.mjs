// /metrics (issue 14): served only on LATCH_METRICS_BIND, scraped while load runs, parsed with a
// real Prometheus text-format parser, and its counters match the requests sent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { startStack, freePort } from './lib/stack.mjs';
import { request, burst } from './lib/load.mjs';

const PCK = 'ninjaone-rmm';
let s;
let conn;
let metricsUrl;

before(async () => {
  const port = await freePort();
  metricsUrl = `http://127.0.0.1:${port}/metrics`;
  s = await startStack({ env: { LATCH_METRICS_BIND: `127.0.0.1:${port}` } });
  const d = await s.createSession({ end_user: { id: 'metrics' } });
  const r = await s.link(d.token);
  assert.equal(r.status, 200, r.text);
  conn = r.json.connectionId;
});
after(async () => { await s?.stop(); });

async function scrape() {
  const r = await fetch(metricsUrl);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  const text = await r.text();
  const fams = parsePrometheusTextFormat(text);
  return { text, fams: Object.fromEntries(fams.map((f) => [f.name, f])) };
}

/** Sum of a counter's samples whose labels match want. */
function sum(fams, name, want = {}) {
  const f = fams[name];
  if (!f) return 0;
  return f.metrics
    .filter((m) => Object.entries(want).every(([k, v]) => m.labels?.[k] === v))
    .reduce((a, m) => a + Number(m.value ?? m.count), 0);
}

test('/metrics is not on the API port', async () => {
  const r = await fetch(`${s.latchUrl}/metrics`);
  assert.equal(r.status, 404);
});

test('scraped during load, it parses and its counters match the requests sent', async () => {
  const before = (await scrape()).fams;
  const proxied = () => request(`${s.latchUrl}/proxy/v2/organizations`, {
    headers: { authorization: `Bearer ${s.secretKey}`, 'connection-id': conn, 'provider-config-key': PCK },
  });
  const N = 200;
  const scrapes = [];
  // scrape while the burst runs: every scrape must parse
  const load = burst(N, proxied, { sockets: 16 });
  for (let i = 0; i < 5; i++) scrapes.push(scrape());
  const results = await load;
  await Promise.all(scrapes);
  assert.ok(results.every((r) => r.status === 200));
  const health = 25;
  for (let i = 0; i < health; i++) assert.equal((await request(`${s.latchUrl}/health`)).status, 200);
  const miss = await request(`${s.latchUrl}/no/such/route/${Date.now()}`);
  assert.equal(miss.status, 404);
  // the last request's line is written when it completes: give the server a moment
  await new Promise((r) => setTimeout(r, 200));
  const { fams, text } = await scrape();

  const d = (name, labels) => sum(fams, name, labels) - sum(before, name, labels);
  assert.equal(d('latch_http_requests_total', { route: '/proxy/*', method: 'GET', status: '200' }), N);
  assert.equal(d('latch_http_requests_total', { route: '/health', status: '200' }), health);
  assert.equal(d('latch_http_requests_total', { route: 'unmatched', status: '404' }), 1);
  assert.ok(!text.includes('/no/such/route'), 'raw paths never become labels');
  assert.equal(d('latch_upstream_requests_total', { provider: 'ninjaone-rmm', status: '200' }), N);

  // histograms: the parser checks their syntax but keeps no labels of labelled histograms (it
  // flattens them), so their series are read from the text: count equals the counter,
  // buckets are cumulative, +Inf equals count
  assert.equal(fams.latch_http_request_duration_seconds.type, 'HISTOGRAM');
  const series = (name, sel) => text.split('\n').filter((l) => l.startsWith(name) && l.includes(sel));
  const sel = 'route="/proxy/*",method="GET",status="200"';
  const buckets = series('latch_http_request_duration_seconds_bucket{', sel).map((l) => Number(l.split(' ').pop()));
  const count = Number(series('latch_http_request_duration_seconds_count{', sel)[0].split(' ').pop());
  assert.equal(buckets.length, 15);
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i] >= buckets[i - 1], 'cumulative buckets');
  assert.equal(buckets[buckets.length - 1], count);
  assert.equal(count, sum(fams, 'latch_http_requests_total', { route: '/proxy/*', method: 'GET', status: '200' }));
  assert.ok(series('latch_store_operation_duration_seconds_count{', 'op="read"').length === 1);
  assert.ok(sum(fams, 'latch_open_connections') >= 1);
  for (const g of ['latch_webhook_queue_depth', 'latch_webhook_queue_oldest_age_seconds', 'latch_ops_dropped_total', 'latch_ops_queue_depth']) {
    assert.ok(fams[g], `${g} exported`);
  }
  assert.equal(sum(fams, 'latch_ops_dropped_total'), 0);
  assert.ok(sum(fams, 'latch_webhook_deliveries_total', { outcome: 'success' }) >= 1, 'the link webhook');
});

test('refresh outcomes are counted by why', async () => {
  const before = (await scrape()).fams;
  const r = await s.api('GET', `/connections/${conn}?provider_config_key=${PCK}&force_refresh=true`);
  assert.equal(r.status, 200);
  const { fams } = await scrape();
  assert.equal(sum(fams, 'latch_token_refreshes_total', { outcome: 'success', why: 'forced' }) -
    sum(before, 'latch_token_refreshes_total', { outcome: 'success', why: 'forced' }), 1);
});
