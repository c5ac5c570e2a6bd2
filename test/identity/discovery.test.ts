/**
 * Discovery: authorization server metadata (RFC 8414, and the OpenID path),
 * protected resource metadata per MCP server (RFC 9728), and what an unknown
 * server or a wrong method gets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';

/** The MCP server's address: these cases never reach it. */
const NEVER_REACHED = 'http://127.0.0.1:9/mcp';

describe('discovery', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;

  before(async () => {
    mandate = await startInProcess({ servers: [{ name: 'alpha', url: NEVER_REACHED }], identity: {} });
  });
  after(async () => {
    await mandate?.stop();
  });

  it('authorization server metadata: the issuer, S256 only, code only, the same at both well-known paths', async () => {
    const oauth = (await (await fetch(`${mandate.base}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    const openid = (await (await fetch(`${mandate.base}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    assert.deepEqual(oauth, openid);
    assert.equal(oauth.issuer, mandate.base);
    assert.deepEqual(oauth.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(oauth.response_types_supported, ['code']);
    assert.equal(oauth.authorization_response_iss_parameter_supported, true);
    assert.equal(oauth.registration_endpoint, `${mandate.base}/oauth/register`);
    assert.ok(!(oauth.token_endpoint_auth_methods_supported as string[]).includes('client_secret_jwt'), 'no HMAC client authentication');
  });

  it('protected resource metadata names the issuer and the server scope', async () => {
    const res = await fetch(`${mandate.base}/.well-known/oauth-protected-resource/mcp/alpha`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {
      resource: mandate.endpoint('alpha'),
      authorization_servers: [mandate.base],
      scopes_supported: ['mcp:alpha'],
      bearer_methods_supported: ['header'],
      resource_name: 'alpha',
    });
  });

  it('an unknown server, a path below a server, or another method: 404', async () => {
    for (const suffix of ['/mcp/nope', '/mcp/alpha/x', '/mcp/', '']) {
      assert.equal((await fetch(`${mandate.base}/.well-known/oauth-protected-resource${suffix}`)).status, 404, suffix);
    }
    assert.equal((await fetch(`${mandate.base}/.well-known/oauth-protected-resource/mcp/alpha`, { method: 'POST' })).status, 404);
  });

  it('the 401 of an MCP endpoint points at that metadata', async () => {
    const res = await fetch(mandate.endpoint('alpha'), { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' });
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), `Bearer resource_metadata="${mandate.base}/.well-known/oauth-protected-resource/mcp/alpha", scope="mcp:alpha"`);
  });
});
