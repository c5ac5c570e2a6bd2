/**
 * The authentication scheme is case-insensitive (RFC 7235 §2.1): `bearer`,
 * `BEARER` or any other spelling of Bearer is accepted in Authorization, at
 * an MCP endpoint and at registration with an initial access token.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hashSecret, randomToken } from '../../src/identity/secrets.ts';
import { register, token } from '../helpers/oauth.ts';
import { EVERYTHING, NODE, rpcHeaders } from '../helpers/process.ts';
import { startInProcess, type InProcess } from './in-process.ts';

describe('the Bearer scheme in any case', { timeout: 60_000 }, () => {
  let gw: InProcess;
  let registrationToken = '';

  before(async () => {
    gw = await startInProcess((base) =>
      [
        `issuer: ${base}`,
        'servers:',
        '  - name: alpha',
        `    command: ${JSON.stringify(NODE)}`,
        `    args: [${JSON.stringify(EVERYTHING)}, stdio]`,
        'identity:',
        '  registration:',
        '    mode: initial-access-token',
        'log:',
        '  level: silent',
        '',
      ].join('\n'),
    );
    registrationToken = randomToken(32);
    const now = Date.now();
    await gw.app.store.identity.createRegistrationToken({ hash: hashSecret(registrationToken), label: 'test', createdBy: 'test', createdAt: now, expiresAt: now + 3_600_000, usesLeft: 5 });
  });
  after(async () => {
    await gw?.stop();
  });

  it('registration with `bearer TOKEN`, then MCP requests with `bearer`, `BEARER` and `BeArEr`', async () => {
    const registered = await register(gw.base, { client_name: 'machine', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' }, { authorization: `bearer ${registrationToken}` });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    const issued = await token(gw.base, { grant_type: 'client_credentials', resource: `${gw.base}/mcp/alpha`, scope: 'mcp:alpha' }, { basic: { id: String(registered.body.client_id), secret: String(registered.body.client_secret) } });
    assert.equal(issued.status, 200, JSON.stringify(issued.body));
    const accessToken = String(issued.body.access_token);
    for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
      const response = await fetch(`${gw.base}/mcp/alpha`, {
        method: 'POST',
        headers: rpcHeaders({ authorization: `${scheme} ${accessToken}` }),
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: scheme, version: '1' } } }),
      });
      const text = await response.text();
      assert.equal(response.status, 200, `${scheme}: ${text}`);
      assert.ok(response.headers.get('mcp-session-id'), `${scheme}: a session was opened`);
    }
    // Another scheme is still refused.
    const basic = await fetch(`${gw.base}/mcp/alpha`, { method: 'POST', headers: rpcHeaders({ authorization: `Basic ${accessToken}` }), body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }) });
    await basic.text();
    assert.equal(basic.status, 400);
  });
});
