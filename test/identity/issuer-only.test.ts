/**
 * Every URL the gateway advertises comes from the configured issuer, whatever
 * the request says its host is: Host, X-Forwarded-Host/-Proto, or an
 * absolute-form request target naming another host. Checked at every path
 * the authorization server metadata is served from, the protected resource
 * metadata, a registration answer, the redirects to the sign-in page and back
 * to the authorization endpoint, and the 401 challenge; for an issuer at the
 * root and one with a path. The issuer is https://gw.example (a TLS proxy in
 * front, as in production), the test reaches the gateway on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hashPassword } from '../../src/identity/users.ts';
import { parseForm, pkcePair, REDIRECT_URI } from '../helpers/oauth.ts';
import { rawRequest, startInProcess, type InProcess, type RawAnswer } from './in-process.ts';

const ISSUER_ORIGIN = 'https://gw.example';
const PASSWORD = 'correct horse battery staple';
/** What an attacker puts in the request. */
const SPOOFED = { host: 'evil.example', 'x-forwarded-host': 'evil-forwarded.example', 'x-forwarded-proto': 'http', forwarded: 'host=evil-forwarded.example;proto=http' };

/** Every string in a JSON value that looks like a URL. */
function urlsIn(value: unknown): string[] {
  if (typeof value === 'string') return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? [value] : [];
  if (Array.isArray(value)) return value.flatMap(urlsIn);
  if (value && typeof value === 'object') return Object.values(value).flatMap(urlsIn);
  return [];
}

function assertIssuerOnly(answer: RawAnswer, issuer: string, what: string): void {
  assert.ok(!/evil/i.test(answer.body), `${what}: the body names the spoofed host: ${answer.body.slice(0, 300)}`);
  assert.ok(!/evil/i.test(JSON.stringify(answer.headers)), `${what}: a header names the spoofed host: ${JSON.stringify(answer.headers)}`);
  const urls = urlsIn(JSON.parse(answer.body));
  assert.ok(urls.length > 0, `${what}: no URL at all`);
  for (const url of urls) assert.ok(url === issuer || url.startsWith(`${issuer}/`), `${what}: ${url} is not under ${issuer}`);
}

/** A cookie jar for raw requests (names and values only). */
class Jar {
  private readonly cookies = new Map<string, string>();
  take(answer: RawAnswer): void {
    for (const line of answer.headers['set-cookie'] ?? []) {
      const [pair = ''] = line.split(';');
      const at = pair.indexOf('=');
      if (at > 0) this.cookies.set(pair.slice(0, at), pair.slice(at + 1));
    }
  }
  header(): Record<string, string> {
    return this.cookies.size ? { cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {};
  }
}

for (const issuerPath of ['', '/base']) {
  const issuer = `${ISSUER_ORIGIN}${issuerPath}`;

  describe(`URLs from the configured issuer only (${issuer})`, { timeout: 60_000 }, () => {
    let gw: InProcess;
    let clientId = '';

    before(async () => {
      gw = await startInProcess(() =>
        [`issuer: ${issuer}`, 'listen:', '  host: 127.0.0.1', 'servers:', '  - name: alpha', '    url: http://127.0.0.1:9/mcp', 'identity:', '  registration:', '    mode: open', 'log:', '  level: silent', ''].join('\n'),
      );
      const now = Date.now();
      await gw.app.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
    });
    after(async () => {
      await gw?.stop();
    });

    it('authorization server metadata, at every path it is served from', async () => {
      const paths = issuerPath
        ? [`/.well-known/oauth-authorization-server${issuerPath}`, `/.well-known/openid-configuration${issuerPath}`, `${issuerPath}/.well-known/openid-configuration`]
        : ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'];
      for (const path of paths) {
        const answer = await rawRequest(gw.base, path, { headers: SPOOFED });
        assert.equal(answer.status, 200, `${path}: ${answer.body}`);
        assertIssuerOnly(answer, issuer, path);
        const metadata = JSON.parse(answer.body) as Record<string, unknown>;
        assert.equal(metadata.issuer, issuer);
        assert.equal(metadata.token_endpoint, `${issuer}/oauth/token`);
        assert.equal(metadata.authorization_endpoint, `${issuer}/oauth/authorize`);
        assert.equal(metadata.registration_endpoint, `${issuer}/oauth/register`);
        assert.equal(metadata.jwks_uri, `${issuer}/oauth/jwks`);
        // An absolute-form target names a host too.
        const absolute = await rawRequest(gw.base, `http://evil.example${path}`, { headers: SPOOFED });
        assert.equal(absolute.status, 200, `absolute ${path}: ${absolute.body}`);
        assert.deepEqual(JSON.parse(absolute.body), metadata);
      }
    });

    it('protected resource metadata', async () => {
      const path = `/.well-known/oauth-protected-resource${issuerPath}/mcp/alpha`;
      const answer = await rawRequest(gw.base, path, { headers: SPOOFED });
      assert.equal(answer.status, 200, answer.body);
      assertIssuerOnly(answer, issuer, path);
      assert.deepEqual(JSON.parse(answer.body), {
        resource: `${issuer}/mcp/alpha`,
        authorization_servers: [issuer],
        scopes_supported: ['mcp:alpha'],
        bearer_methods_supported: ['header'],
        resource_name: 'alpha',
      });
    });

    it('the 401 challenge of an MCP endpoint', async () => {
      const answer = await rawRequest(gw.base, `${issuerPath}/mcp/alpha`, {
        method: 'POST',
        headers: { ...SPOOFED, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
      });
      assert.equal(answer.status, 401);
      assert.equal(answer.headers['www-authenticate'], `Bearer resource_metadata="${ISSUER_ORIGIN}/.well-known/oauth-protected-resource${issuerPath}/mcp/alpha", scope="mcp:alpha"`);
    });

    it('a registration answer, then the redirects to the sign-in page and back to the authorization endpoint', async () => {
      const registered = await rawRequest(gw.base, `${issuerPath}/oauth/register`, {
        method: 'POST',
        headers: { ...SPOOFED, 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: 'spoofed', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] }),
      });
      assert.equal(registered.status, 201, registered.body);
      assert.ok(!/evil/i.test(registered.body + JSON.stringify(registered.headers)), registered.body);
      clientId = String((JSON.parse(registered.body) as { client_id: string }).client_id);

      const jar = new Jar();
      const { challenge } = pkcePair();
      const query = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'mcp:alpha', resource: `${issuer}/mcp/alpha`, code_challenge: challenge, code_challenge_method: 'S256', state: 's' });
      const authorized = await rawRequest(gw.base, `${issuerPath}/oauth/authorize?${query}`, { headers: SPOOFED });
      jar.take(authorized);
      assert.equal(authorized.status, 303, authorized.body);
      const toLogin = authorized.headers.location ?? '';
      assert.match(toLogin, new RegExp(`^${issuer.replace(/[.]/g, '\\.')}/interaction/[A-Za-z0-9_-]+$`), 'the sign-in page, on the issuer');

      const loginPath = new URL(toLogin).pathname;
      const page = await rawRequest(gw.base, loginPath, { headers: { ...SPOOFED, ...jar.header() } });
      assert.equal(page.status, 200, page.body.slice(0, 300));
      assert.ok(!/evil/i.test(page.body), 'the sign-in page names the spoofed host');
      const form = parseForm(page.body);
      const loggedIn = await rawRequest(gw.base, new URL(form.action, toLogin).pathname, {
        method: 'POST',
        headers: { ...SPOOFED, ...jar.header(), origin: ISSUER_ORIGIN, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ ...form.hidden, username: 'alice', password: PASSWORD }).toString(),
      });
      assert.equal(loggedIn.status, 303, loggedIn.body.slice(0, 300));
      assert.match(loggedIn.headers.location ?? '', new RegExp(`^${issuer.replace(/[.]/g, '\\.')}/oauth/authorize/[A-Za-z0-9_-]+$`), 'back to the authorization endpoint, on the issuer');
    });
  });
}
