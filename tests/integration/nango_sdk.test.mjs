// Nango's official Node SDK (@nangohq/node, pinned in package.json) used unchanged against latch.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Nango } from '@nangohq/node';
import { startStack } from './lib/stack.mjs';

let s;
let nango;
before(async () => {
  s = await startStack();
  nango = new Nango({ secretKey: s.secretKey, host: s.latchUrl });
});
after(async () => { await s?.stop(); });

test('listIntegrations', async () => {
  const r = await nango.listIntegrations();
  assert.ok(r.configs.some((c) => c.unique_key === 'ninjaone-rmm' && c.provider === 'ninjaone-rmm'));
});

test('imported connection: get, getToken, list, metadata, delete', async () => {
  // the SDK has no import helper; POST /connections is the documented route
  const imp = await s.api('POST', '/connections', {
    provider_config_key: 'ninjaone-rmm', connection_id: 'sdk-1', connection_config: { instance: 'eu.ninjarmm.com' },
    credentials: { type: 'OAUTH2_CC', token: 'sdk-token', client_id: 'KTmhkNf1_dZZVPmIQTK_lH2DCNJ', client_secret: 'sdk-secret-0123456789' },
  });
  assert.equal(imp.status, 201, imp.text);
  const c = await nango.getConnection('ninjaone-rmm', 'sdk-1');
  assert.equal(c.connection_id, 'sdk-1');
  assert.equal(c.credentials.token, 'sdk-token');
  const tok = await nango.getToken('ninjaone-rmm', 'sdk-1');
  assert.equal(tok.client_secret, 'sdk-secret-0123456789', 'OAUTH2_CC getToken returns the credentials object');
  const list = await nango.listConnections();
  assert.ok(list.connections.some((x) => x.connection_id === 'sdk-1'));
  await nango.setMetadata('ninjaone-rmm', 'sdk-1', { region: 'eu' });
  await nango.updateMetadata('ninjaone-rmm', 'sdk-1', { tier: 'gold' });
  assert.deepEqual(await nango.getMetadata('ninjaone-rmm', 'sdk-1'), { region: 'eu', tier: 'gold' });
  await nango.deleteConnection('ninjaone-rmm', 'sdk-1');
  await assert.rejects(() => nango.getConnection('ninjaone-rmm', 'sdk-1'));
});

test('createConnectSession, the Connect UI call, then getConnection/getToken', async () => {
  const sess = await nango.createConnectSession({ end_user: { id: 'sdk-user', email: 'sdk@example.com' }, allowed_integrations: ['ninjaone-rmm'] });
  assert.match(sess.data.token, /^nango_connect_session_/);
  const r = await s.link(sess.data.token);
  assert.equal(r.status, 200, r.text);
  const id = r.json.connectionId;
  const c = await nango.getConnection('ninjaone-rmm', id);
  assert.equal(c.connection_config.instance, 'eu.ninjarmm.com');
  assert.equal(c.end_user.id, 'sdk-user');
  const tok = await nango.getToken('ninjaone-rmm', id);
  assert.equal(tok.type, 'OAUTH2_CC');
  assert.ok(tok.token.length > 20);
  assert.ok(Date.parse(tok.expires_at) > Date.now() + 30 * 60 * 1000);
});
