/**
 * Sign-in through an upstream OpenID Connect provider, end to end: a second
 * oidc-provider in this process is the upstream IdP (its dev login page
 * accepts any login), a real `mandate up` is configured with
 * `identity.login: { local: false, oidc }`, and Debian's Chromium walks
 * authorize → Mandate's login page → "Sign in with …" → the IdP → back to
 * Mandate's consent page → Allow → the client's redirect URI. The code is
 * exchanged for an access token for the user the IdP named; the user was
 * provisioned with the IdP's groups; the audit log says how they signed in.
 *
 * Refusals: a tampered state, a user name claim that is not a valid name, a
 * disabled user, and the password form being off.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import Provider from 'oidc-provider';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { IncomingMessage } from 'node:http';
import type { UpstreamOidcConfig } from '../../src/config/identity-schema.ts';
import { renderLogin } from '../../src/identity/pages.ts';
import { UpstreamError, clearFlowCookie, flowCookie, identityFromClaims, readFlow, upstreamRedirectUri, type StartFlow } from '../../src/identity/upstream-login.ts';
import { launchBrowser, startCallbackServer, type CallbackServer } from '../helpers/browser.ts';
import { EVERYTHING, NODE, startMandate, stopBounded, type Mandate } from '../helpers/process.ts';
import { addUser } from '../helpers/oauth.ts';

const TEST_TIMEOUT_MS = 120_000;
const STEP_TIMEOUT_MS = 15_000;
const SERVERS = [{ name: 'everything', command: NODE, args: [EVERYTHING, 'stdio'] }];
const DISPLAY_NAME = 'Test IdP';
/** The IdP login that yields a preferred_username Mandate must refuse. */
const BAD_CLAIM_LOGIN = 'bad-claim';
/** The IdP login that yields the name of a local password user. */
const LOCAL_NAME_LOGIN = 'claims-carol';

interface AuditEvent {
  seq: number;
  type: string;
  actor?: string | null;
  outcome: string;
  reason?: string | null;
  data?: Record<string, unknown>;
}

describe('sign-in through an upstream OpenID provider', { timeout: 4 * TEST_TIMEOUT_MS }, () => {
  let idpServer: Server;
  let idpIssuer = '';
  let idp: Provider;
  let mandate: Mandate;
  let callback: CallbackServer;
  let browser: Browser;
  let clientId = '';
  /** Authorization codes the IdP sent to Mandate's callback (must never show up in logs or events). */
  const upstreamCodes: string[] = [];
  /** When set, the IdP's redirects to Mandate's callback carry another state (as a swapped or forged answer would). */
  const tamper = { state: false };
  /** The groups the IdP reports for bob (a test changes them between sign-ins). */
  const idpGroups: { value: string[] } = { value: ['eng', 'not a group!'] };

  before(async () => {
    // The IdP's port first: Mandate's config names it, and the IdP's client names Mandate's callback.
    idpServer = createServer();
    await new Promise<void>((resolve) => idpServer.listen(0, '127.0.0.1', resolve));
    idpIssuer = `http://127.0.0.1:${(idpServer.address() as AddressInfo).port}`;
    callback = await startCallbackServer('/cb');
    mandate = await startMandate({
      servers: SERVERS,
      identity: { registration: { mode: 'open' }, login: { local: false, oidc: { issuer: idpIssuer, clientId: 'mandate', displayName: DISPLAY_NAME } } },
    });

    idp = new Provider(idpIssuer, {
      clients: [
        {
          client_id: 'mandate',
          redirect_uris: [`${mandate.base}/interaction/callback/upstream`],
          token_endpoint_auth_method: 'none',
          grant_types: ['authorization_code'],
          response_types: ['code'],
        },
      ],
      claims: { openid: ['sub'], profile: ['preferred_username', 'groups'], email: ['email'] },
      findAccount: (_ctx, sub) => ({
        accountId: sub,
        claims: () => ({ sub, preferred_username: sub === BAD_CLAIM_LOGIN ? 'Not A Name!' : sub === LOCAL_NAME_LOGIN ? 'carol' : 'bob', groups: idpGroups.value, email: 'bob@example.com' }),
      }),
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      features: { devInteractions: { enabled: true } },
    });
    const handle = idp.callback();
    const mandateCallback = `${mandate.base}/interaction/callback/upstream`;
    idpServer.on('request', (req, res) => {
      if (tamper.state) {
        const setHeader = res.setHeader.bind(res);
        res.setHeader = ((name: string, value: number | string | readonly string[]) => {
          if (name.toLowerCase() === 'location' && typeof value === 'string' && value.startsWith(mandateCallback)) {
            const url = new URL(value);
            url.searchParams.set('state', randomBytes(32).toString('base64url'));
            return setHeader(name, url.href);
          }
          return setHeader(name, value);
        }) as typeof res.setHeader;
      }
      void handle(req, res);
    });

    const registered = await fetch(`${mandate.base}/oauth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Upstream test client', redirect_uris: [callback.url], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], response_types: ['code'] }),
    });
    const body = (await registered.json()) as { client_id?: string };
    assert.equal(registered.status, 201, JSON.stringify(body));
    clientId = body.client_id!;
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    if (mandate) await stopBounded(mandate);
    await callback?.close();
    idpServer?.closeAllConnections();
    await new Promise<void>((resolve) => (idpServer ? idpServer.close(() => resolve()) : resolve()));
  });

  async function newPage(): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext();
    // Nothing leaves the machine (the IdP's dev pages import a web font).
    await context.route((url) => url.hostname !== '127.0.0.1', (route) => route.abort());
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on('request', (request) => {
      const url = new URL(request.url());
      if (url.href.startsWith(`${mandate.base}/interaction/callback/upstream`)) {
        const code = url.searchParams.get('code');
        if (code) upstreamCodes.push(code);
      }
    });
    return { context, page };
  }

  function authorize(): { url: string; verifier: string; state: string } {
    const verifier = randomBytes(32).toString('base64url');
    const state = randomBytes(16).toString('base64url');
    const params = new URLSearchParams({
      client_id: clientId,
      response_type: 'code',
      redirect_uri: callback.url,
      scope: 'mcp:everything',
      resource: mandate.endpoint('everything'),
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      state,
    });
    return { url: `${mandate.base}/oauth/authorize?${params}`, verifier, state };
  }

  /** From Mandate's login page through the IdP's dev login (and its consent, if shown). */
  async function signInUpstream(page: Page, login: string): Promise<void> {
    await page.getByRole('button', { name: `Sign in with ${DISPLAY_NAME}` }).click();
    await page.waitForURL((url) => url.origin === idpIssuer);
    const loginPage = page.url();
    await page.locator('input[name="login"]').fill(login);
    await page.locator('input[name="password"]').fill('anything');
    await page.getByRole('button', { name: 'Sign-in' }).click();
    // Next: the IdP's consent page (another interaction) or straight back to Mandate.
    await page.waitForURL((url) => url.href !== loginPage);
    if (new URL(page.url()).origin === idpIssuer) {
      await page.getByRole('button', { name: 'Continue' }).click();
    }
    await page.waitForURL((url) => url.origin === mandate.base);
  }

  async function cliJson<T>(args: string[]): Promise<T> {
    const result = await mandate.cli([...args, '--json']);
    assert.equal(result.code, 0, `mandate ${args.join(' ')}: ${result.stderr}`);
    return JSON.parse(result.stdout) as T;
  }

  const auditList = (): Promise<AuditEvent[]> => cliJson<AuditEvent[]>(['audit', 'list', '--limit', '10000']);

  test('authorize → IdP → consent → code → token for the upstream user, provisioned with its groups', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { context, page } = await newPage();
    try {
      const request = authorize();
      await page.goto(request.url);
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
      assert.equal(await page.locator('#password').count(), 0, 'no password form when identity.login.local is false');
      assert.equal(await page.locator('#username').count(), 0);

      // A password POST is refused outright.
      const uid = /\/interaction\/([^/?]+)/.exec(page.url())![1]!;
      const refused = await context.request.post(`${mandate.base}/interaction/${uid}/login`, { form: { csrf: 'x', username: 'bob', password: 'whatever password' }, headers: { origin: mandate.base }, maxRedirects: 0 });
      assert.equal(refused.status(), 403);

      await signInUpstream(page, 'bob-at-idp');
      await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
      assert.match(await page.locator('main').innerText(), /Signed in as bob/);
      const hit = callback.next();
      await page.getByRole('button', { name: 'Allow' }).click();
      const answer = await hit;
      assert.equal(answer.error, null);
      assert.equal(answer.state, request.state);
      assert.ok(answer.code, 'the client gets a code');

      const token = await fetch(`${mandate.base}/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code: answer.code, redirect_uri: callback.url, code_verifier: request.verifier, client_id: clientId, resource: mandate.endpoint('everything') }),
      });
      const tokens = (await token.json()) as { access_token?: string };
      assert.equal(token.status, 200, JSON.stringify(tokens));
      const claims = decodeJwt(tokens.access_token!);
      assert.equal(claims.sub, 'bob');
      assert.equal(claims.aud, mandate.endpoint('everything'));
    } finally {
      await context.close();
    }

    const users = await cliJson<Array<{ name: string; groups: string[]; hasPassword: boolean; disabled: boolean }>>(['users', 'list']);
    const bob = users.find((user) => user.name === 'bob');
    assert.ok(bob, `bob was provisioned: ${JSON.stringify(users)}`);
    assert.deepEqual(bob.groups, ['eng'], 'groups from the IdP, invalid names dropped');
    assert.equal(bob.hasPassword, false);

    const events = await auditList();
    const succeeded = events.find((event) => event.type === 'login.succeeded' && event.actor === 'bob');
    assert.ok(succeeded, 'login.succeeded for bob');
    assert.equal(succeeded.data?.via, 'oidc');
    assert.equal(succeeded.data?.upstream, idpIssuer);
    assert.equal(succeeded.data?.client_id, clientId);
    assert.deepEqual(succeeded.data?.groups, ['eng']);
    assert.ok(events.some((event) => event.type === 'user.added' && event.actor === 'bob' && event.data?.via === 'oidc'));
    assert.ok(events.some((event) => event.type === 'consent.granted' && event.actor === 'bob' && event.outcome === 'success'));

    // No upstream code or token in the audit log or in Mandate's output.
    const evidence = JSON.stringify(events) + mandate.output();
    assert.ok(upstreamCodes.length > 0);
    for (const code of upstreamCodes) assert.ok(!evidence.includes(code), 'the upstream code is not recorded');
    assert.doesNotMatch(evidence, /eyJ[A-Za-z0-9_-]{20,}\./, 'no JWT is recorded');
    const verify = await mandate.cli(['audit', 'verify']);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  });

  test('groups follow the provider: a later sign-in with other groups updates them (user.groups_changed)', { timeout: TEST_TIMEOUT_MS }, async () => {
    idpGroups.value = ['ops', 'eng'];
    const { context, page } = await newPage();
    try {
      const request = authorize();
      const hit = callback.next();
      await page.goto(request.url);
      // As signInUpstream, but the journey ends at the client, not on a Mandate page: consent is remembered.
      await page.getByRole('button', { name: `Sign in with ${DISPLAY_NAME}` }).click();
      await page.waitForURL((url) => url.origin === idpIssuer);
      const loginPage = page.url();
      await page.locator('input[name="login"]').fill('bob-at-idp');
      await page.locator('input[name="password"]').fill('anything');
      await page.getByRole('button', { name: 'Sign-in' }).click();
      await page.waitForURL((url) => url.href !== loginPage);
      if (new URL(page.url()).origin === idpIssuer && (await page.getByRole('button', { name: 'Continue' }).count()) > 0) {
        await page.getByRole('button', { name: 'Continue' }).click();
      }
      const answer = await hit;
      assert.ok(answer.code, 'the client gets a code');
    } finally {
      await context.close();
      idpGroups.value = ['eng', 'not a group!'];
    }
    const users = await cliJson<Array<{ name: string; groups: string[] }>>(['users', 'list']);
    assert.deepEqual(users.find((user) => user.name === 'bob')?.groups, ['ops', 'eng']);
    const changed = (await auditList()).filter((event) => event.type === 'user.groups_changed' && event.actor === 'bob');
    assert.equal(changed.length, 1);
    assert.deepEqual(changed[0]!.data?.before, ['eng']);
    assert.deepEqual(changed[0]!.data?.after, ['ops', 'eng']);
  });

  test('a tampered state is refused: login.failed, no code', { timeout: TEST_TIMEOUT_MS }, async () => {
    const hitsBefore = callback.hits.length;
    const { context, page } = await newPage();
    tamper.state = true;
    try {
      await page.goto(authorize().url);
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
      await signInUpstream(page, 'bob-at-idp');
      const text = await page.locator('main').innerText();
      assert.match(text, /does not belong to this sign-in/);
      assert.ok(!page.url().startsWith(callback.url));
    } finally {
      tamper.state = false;
      await context.close();
    }
    assert.equal(callback.hits.length, hitsBefore, 'the client got nothing');
    const failed = (await auditList()).filter((event) => event.type === 'login.failed' && event.reason === 'bad_state');
    assert.equal(failed.length, 1);
    assert.equal(failed[0]!.data?.via, 'oidc');
    assert.equal(failed[0]!.data?.client_id, clientId);
  });

  test('a user name claim that is not a valid name is refused', { timeout: TEST_TIMEOUT_MS }, async () => {
    const hitsBefore = callback.hits.length;
    const { context, page } = await newPage();
    try {
      await page.goto(authorize().url);
      await signInUpstream(page, BAD_CLAIM_LOGIN);
      assert.match(await page.locator('main').innerText(), /did not give a usable user name/);
    } finally {
      await context.close();
    }
    assert.equal(callback.hits.length, hitsBefore);
    const events = await auditList();
    assert.ok(events.some((event) => event.type === 'login.failed' && event.reason === 'bad_username_claim' && event.data?.claim === 'preferred_username'));
    const users = await cliJson<Array<{ name: string }>>(['users', 'list']);
    assert.deepEqual(users.map((user) => user.name), ['bob'], 'nobody else was provisioned');
  });

  test('a name the provider hands out does not take over a local password account', { timeout: TEST_TIMEOUT_MS }, async () => {
    const added = await addUser('carol', 'a long local passphrase', ['--data', mandate.dataDir]);
    assert.equal(added.code, 0, added.stderr);
    const hitsBefore = callback.hits.length;
    const { context, page } = await newPage();
    try {
      await page.goto(authorize().url);
      await signInUpstream(page, LOCAL_NAME_LOGIN);
      assert.match(await page.locator('main').innerText(), /belongs to a local account/);
    } finally {
      await context.close();
    }
    assert.equal(callback.hits.length, hitsBefore, 'the client got nothing');
    assert.ok((await auditList()).some((event) => event.type === 'login.failed' && event.reason === 'local_account' && event.actor === 'carol'));
  });

  test('a disabled user is refused after the upstream sign-in', { timeout: TEST_TIMEOUT_MS }, async () => {
    const disabled = await mandate.cli(['users', 'disable', 'bob']);
    assert.equal(disabled.code, 0, disabled.stderr);
    const hitsBefore = callback.hits.length;
    const { context, page } = await newPage();
    try {
      await page.goto(authorize().url);
      await signInUpstream(page, 'bob-at-idp');
      assert.match(await page.locator('main').innerText(), /this account is disabled/);
    } finally {
      await context.close();
    }
    assert.equal(callback.hits.length, hitsBefore);
    assert.ok((await auditList()).some((event) => event.type === 'login.failed' && event.reason === 'disabled' && event.actor === 'bob' && event.data?.via === 'oidc'));
  });
});

describe('upstream sign-in pieces', () => {
  const oidc: UpstreamOidcConfig = { issuer: 'https://idp.example', clientId: 'mandate', clientSecretEnv: 'MANDATE_OIDC_CLIENT_SECRET', scopes: ['openid'], usernameClaim: 'preferred_username', groupsClaim: 'groups', displayName: 'Example <SSO>' };

  test('claims: the name lowercased, groups from an array or one string, invalid ones dropped', () => {
    assert.deepEqual(identityFromClaims(oidc, { preferred_username: ' Bob@Example.com ', groups: ['eng', 'ops', 'eng', 'no spaces allowed', 7] }), { name: 'bob@example.com', groups: ['eng', 'ops'] });
    assert.deepEqual(identityFromClaims(oidc, { preferred_username: 'carol', groups: 'eng' }), { name: 'carol', groups: ['eng'] });
    assert.deepEqual(identityFromClaims(oidc, { preferred_username: 'dave' }), { name: 'dave', groups: [] });
    for (const bad of [{}, { preferred_username: 42 }, { preferred_username: ['bob'] }, { preferred_username: '-bob' }, { preferred_username: 'a b' }, { preferred_username: 'x'.repeat(65) }]) {
      assert.throws(() => identityFromClaims(oidc, bad), (error: unknown) => error instanceof UpstreamError && error.reason === 'bad_username_claim', JSON.stringify(bad));
    }
  });

  test('the flow cookie opens only with the right key, phase, time and one copy', () => {
    const issuer = 'http://127.0.0.1:1';
    const flow: StartFlow = { p: 'start', uid: 'uid1', clientId: 'c', state: 's', nonce: 'n', verifier: 'v', exp: Date.now() + 60_000 };
    const setCookie = flowCookie('key-a', issuer, flow);
    assert.match(setCookie, /^mandate-upstream=[^;]+; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/);
    const value = setCookie.split(';')[0]!.slice('mandate-upstream='.length);
    const req = (cookie: string) => ({ headers: { cookie } }) as unknown as IncomingMessage;
    assert.deepEqual(readFlow(req(`other=1; mandate-upstream=${value}`), 'key-a', issuer, 'start'), flow);
    assert.equal(readFlow(req(`mandate-upstream=${value}`), 'key-b', issuer, 'start'), null, 'another key');
    assert.equal(readFlow(req(`mandate-upstream=${value}`), 'key-a', issuer, 'return'), null, 'another phase');
    assert.equal(readFlow(req(`mandate-upstream=${value}`), 'key-a', issuer, 'start', flow.exp), null, 'expired');
    assert.equal(readFlow(req(`mandate-upstream=${value}; mandate-upstream=${value}`), 'key-a', issuer, 'start'), null, 'two copies');
    const flipped = value.slice(0, -2) + (value.at(-2) === 'A' ? 'B' : 'A') + value.at(-1);
    assert.equal(readFlow(req(`mandate-upstream=${flipped}`), 'key-a', issuer, 'start'), null, 'tampered');
    assert.match(flowCookie('k', 'https://mandate.example', flow), /^__Host-mandate-upstream=.*; Secure$/);
    assert.match(clearFlowCookie('https://mandate.example'), /^__Host-mandate-upstream=; Path=\/; Max-Age=0;/);
    assert.equal(upstreamRedirectUri('https://mandate.example/auth/'), 'https://mandate.example/auth/interaction/callback/upstream');
  });

  test('the login page: the upstream button, with or without the password form', () => {
    const view = { action: '/interaction/u/login', csrf: 'c1', abortAction: '/interaction/u/abort', abortCsrf: 'c2', client: { id: 'mc_1', name: null, verifiedHost: null } };
    const upstream = { action: '/interaction/u/upstream', csrf: 'c3', displayName: oidc.displayName };
    const only = renderLogin({ ...view, password: false, upstream });
    assert.ok(only.includes('Sign in with Example &lt;SSO&gt;'));
    assert.ok(only.includes('action="/interaction/u/upstream"') && only.includes('value="c3"'));
    assert.ok(!only.includes('name="password"') && !only.includes('action="/interaction/u/login"'));
    const both = renderLogin({ ...view, upstream });
    assert.ok(both.includes('name="password"') && both.includes('action="/interaction/u/upstream"'));
    const local = renderLogin(view);
    assert.ok(local.includes('name="password"') && !local.includes('/upstream'));
  });
});
