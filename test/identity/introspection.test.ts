/**
 * Introspection (RFC 7662) of JWT access tokens, for resource servers:
 * confidential machine clients. Active only while valid and not revoked;
 * anyone else learns nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { register, revoke, token, type ClientAuth } from '../helpers/oauth.ts';

/** The MCP server's address: these cases never reach it. */
const NEVER_REACHED = 'http://127.0.0.1:9/mcp';

const introspect = (base: string, value: string, auth: ClientAuth) => token(base, { token: value }, auth, '/oauth/introspect');

describe('introspection of JWT access tokens', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let resourceServer: ClientAuth;
  let agent: ClientAuth;
  let interactive: ClientAuth;

  async function machine(name: string): Promise<ClientAuth> {
    const answer = await register(mandate.base, { client_name: name, grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return { basic: { id: String(answer.body.client_id), secret: String(answer.body.client_secret) } };
  }

  async function accessToken(): Promise<string> {
    const issued = await token(mandate.base, { grant_type: 'client_credentials', resource: mandate.endpoint('alpha'), scope: 'mcp:alpha' }, agent);
    assert.equal(issued.status, 200, JSON.stringify(issued.body));
    return String(issued.body.access_token);
  }

  before(async () => {
    mandate = await startInProcess({ servers: [{ name: 'alpha', url: NEVER_REACHED }], identity: { registration: { mode: 'open' } } });
    resourceServer = await machine('resource server');
    agent = await machine('agent');
    const web = await register(mandate.base, { client_name: 'web', redirect_uris: ['http://127.0.0.1:7/cb'], token_endpoint_auth_method: 'client_secret_basic' });
    interactive = { basic: { id: String(web.body.client_id), secret: String(web.body.client_secret) } };
  });
  after(async () => {
    await mandate?.stop();
  });

  it('a resource server sees an active token with its audience, scope and client', async () => {
    const value = await accessToken();
    const answer = await introspect(mandate.base, value, resourceServer);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.active, true);
    assert.equal(answer.body.aud, mandate.endpoint('alpha'));
    assert.equal(answer.body.scope, 'mcp:alpha');
    assert.equal(answer.body.client_id, (agent as { basic: { id: string } }).basic.id);
    assert.equal(answer.response.headers.get('cache-control'), 'no-store');
  });

  it('a revoked token is inactive at once', async () => {
    const value = await accessToken();
    assert.equal((await revoke(mandate.base, { token: value }, agent)).status, 200);
    assert.deepEqual((await introspect(mandate.base, value, resourceServer)).body, { active: false });
  });

  it('a client that is not a resource server (interactive) learns nothing', async () => {
    const value = await accessToken();
    assert.deepEqual((await introspect(mandate.base, value, interactive)).body, { active: false });
  });

  it('garbage and forged tokens are inactive; a wrong secret is refused', async () => {
    assert.deepEqual((await introspect(mandate.base, 'not-a-token', resourceServer)).body, { active: false });
    const value = await accessToken();
    const [header, payload] = value.split('.');
    const forged = `${header}.${payload}.${Buffer.from('x'.repeat(64)).toString('base64url')}`;
    assert.deepEqual((await introspect(mandate.base, forged, resourceServer)).body, { active: false });
    const wrong = { basic: { id: (resourceServer as { basic: { id: string } }).basic.id, secret: 'wrong' } };
    const refused = await introspect(mandate.base, value, wrong);
    assert.equal(refused.status, 401);
    assert.equal(refused.body.error, 'invalid_client');
  });
});
