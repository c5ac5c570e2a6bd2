/**
 * The sign-in and consent pages against a real oidc-provider (createProvider)
 * on a SQLite store, driven with fetch and a small cookie jar: authorize →
 * login → consent → code → token, remembered consent, refusals (CSRF, Origin,
 * expired interaction, throttle, failing audit), and the audit trail.
 */
import { ServerRegistry } from '../../src/gateway/registry.ts';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import type Provider from 'oidc-provider';
import { AuditLog } from '../../src/audit/log.ts';
import type { IdentityEvent } from '../../src/audit/events.ts';
import { loadConfig, type Config } from '../../src/config/load.ts';
import { handleInteraction, LoginThrottle, type InteractionDeps } from '../../src/identity/interactions.ts';
import { loadKeys } from '../../src/identity/keys.ts';
import { createProvider } from '../../src/identity/provider.ts';
import { INTERACTION_PREFIX } from '../../src/identity/routes.ts';
import { hashPassword } from '../../src/identity/users.ts';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/types.ts';
import { tempDir } from '../helpers/process.ts';

const PASSWORD = 'correct horse battery staple';
const CLIENT_ID = 'mc_interactive';
const REDIRECT = 'http://127.0.0.1:9/callback';
const HOSTILE_NAME = '<script>alert(1)</script>';

const dir = tempDir('mandate-interactions-');
let server: Server;
let store: Store;
let config: Config;
let provider: Provider;
let deps: InteractionDeps;
let base = '';
const failAudit = { on: false };

/** oidc-provider's private configuration: read to call the loadExistingGrant that provider.ts installs. */
type Internals = (provider: Provider) => { configuration: Record<string, unknown> & { loadExistingGrant: (ctx: unknown) => Promise<unknown> } };
const WEAK_CACHE: string = 'oidc-provider/lib/helpers/weak_cache.js';
let instance: Internals;

before(async () => {
  instance = ((await import(WEAK_CACHE)) as { default: Internals }).default;
  server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  base = `http://127.0.0.1:${port}`;
  const file = path.join(dir, 'mandate.yaml');
  writeFileSync(file, `issuer: ${base}\nservers:\n  - name: files\n    url: http://127.0.0.1:1/mcp\n  - name: db\n    url: http://127.0.0.1:1/mcp\n`);
  config = loadConfig({ config: file, data: dir }, {});
  store = await openStore({ dataDir: dir });
  await store.migrate();
  const secret = randomBytes(32);
  const keys = await loadKeys(store, secret, { rotateAfterMs: 86_400_000, retainMs: 86_400_000 });
  provider = createProvider({
    config,
    servers: new ServerRegistry(config.servers),
    store,
    secret,
    keys,
    hooks: { metadataClientSeen: async () => true, isRevoked: () => false, grantRevoked: async () => {} },
  });

  const now = Date.now();
  await store.identity.createClient({
    id: CLIENT_ID,
    status: 'active',
    class: 'interactive',
    source: 'admin',
    owner: null,
    metadata: { client_name: HOSTILE_NAME, redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] },
    secretHash: null,
    registeredFrom: null,
    createdAt: now,
    updatedAt: now,
    lastUsedAt: null,
    decidedBy: null,
  });
  const hash = await hashPassword(PASSWORD);
  for (const name of ['alice', 'bob', 'carol']) await store.identity.createUser({ name, passwordHash: hash, groups: [], disabled: false, createdAt: now, updatedAt: now });

  const realAudit = new AuditLog(store);
  const audit = {
    record: (event: IdentityEvent) => (failAudit.on ? Promise.reject(new Error('audit down')) : realAudit.record(event)),
  } as unknown as AuditLog;
  deps = { provider, store, audit, config, servers: new ServerRegistry(config.servers), csrfKey: randomBytes(32).toString('base64url'), throttle: new LoginThrottle() };
  const callback = provider.callback();
  server.on('request', (req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith(INTERACTION_PREFIX)) void handleInteraction(deps, req, res, url.slice(INTERACTION_PREFIX.length));
    else void callback(req, res);
  });
});

after(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => server?.close(() => resolve()));
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A browser: cookies by name, requests without following redirects. */
class Browser {
  readonly jar = new Map<string, string>();
  async request(url: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.jar.size > 0) headers.set('cookie', [...this.jar].map(([k, v]) => `${k}=${v}`).join('; '));
    const response = await fetch(new URL(url, base), { ...init, headers, redirect: 'manual' });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq);
      const value = pair!.slice(eq + 1);
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(cookie)) this.jar.delete(name);
      else this.jar.set(name, value);
    }
    return response;
  }
  /** Follows same-origin redirects; returns the first page or the redirect to another origin. */
  async follow(url: string, init: RequestInit = {}): Promise<Response> {
    let response = await this.request(url, init);
    while (response.status >= 300 && response.status < 400) {
      const location = new URL(response.headers.get('location')!, base);
      if (location.origin !== base) return response;
      response = await this.request(location.href);
    }
    return response;
  }
  post(url: string, fields: Record<string, string>, headers: Record<string, string> = { origin: base }): Promise<Response> {
    return this.follow(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(fields).toString() });
  }
}

function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

function authorizeUrl(scope: string, resource: string, challenge: string, extra: Record<string, string> = {}): string {
  const params = new URLSearchParams({ client_id: CLIENT_ID, response_type: 'code', redirect_uri: REDIRECT, scope, resource, code_challenge: challenge, code_challenge_method: 'S256', state: 'st4te', ...extra });
  return `/oauth/authorize?${params}`;
}

const resource = (name: string) => `${base}/mcp/${name}`;
const csrfOf = (html: string, action: string): string => {
  const form = new RegExp(`action="[^"]*/${action}"[^>]*>[^]*?name="csrf" value="([^"]+)"`).exec(html);
  assert.ok(form, `a ${action} form`);
  return form[1]!;
};
const actionOf = (html: string, action: string): string => new RegExp(`action="([^"]*/${action})"`).exec(html)![1]!;

async function startLogin(browser: Browser, scope = 'mcp:files', server = 'files') {
  const { verifier, challenge } = pkce();
  const page = await browser.follow(authorizeUrl(scope, resource(server), challenge));
  assert.equal(page.status, 200);
  return { page, html: await page.text(), verifier };
}

async function signIn(browser: Browser, html: string, user: string, password = PASSWORD): Promise<Response> {
  return browser.post(actionOf(html, 'login'), { csrf: csrfOf(html, 'login'), username: user, password });
}

async function events(type: string): Promise<Array<Record<string, unknown>>> {
  const records = await store.audit.list({ types: [type] });
  return records.map((record) => JSON.parse(record.body) as Record<string, unknown>);
}

async function exchange(code: string, verifier: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier, client_id: CLIENT_ID, resource: resource('files') }),
  });
  const body = (await response.json()) as Record<string, unknown>;
  assert.equal(response.status, 200, JSON.stringify(body));
  return body;
}

describe('interactions', () => {
  // Every request here comes from 127.0.0.1: one address, five failures per window.
  beforeEach(() => {
    deps.throttle = new LoginThrottle();
  });

  it('login page: form, headers, escaped client name', async () => {
    const browser = new Browser();
    const { page, html } = await startLogin(browser);
    assert.match(page.headers.get('content-security-policy')!, /frame-ancestors 'none'/);
    assert.match(page.headers.get('content-security-policy')!, /form-action 'self' http:\/\/127\.0\.0\.1:9;/);
    assert.equal(page.headers.get('x-frame-options'), 'DENY');
    assert.equal(page.headers.get('cache-control'), 'no-store');
    assert.match(html, /name="username"/);
    assert.match(html, /name="password"/);
    assert.match(html, />Sign in</);
    assert.ok(!html.includes('<script>'));
    assert.ok(html.includes('&lt;script&gt;alert(1)&lt;/script&gt;'));
  });

  it('sign in, consent, code, token; then consent is remembered', async () => {
    const browser = new Browser();
    const { html, verifier } = await startLogin(browser, 'mcp:files mcp:files:tool:read');

    const wrong = await signIn(browser, html, 'alice', 'not the password at all');
    assert.equal(wrong.status, 200);
    const wrongHtml = await wrong.text();
    assert.match(wrongHtml, /Wrong user name or password/);

    const consent = await signIn(browser, wrongHtml, 'alice');
    assert.equal(consent.status, 200);
    const consentHtml = await consent.text();
    assert.match(consentHtml, /Allow access\?/);
    assert.ok(consentHtml.includes('use every tool, resource and prompt of files'));
    assert.ok(consentHtml.includes('call the tool read on files'));
    assert.ok(consentHtml.includes(resource('files')));
    assert.ok(consentHtml.includes(REDIRECT));
    assert.ok(consentHtml.includes('&lt;script&gt;'));
    assert.match(consent.headers.get('content-security-policy')!, /form-action 'self' http:\/\/127\.0\.0\.1:9;/);

    const done = await browser.post(actionOf(consentHtml, 'consent'), { csrf: csrfOf(consentHtml, 'consent'), decision: 'allow' });
    assert.equal(done.status, 303);
    const callback = new URL(done.headers.get('location')!);
    assert.equal(`${callback.origin}${callback.pathname}`, REDIRECT);
    assert.equal(callback.searchParams.get('state'), 'st4te');
    const code = callback.searchParams.get('code');
    assert.ok(code, `a code in ${callback}`);

    const tokens = await exchange(code, verifier);
    assert.equal(tokens.scope, 'mcp:files mcp:files:tool:read');
    const payload = JSON.parse(Buffer.from(String(tokens.access_token).split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    assert.equal(payload.aud, resource('files'));
    assert.equal(payload.sub, 'alice');

    const stored = await store.identity.getConsent('alice', CLIENT_ID, resource('files'));
    assert.deepEqual(stored?.scopes.sort(), ['mcp:files', 'mcp:files:tool:read']);

    const failed = await events('login.failed');
    assert.ok(failed.some((e) => e.actor === 'alice' && e.reason === 'wrong_password'));
    assert.ok(!JSON.stringify(failed).includes('not the password'));
    const succeeded = await events('login.succeeded');
    assert.ok(succeeded.some((e) => e.actor === 'alice' && (e.data as Record<string, unknown>).client_id === CLIENT_ID));
    const granted = (await events('consent.granted')).filter((e) => e.actor === 'alice');
    assert.equal(granted.length, 1);
    assert.equal(granted[0]!.server, 'files');
    assert.equal(granted[0]!.outcome, 'success');
    assert.deepEqual((granted[0]!.data as Record<string, unknown>).redirect_uri, REDIRECT);

    // Same client, same or narrower scopes: no page at all.
    const again = pkce();
    const quiet = await browser.follow(authorizeUrl('mcp:files:tool:read', resource('files'), again.challenge));
    assert.equal(quiet.status, 303, 'straight back to the client');
    const quietCode = new URL(quiet.headers.get('location')!).searchParams.get('code');
    assert.ok(quietCode);
    const narrow = await exchange(quietCode, again.verifier);
    assert.equal(narrow.scope, 'mcp:files:tool:read');

    // Another server: consent page again.
    const other = pkce();
    const wider = await browser.follow(authorizeUrl('mcp:db', resource('db'), other.challenge));
    assert.equal(wider.status, 200);
    const widerHtml = await wider.text();
    assert.ok(widerHtml.includes('use every tool, resource and prompt of db'));

    // Deny: the client gets access_denied; recorded as denied.
    const denied = await browser.post(actionOf(widerHtml, 'consent'), { csrf: csrfOf(widerHtml, 'consent'), decision: 'deny' });
    assert.equal(denied.status, 303);
    const deniedUrl = new URL(denied.headers.get('location')!);
    assert.equal(deniedUrl.searchParams.get('error'), 'access_denied');
    assert.ok((await events('consent.granted')).some((e) => e.actor === 'alice' && e.server === 'db' && e.outcome === 'denied'));
    assert.equal(await store.identity.getConsent('alice', CLIENT_ID, resource('db')), null);
  });

  it('a disabled user does not reuse a remembered consent', async () => {
    const browser = new Browser();
    const { html } = await startLogin(browser);
    const consent = await signIn(browser, html, 'carol');
    const consentHtml = await consent.text();
    const done = await browser.post(actionOf(consentHtml, 'consent'), { csrf: csrfOf(consentHtml, 'consent'), decision: 'allow' });
    assert.equal(done.status, 303);
    const { configuration } = instance(provider);
    await store.identity.setUserDisabled('carol', true, Date.now());
    const ctx = {
      oidc: {
        session: { accountId: 'carol' },
        client: { clientId: CLIENT_ID },
        params: { resource: resource('files'), scope: 'mcp:files' },
        resourceServers: { [resource('files')]: { scopes: new Set(['mcp:files']) } },
        requestParamScopes: new Set(['mcp:files']),
        requestParamOIDCScopes: new Set(),
        provider,
      },
    };
    assert.equal(await configuration.loadExistingGrant(ctx), undefined);
    await store.identity.setUserDisabled('carol', false, Date.now());
    const grant = (await configuration.loadExistingGrant(ctx)) as { accountId: string; resources: Record<string, string> } | undefined;
    assert.equal(grant?.accountId, 'carol');
    assert.deepEqual(grant?.resources, { [resource('files')]: 'mcp:files' });
    // Another client is new to carol.
    assert.equal(await configuration.loadExistingGrant({ oidc: { ...ctx.oidc, client: { clientId: 'mc_other' } } }), undefined);
  });

  it('refuses a bad CSRF token, another Origin, a duplicated field, and GET on a form', async () => {
    const browser = new Browser();
    const { html } = await startLogin(browser);
    const action = actionOf(html, 'login');
    const badToken = await browser.post(action, { csrf: 'x'.repeat(43), username: 'alice', password: PASSWORD });
    assert.equal(badToken.status, 403);
    assert.match(badToken.headers.get('content-security-policy')!, /frame-ancestors 'none'/);
    const wrongPurpose = await browser.post(action, { csrf: csrfOf(html, 'abort'), username: 'alice', password: PASSWORD });
    assert.equal(wrongPurpose.status, 403);
    const crossOrigin = await browser.post(action, { csrf: csrfOf(html, 'login'), username: 'alice', password: PASSWORD }, { origin: 'https://evil.example' });
    assert.equal(crossOrigin.status, 403);
    const duplicated = await browser.request(action, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: base }, body: `csrf=${csrfOf(html, 'login')}&username=alice&username=bob&password=x` });
    assert.equal(duplicated.status, 400);
    const get = await browser.request(action);
    assert.equal(get.status, 405);
  });

  it('an unknown or expired interaction is a 400 page without a stack trace', async () => {
    const browser = new Browser();
    const missing = await browser.request('/interaction/doesnotexist12345');
    assert.equal(missing.status, 400);
    const text = await missing.text();
    assert.match(text, /expired/);
    assert.ok(!/at .*\.(js|ts):\d+/.test(text));
    // Cookie for one interaction, URL naming another.
    const { html } = await startLogin(browser);
    const uid = /\/interaction\/([^/"]+)\/login/.exec(html)![1]!;
    // Another uid: its last character changed (to one it is not, or the test would name the same one now and then).
    const mismatch = await browser.request(`/interaction/${uid.slice(0, -1)}${uid.endsWith('X') ? 'Y' : 'X'}`);
    assert.equal(mismatch.status, 400);
    const notFound = await browser.request('/interaction/a/b/c');
    assert.equal(notFound.status, 404);
  });

  it('cancel: the client gets access_denied', async () => {
    const browser = new Browser();
    const { html } = await startLogin(browser);
    const cancelled = await browser.post(actionOf(html, 'abort'), { csrf: csrfOf(html, 'abort') });
    assert.equal(cancelled.status, 303);
    assert.equal(new URL(cancelled.headers.get('location')!).searchParams.get('error'), 'access_denied');
  });

  it('throttles after five failures for a name, without checking the password', async () => {
    const browser = new Browser();
    let { html } = await startLogin(browser);
    for (let i = 0; i < 5; i++) {
      const response = await signIn(browser, html, 'bob', `wrong password ${i}`);
      assert.equal(response.status, 200);
      html = await response.text();
    }
    const refused = await signIn(browser, html, 'bob');
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers.get('retry-after')) > 0);
    assert.match(await refused.text(), /Too many failed attempts/);
    assert.ok((await events('login.failed')).some((e) => e.actor === 'bob' && e.reason === 'throttled'));
  });

  it('unknown users fail like wrong passwords; an invalid name is not an actor', async () => {
    const browser = new Browser();
    const { html } = await startLogin(browser);
    const unknown = await signIn(browser, html, 'nobody-here');
    assert.equal(unknown.status, 200);
    assert.match(await unknown.text(), /Wrong user name or password/);
    const invalid = await signIn(browser, html, '<b>bad name</b>');
    const invalidHtml = await invalid.text();
    assert.ok(!invalidHtml.includes('<b>bad'));
    const failed = await events('login.failed');
    assert.ok(failed.some((e) => e.actor === 'nobody-here' && e.reason === 'unknown_user'));
    assert.ok(failed.some((e) => e.actor === null && e.reason === 'invalid_name'));
  });

  it('fails closed: no audit record, no login and no consent', async () => {
    const browser = new Browser();
    const { html } = await startLogin(browser);
    failAudit.on = true;
    try {
      const refused = await signIn(browser, html, 'alice');
      assert.equal(refused.status, 503);
    } finally {
      failAudit.on = false;
    }
    const consent = await signIn(browser, html, 'bob');
    assert.equal(consent.status, 200);
    const consentHtml = await consent.text();
    assert.match(consentHtml, /Allow access\?/);
    failAudit.on = true;
    try {
      const refused = await browser.post(actionOf(consentHtml, 'consent'), { csrf: csrfOf(consentHtml, 'consent'), decision: 'allow' });
      assert.equal(refused.status, 503);
    } finally {
      failAudit.on = false;
    }
    assert.equal(await store.identity.getConsent('bob', CLIENT_ID, resource('files')), null);
    // The interaction is still pending: allowing now works.
    const done = await browser.post(actionOf(consentHtml, 'consent'), { csrf: csrfOf(consentHtml, 'consent'), decision: 'allow' });
    assert.equal(done.status, 303);
    assert.ok(new URL(done.headers.get('location')!).searchParams.get('code'));
  });
});
