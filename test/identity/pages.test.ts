import { ServerRegistry } from '../../src/gateway/registry.ts';
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { consentCovers, requestedResources, scopesForResource } from '../../src/identity/consent.ts';
import { LoginThrottle, PageError, checkCsrfToken, csrfToken, fromOwnPage, planConsent, readForm } from '../../src/identity/interactions.ts';
import { describeScope, escapeHtml, formActionSource, pageHeaders, renderConsent, renderErrorPage, renderLogin, STYLE_SOURCE, type ClientView } from '../../src/identity/pages.ts';
import type { Config } from '../../src/config/load.ts';

const HOSTILE = `<script>alert("x")</script>'"&`;
const hostileClient: ClientView = { id: `mc_${HOSTILE}`, name: HOSTILE, verifiedHost: null };

/** Text of every inline <style> element and the CSP hash it must match. */
function styleHashes(html: string): string[] {
  return [...html.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => `'sha256-${createHash('sha256').update(m[1]!).digest('base64')}'`);
}

function assertNoMarkupFrom(html: string): void {
  assert.ok(!html.includes('<script'), 'no script element');
  assert.ok(!html.includes(`"x")`), 'no raw quote from the hostile value');
  assert.ok(!/\son\w+=/i.test(html), 'no event handler attribute');
}

describe('pages', () => {
  it('escapes every HTML-significant character', () => {
    assert.equal(escapeHtml(`<a href="x" title='y'>&\``), '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&#96;');
  });

  it('the error page shows error and error_description, escaped, and nothing else', () => {
    const html = renderErrorPage({ error: HOSTILE, error_description: `desc ${HOSTILE}`, state: 'SECRET-STATE', iss: 'https://issuer' });
    assertNoMarkupFrom(html);
    assert.ok(html.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'));
    assert.ok(!html.includes('SECRET-STATE'));
    assert.ok(!html.includes('https://issuer'));
    assert.ok(html.includes("form-action 'none'"), 'carries its own meta CSP');
    assert.deepEqual(styleHashes(html), [STYLE_SOURCE]);
  });

  it('the error page copes with missing fields', () => {
    const html = renderErrorPage({});
    assert.ok(html.includes('server_error'));
  });

  it('the login page has username, password, Sign in, and escapes the client and prefilled name', () => {
    const html = renderLogin({ action: '/interaction/abc/login', csrf: 'tok"en', abortAction: '/interaction/abc/abort', abortCsrf: 'abort-token', client: hostileClient, username: HOSTILE, message: HOSTILE });
    assertNoMarkupFrom(html);
    assert.match(html, /<input type="text" id="username" name="username"/);
    assert.match(html, /<input type="password" id="password" name="password"/);
    assert.match(html, /<button type="submit" class="primary-button">Sign in<\/button>/);
    assert.match(html, /<form method="post" action="\/interaction\/abc\/login">/);
    assert.ok(html.includes('value="tok&quot;en"'));
    assert.ok(html.includes('value="abort-token"'));
    assert.deepEqual(styleHashes(html), [STYLE_SOURCE]);
  });

  it('the consent page names client, redirect URI, server and each scope in plain words, escaped', () => {
    const html = renderConsent({
      action: '/interaction/abc/consent',
      csrf: 'csrf',
      user: 'alice',
      client: hostileClient,
      redirectUri: `https://app.example/cb?x=${HOSTILE}`,
      servers: [{ name: 'files', resource: 'https://gw.example/mcp/files', scopes: ['mcp:files', `mcp:files:tool:${HOSTILE}`] }],
      oidcScopes: ['openid'],
    });
    assertNoMarkupFrom(html);
    assert.ok(html.includes('use every tool, resource and prompt of files'));
    assert.ok(html.includes('call the tool &lt;script&gt;'));
    assert.ok(html.includes('https://gw.example/mcp/files'));
    assert.ok(html.includes('https://app.example/cb?x=&lt;script&gt;'));
    assert.ok(html.includes('Signed in as <b>alice</b>'));
    assert.match(html, /<button type="submit" name="decision" value="allow"[^>]*>Allow<\/button>/);
    assert.match(html, /<button type="submit" name="decision" value="deny">Deny<\/button>/);
  });

  it('a metadata-document client is headed by its verified host, its self-chosen name second', () => {
    const html = renderConsent({
      action: '/a',
      csrf: 'c',
      user: 'bob',
      client: { id: 'https://app.example.com/client.json', name: 'Totally Official', verifiedHost: 'app.example.com' },
      redirectUri: 'https://app.example.com/cb',
      servers: [{ name: 'files', resource: 'https://gw/mcp/files', scopes: ['mcp:files'] }],
      oidcScopes: [],
      warning: 'Answers go to evil.example, not to app.example.com.',
    });
    assert.match(html, /<p class="primary" data-client>app\.example\.com<\/p>/);
    assert.ok(html.indexOf('app.example.com</p>') < html.indexOf('Totally Official'));
    assert.ok(html.includes('Answers go to evil.example'));
  });

  it('describes scopes', () => {
    assert.equal(describeScope('mcp:files'), 'use every tool, resource and prompt of files');
    assert.equal(describeScope('mcp:files:tool:read_file'), 'call the tool read_file on files');
    assert.equal(describeScope('mcp:files:tool:a:b'), 'call the tool a:b on files');
  });

  it('security headers: CSP with frame-ancestors none, no framing, no caching, no referrer, nosniff', () => {
    const headers = pageHeaders(['https://app.example.com:8443/cb?x=1', 'http://127.0.0.1:5555/callback', 'com.example.app:/oauth', 'javascript:alert(1)']);
    const csp = headers['Content-Security-Policy']!;
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /base-uri 'none'/);
    assert.ok(csp.includes(`style-src ${STYLE_SOURCE}`));
    assert.ok(csp.includes("form-action 'self' https://app.example.com:8443 http://127.0.0.1:5555 com.example.app:;"));
    assert.ok(!csp.includes('javascript'));
    assert.equal(headers['X-Frame-Options'], 'DENY');
    assert.equal(headers['Cache-Control'], 'no-store');
    assert.equal(headers['Referrer-Policy'], 'same-origin', 'nothing leaves for another origin; no-referrer would make browsers send Origin: null');
    assert.equal(headers['X-Content-Type-Options'], 'nosniff');
    assert.match(pageHeaders(null)['Content-Security-Policy']!, /form-action 'none'/);
  });

  it('a redirect URI cannot inject CSP directives', () => {
    assert.equal(formActionSource('https://a;script-src/cb'), null);
    assert.equal(formActionSource('not a url'), null);
    assert.equal(formActionSource('data:text/html,x'), null);
    assert.equal(formActionSource('https://[::1]:8080/cb'), 'https://[::1]:8080');
    const csp = pageHeaders(['https://a;script-src/cb'])['Content-Security-Policy']!;
    assert.ok(!csp.includes('script-src'));
  });
});

describe('CSRF tokens', () => {
  const key = 'k'.repeat(43);
  it('accepts the token for the same interaction and purpose', () => {
    assert.ok(checkCsrfToken(key, 'uid1', 'login', csrfToken(key, 'uid1', 'login')));
  });
  it('refuses another uid, another purpose, another key, or no token', () => {
    const token = csrfToken(key, 'uid1', 'login');
    assert.ok(!checkCsrfToken(key, 'uid2', 'login', token));
    assert.ok(!checkCsrfToken(key, 'uid1', 'consent', token));
    assert.ok(!checkCsrfToken('other', 'uid1', 'login', token));
    assert.ok(!checkCsrfToken(key, 'uid1', 'login', undefined));
    assert.ok(!checkCsrfToken(key, 'uid1', 'login', ''));
    assert.ok(!checkCsrfToken(key, 'uid1', 'login', token.slice(0, -1)));
  });
});

describe('form origin', () => {
  const issuer = 'https://gw.example/base';
  it('accepts the issuer origin, or no Origin at all', () => {
    assert.ok(fromOwnPage({ origin: 'https://gw.example', 'sec-fetch-site': 'same-origin' }, issuer));
    assert.ok(fromOwnPage({}, issuer));
  });
  it('refuses another origin or site', () => {
    assert.ok(!fromOwnPage({ origin: 'https://evil.example' }, issuer));
    assert.ok(!fromOwnPage({ origin: 'https://gw.example:8443' }, issuer));
    assert.ok(!fromOwnPage({ 'sec-fetch-site': 'cross-site' }, issuer));
    assert.ok(!fromOwnPage({ 'sec-fetch-site': 'same-site', origin: 'https://sub.gw.example' }, issuer));
  });
  it('accepts Origin: null only when the browser says same-origin', () => {
    assert.ok(fromOwnPage({ origin: 'null', 'sec-fetch-site': 'same-origin' }, issuer));
    assert.ok(!fromOwnPage({ origin: 'null' }, issuer));
    assert.ok(!fromOwnPage({ origin: 'null', 'sec-fetch-site': 'cross-site' }, issuer));
  });
});

describe('login throttle', () => {
  it('allows five failures per name, then refuses until the window passes', () => {
    let now = 1_000_000;
    const throttle = new LoginThrottle({ now: () => now });
    for (let i = 0; i < 5; i++) assert.ok(throttle.begin('alice', `10.0.0.${i}`), `attempt ${i + 1}`);
    assert.equal(throttle.begin('alice', '10.0.0.99'), null);
    assert.ok(throttle.begin('bob', '10.0.0.99'), 'another name from a fresh address');
    assert.ok(throttle.retryAfter('alice', '10.0.0.98') > 0);
    now += 15 * 60_000;
    assert.ok(throttle.begin('alice', '10.0.0.99'), 'window passed');
  });

  it('allows five failures per address, whatever the names', () => {
    const throttle = new LoginThrottle({ now: () => 5 });
    for (let i = 0; i < 5; i++) assert.ok(throttle.begin(`user${i}`, '192.0.2.1'));
    assert.equal(throttle.begin('someone', '192.0.2.1'), null);
    assert.equal(throttle.begin(null, '192.0.2.1'), null, 'an invalid name is throttled by address');
    assert.ok(throttle.begin('someone', '192.0.2.2'));
  });

  it('counts an attempt from its start, so parallel guesses cannot exceed the limit', () => {
    const throttle = new LoginThrottle({ now: () => 5 });
    const tickets = Array.from({ length: 10 }, () => throttle.begin('alice', '192.0.2.1'));
    assert.equal(tickets.filter(Boolean).length, 5);
  });

  it('a success clears the name and does not count against the address', () => {
    const throttle = new LoginThrottle({ now: () => 5 });
    for (let i = 0; i < 4; i++) throttle.begin('alice', '192.0.2.1');
    throttle.begin('alice', '192.0.2.1')!.succeeded();
    assert.ok(throttle.begin('alice', '192.0.2.1'), 'fifth address slot free again');
    assert.equal(throttle.begin('alice', '192.0.2.1'), null);
  });

  it('keeps bounded memory', () => {
    const throttle = new LoginThrottle({ now: () => 5, maxKeys: 100 });
    for (let i = 0; i < 1000; i++) throttle.begin(`u${i}`, `a${i}`);
    const internals = throttle as unknown as { names: Map<string, unknown>; addresses: Map<string, unknown> };
    assert.ok(internals.names.size <= 100 && internals.addresses.size <= 100);
  });
});

describe('consent coverage', () => {
  it('covers when every requested scope was consented', () => {
    assert.ok(consentCovers({ scopes: ['mcp:files', 'openid'] }, ['mcp:files']));
    assert.ok(consentCovers({ scopes: ['mcp:files', 'openid'] }, ['mcp:files', 'openid']));
    assert.ok(consentCovers({ scopes: ['mcp:files:tool:a', 'mcp:files:tool:b'] }, ['mcp:files:tool:b']));
  });
  it('a server-wide consent covers its tools', () => {
    assert.ok(consentCovers({ scopes: ['mcp:files'] }, ['mcp:files:tool:read']));
    assert.ok(!consentCovers({ scopes: ['mcp:other'] }, ['mcp:files:tool:read']));
  });
  it('does not cover a wider request, nothing requested, or no consent', () => {
    assert.ok(!consentCovers({ scopes: ['mcp:files:tool:a'] }, ['mcp:files']));
    assert.ok(!consentCovers({ scopes: ['mcp:files'] }, ['mcp:files', 'openid']));
    assert.ok(!consentCovers({ scopes: ['mcp:files'] }, []));
    assert.ok(!consentCovers(null, ['mcp:files']));
  });
  it('helpers', () => {
    assert.deepEqual(requestedResources('https://r'), ['https://r']);
    assert.deepEqual(requestedResources(['https://a', 5, 'https://b']), ['https://a', 'https://b']);
    assert.deepEqual(requestedResources(undefined), []);
    assert.deepEqual(scopesForResource(new Set(['openid', 'mcp:a', 'mcp:b']), new Set(['mcp:a', 'mcp:a:tool:x'])), ['mcp:a']);
  });
});

describe('consent plan', () => {
  const config = {
    issuer: 'https://gw.example',
    servers: [
      { name: 'files', endpoint: 'https://gw.example/mcp/files' },
      { name: 'db', endpoint: 'https://gw.example/mcp/db' },
    ],
  } as unknown as Config;
  const interaction = (params: Record<string, unknown>, details: Record<string, unknown> = {}) => ({
    params: { client_id: 'mc_1', redirect_uri: 'https://app/cb', ...params },
    prompt: { name: 'consent', reasons: [], details },
    session: { accountId: 'alice', uid: 'u', cookie: 'c' },
  });

  it('lists the requested scopes of the requested server, and requested OIDC scopes', () => {
    const plan = planConsent(new ServerRegistry(config.servers), interaction({ resource: 'https://gw.example/mcp/files', scope: 'openid mcp:files:tool:read mcp:db mcp:files:tool:bad!name' }));
    assert.equal(plan.accountId, 'alice');
    assert.deepEqual(plan.servers.map((s) => [s.server.name, s.resource, s.scopes]), [['files', 'https://gw.example/mcp/files', ['mcp:files:tool:read']]]);
    assert.deepEqual(plan.oidcScopes, ['openid']);
  });

  it('includes what oidc-provider reports missing', () => {
    const plan = planConsent(new ServerRegistry(config.servers), interaction({ resource: 'https://gw.example/mcp/files', scope: 'mcp:files' }, { missingResourceScopes: { 'https://gw.example/mcp/files': ['mcp:files'] }, missingOIDCScope: ['openid'] }));
    assert.deepEqual(plan.servers[0]!.scopes, ['mcp:files']);
    assert.deepEqual(plan.oidcScopes, ['openid']);
  });

  it('refuses a resource that is not a configured server, and a consent without a signed-in user', () => {
    assert.throws(() => planConsent(new ServerRegistry(config.servers), interaction({ resource: 'https://evil/mcp/x', scope: 'mcp:x' })), PageError);
    assert.throws(() => planConsent(new ServerRegistry(config.servers), { ...interaction({ resource: 'https://gw.example/mcp/files' }), session: undefined }), PageError);
  });
});

function formRequest(body: string | Buffer, headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' }): IncomingMessage {
  const stream = Readable.from([Buffer.from(body)]) as unknown as IncomingMessage;
  (stream as { headers: Record<string, string> }).headers = headers;
  return stream;
}

describe('form bodies', () => {
  it('parses a urlencoded form', async () => {
    const form = await readForm(formRequest('username=alice&password=p%26ss%3D1&csrf=t'));
    assert.equal(form.get('password'), 'p&ss=1');
  });
  it('accepts a charset parameter', async () => {
    const form = await readForm(formRequest('a=1', { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' }));
    assert.equal(form.get('a'), '1');
  });
  it('refuses duplicated fields', async () => {
    await assert.rejects(readForm(formRequest('decision=deny&decision=allow')), (error: PageError) => error.status === 400);
  });
  it('refuses more than 8 KiB, declared or not', async () => {
    await assert.rejects(readForm(formRequest('a='.padEnd(8193, 'x'))), (error: PageError) => error.status === 413);
    await assert.rejects(readForm(formRequest('a=1', { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '9000' })), (error: PageError) => error.status === 413);
  });
  it('refuses another content type', async () => {
    await assert.rejects(readForm(formRequest('{}', { 'content-type': 'application/json' })), (error: PageError) => error.status === 415);
  });
});
