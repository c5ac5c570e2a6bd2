/**
 * A request that names an MCP server (`resource`) but no scope gets that
 * server's scope, mcp:NAME (the documented default RFC 6749 §3.3 allows):
 * the consent page shows it, the code and the token carry it, and the token
 * is accepted at the server. Likewise for client credentials. The metadata's
 * scopes_supported lists every server's scope.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hashPassword } from '../../src/identity/users.ts';
import { pageAfter, CookieJar, authorizeUrl, get, jwtClaims, location, parseForm, pkcePair, postForm, register, REDIRECT_URI, token } from '../helpers/oauth.ts';
import { startInProcess, type InProcess } from './in-process.ts';

const PASSWORD = 'correct horse battery staple';

describe('no scope asked: the server scope by default', { timeout: 60_000 }, () => {
  let gw: InProcess;

  before(async () => {
    gw = await startInProcess((base) =>
      [
        `issuer: ${base}`,
        'servers:',
        '  - name: alpha',
        '    url: http://127.0.0.1:9/mcp',
        '  - name: beta',
        '    url: http://127.0.0.1:9/mcp',
        'identity:',
        '  registration:',
        '    mode: open',
        'log:',
        '  level: silent',
        '',
      ].join('\n'),
    );
    const now = Date.now();
    await gw.app.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
  });
  after(async () => {
    await gw?.stop();
  });

  const server = (name: string) => {
    const found = gw.app.config.servers.find((s) => s.name === name);
    assert.ok(found);
    return found;
  };

  it('the metadata lists each server scope besides its own', async () => {
    const metadata = (await (await fetch(`${gw.base}/.well-known/oauth-authorization-server`)).json()) as { scopes_supported: string[] };
    for (const scope of ['openid', 'offline_access', 'mcp:alpha', 'mcp:beta']) assert.ok(metadata.scopes_supported.includes(scope), `${scope} in ${metadata.scopes_supported.join(' ')}`);
  });

  it('authorization code without a scope: the consent page shows mcp:alpha, the token holds it and is accepted', async () => {
    const client = await register(gw.base, { client_name: 'no-scope', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
    assert.equal(client.status, 201, JSON.stringify(client.body));
    const clientId = String(client.body.client_id);
    const resource = `${gw.base}/mcp/alpha`;
    const { verifier, challenge } = pkcePair();
    const jar = new CookieJar();
    const start = authorizeUrl(gw.base, { client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URI, resource, code_challenge: challenge, code_challenge_method: 'S256', state: 's' });

    // authorize → the sign-in page → the consent page, each reached through redirects within the gateway
    const page = (first: Response, from: string) => pageAfter(gw.base, jar, first, from);
    const signIn = await page(await get(start, jar), start);
    const login = parseForm(signIn.html);
    const loginAction = new URL(login.action, signIn.url).href;
    const consentPage = await page(await postForm(loginAction, { ...login.hidden, username: 'alice', password: PASSWORD }, jar), loginAction);
    assert.match(consentPage.html, /<code class="muted">mcp:alpha<\/code>/, 'the consent page shows the default scope');
    const consent = parseForm(consentPage.html);
    assert.ok(consent.action.endsWith('/consent'), consent.action);
    const consentAction = new URL(consent.action, consentPage.url).href;
    let response = await postForm(consentAction, { ...consent.hidden, decision: 'allow' }, jar);
    let redirect = location(response, consentAction)!;
    while (redirect.startsWith(gw.base)) {
      response = await get(redirect, jar);
      redirect = location(response, redirect)!;
    }
    const back = new URL(redirect);
    assert.equal(back.searchParams.get('error'), null, `${back.searchParams.get('error')}: ${back.searchParams.get('error_description')}`);
    const code = back.searchParams.get('code');
    assert.ok(code);

    const granted = await token(gw.base, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: clientId, resource });
    assert.equal(granted.status, 200, JSON.stringify(granted.body));
    assert.equal(granted.body.scope, 'mcp:alpha');
    const accessToken = String(granted.body.access_token);
    assert.equal(jwtClaims(accessToken).scope, 'mcp:alpha');
    const principal = await gw.app.identity.verifier.verify(`Bearer ${accessToken}`, server('alpha'));
    assert.equal(principal.grants.all, true, 'the token allows everything on alpha');
    const consents = await gw.app.store.identity.listConsents({ user: 'alice', clientId });
    assert.deepEqual(consents.map((c) => [c.resource, c.scopes]), [[resource, ['mcp:alpha']]]);
  });

  it('client credentials without a scope: a token with mcp:beta', async () => {
    const client = await register(gw.base, { client_name: 'machine', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' });
    assert.equal(client.status, 201, JSON.stringify(client.body));
    const auth = { basic: { id: String(client.body.client_id), secret: String(client.body.client_secret) } };
    const issued = await token(gw.base, { grant_type: 'client_credentials', resource: `${gw.base}/mcp/beta` }, auth);
    assert.equal(issued.status, 200, JSON.stringify(issued.body));
    assert.equal(issued.body.scope, 'mcp:beta');
    const accessToken = String(issued.body.access_token);
    assert.equal(jwtClaims(accessToken).scope, 'mcp:beta');
    assert.equal((await gw.app.identity.verifier.verify(`Bearer ${accessToken}`, server('beta'))).grants.all, true);
    // A scope that is asked for is still what the token gets.
    const asked = await token(gw.base, { grant_type: 'client_credentials', resource: `${gw.base}/mcp/beta`, scope: 'mcp:beta:tool:echo' }, auth);
    assert.equal(asked.status, 200, JSON.stringify(asked.body));
    assert.equal(asked.body.scope, 'mcp:beta:tool:echo');
  });
});
