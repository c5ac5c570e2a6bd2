/**
 * `auth: { kind: oauth }`, end to end: each user connects their own account
 * at the upstream's authorization server, and the upstream sees that user's
 * token on that user's calls only.
 *
 * A second oidc-provider in this process is the upstream's authorization
 * server (its dev pages accept any login); a fake MCP upstream accepts only
 * access tokens that server issued (looked up in its own store) and notes
 * whose they are. Mandate runs in process. Debian's Chromium walks the link
 * of the URL elicitation: Mandate's sign-in, the connect page, the upstream's
 * login and consent, back to Mandate.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import Provider from 'oidc-provider';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { setSecret } from '../../src/credentials/vault.ts';
import { loadSecretKey } from '../../src/identity/secrets.ts';
import { hashPassword } from '../../src/identity/users.ts';
import { launchBrowser } from '../helpers/browser.ts';
import { startFakeUpstream, type FakeUpstream, type Received } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { userToken } from '../helpers/oauth.ts';

const PASSWORD = 'correct horse battery staple';
const CLIENT_ID = 'mandate-notes';
const CLIENT_SECRET = randomBytes(24).toString('base64url');
const STEP_MS = 15_000;

interface Elicitation {
  mode: string;
  elicitationId: string;
  url: string;
  message: string;
}

describe('per-user oauth connections', { timeout: 180_000 }, () => {
  let asServer: Server;
  let asIssuer = '';
  let as: Provider;
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  let browser: Browser;
  /** Every token the upstream's authorization server issued (opaque: the value is its id). */
  const issued: string[] = [];
  /** Who the upstream saw on each call it accepted, and the token it was. */
  const seen: { method: string; account: string; token: string }[] = [];
  const tokens: Record<string, string> = {};

  before(async () => {
    asServer = createServer();
    await new Promise<void>((resolve) => asServer.listen(0, '127.0.0.1', resolve));
    asIssuer = `http://127.0.0.1:${(asServer.address() as AddressInfo).port}`;
    upstream = await startFakeUpstream();
    gateway = await startInProcess({
      servers: [{ name: 'notes', url: upstream.url, auth: { kind: 'oauth', issuer: asIssuer, clientId: CLIENT_ID, clientSecret: 'notes-oauth', scopes: ['openid', 'notes'] } }],
      identity: { requireToken: true, registration: { mode: 'open' } },
    });
    as = new Provider(asIssuer, {
      clients: [
        {
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
          redirect_uris: [`${gateway.base}/connect/callback`],
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          token_endpoint_auth_method: 'client_secret_basic',
        },
      ],
      scopes: ['openid', 'notes'],
      findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      features: { devInteractions: { enabled: true }, revocation: { enabled: true } },
      issueRefreshToken: () => true,
      ttl: { AccessToken: 3600, RefreshToken: 86_400 },
    });
    as.on('access_token.saved', (token: { jti: string }) => issued.push(token.jti));
    as.on('refresh_token.saved', (token: { jti: string }) => issued.push(token.jti));
    const handle = as.callback();
    asServer.on('request', (req, res) => void handle(req, res));

    // The upstream takes only this authorization server's live access tokens.
    const guard = async (message: { method?: string }, request: Received) => {
      const token = String(request.headers.authorization ?? '').replace(/^Bearer /, '');
      const found = token === '' ? undefined : await as.AccessToken.find(token);
      if (!found || found.isExpired) return { status: 401, body: '' };
      seen.push({ method: message.method ?? '', account: found.accountId, token });
      return undefined;
    };
    for (const method of ['initialize', 'notifications/initialized', 'tools/list', 'tools/call']) upstream.on(method, guard);

    const now = Date.now();
    for (const name of ['alice', 'bob']) {
      await gateway.store.identity.createUser({ name, passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
      tokens[name] = await userToken(gateway.base, name, PASSWORD, 'notes');
    }
    await setSecret(gateway.store, loadSecretKey(gateway.dataDir), { name: 'notes-oauth', environment: '', tenant: '' }, CLIENT_SECRET, 'test', 0);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await gateway?.stop();
    await upstream?.close();
    asServer?.closeAllConnections();
    await new Promise<void>((resolve) => (asServer ? asServer.close(() => resolve()) : resolve()));
  });

  async function connectAs(user: string): Promise<Client> {
    const client = new Client({ name: `oauth-test-${user}`, version: '1.0.0' }, { capabilities: { elicitation: { url: {} } } });
    await client.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint('notes')), { requestInit: { headers: { authorization: `Bearer ${tokens[user]}` } } }));
    return client;
  }

  /** The URL elicitation a user without a connection gets (on the first request that reaches the upstream). */
  async function elicitation(user: string): Promise<{ error: McpError; elicitation: Elicitation }> {
    const error = await connectAs(user).then(
      async (client) => {
        await client.close();
        throw new Error(`${user} could connect: a connection was expected to be missing`);
      },
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof McpError, `a JSON-RPC error: ${String(error)}`);
    assert.equal(error.code, -32042, error.message);
    const data = error.data as { elicitations?: Elicitation[] };
    const first = data.elicitations?.[0];
    assert.ok(first, JSON.stringify(error.data));
    return { error, elicitation: first };
  }

  async function newContext(): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext();
    await context.route((url) => url.hostname !== '127.0.0.1', (route) => route.abort());
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    return { context, page };
  }

  /** Mandate's sign-in (when asked), the connect page, the upstream's login and consent, back to Mandate. */
  async function connectInBrowser(page: Page, link: string, user: string, upstreamLogin: string): Promise<void> {
    await page.goto(link);
    if (await page.getByRole('heading', { name: 'Sign in' }).isVisible()) {
      await page.locator('#username').fill(user);
      await page.locator('#password').fill(PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).click();
    }
    await page.getByRole('heading', { name: 'Connect your account' }).waitFor().catch(async (error: unknown) => {
      throw new Error(`${String(error)}\nat ${page.url()}: ${await page.locator('body').innerText()}`);
    });
    assert.equal(await page.locator('[data-user]').innerText(), user);
    assert.equal(await page.locator('[data-server]').innerText(), 'notes');
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.waitForURL((url) => url.origin === asIssuer);
    await page.locator('input[name="login"]').fill(upstreamLogin);
    await page.locator('input[name="password"]').fill('anything');
    const loginPage = page.url();
    await page.getByRole('button', { name: 'Sign-in' }).click();
    await page.waitForURL((url) => url.href !== loginPage);
    if (new URL(page.url()).origin === asIssuer) await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByRole('heading', { name: 'Connected' }).waitFor();
    assert.match(await page.locator('[data-connected]').innerText(), new RegExp(`notes.*${user}`));
  }

  async function echoAs(user: string, text: string): Promise<string> {
    const client = await connectAs(user);
    try {
      const result = await client.callTool({ name: 'echo', arguments: { text } });
      return (result.content as { text: string }[])[0]!.text;
    } finally {
      await client.close();
    }
  }

  const lastSeen = (account: string) => [...seen].reverse().find((s) => s.account === account);
  let aliceLink = '';
  let aliceContext: BrowserContext;
  let bobContext: BrowserContext;
  let bobPage: Page;

  it('a user without a connection gets a URL elicitation naming a Mandate link; nothing of theirs reaches the upstream', async () => {
    const before = upstream.requests.length;
    const { error, elicitation: first } = await elicitation('alice');
    assert.equal(first.mode, 'url');
    assert.ok(first.url.startsWith(`${gateway.base}/connect/`), first.url);
    assert.ok(error.message.includes(first.url), 'the message names the link, for clients that do not know URL elicitations');
    aliceLink = first.url;
    for (const request of upstream.requests.slice(before)) {
      assert.notEqual(request.headers.authorization, `Bearer ${tokens.alice}`, 'the client token never goes upstream');
    }
    const refused = (await gateway.audit({ types: ['session.opened'] })).filter((e) => e.actor === 'alice' && e.reason === 'connection_required');
    assert.equal(refused.length, 1, 'the refused initialize is on record');
    assert.equal((refused[0]!.data as { errorCode?: number }).errorCode, -32042);
  });

  it('alice connects in the browser, and her calls carry her own upstream token', async () => {
    const opened = await newContext();
    aliceContext = opened.context;
    await connectInBrowser(opened.page, aliceLink, 'alice', 'alice-at-notes');
    assert.equal(await echoAs('alice', 'one'), 'echo: one');
    const call = seen.filter((s) => s.method === 'tools/call');
    assert.equal(call[call.length - 1]?.account, 'alice-at-notes');
    const issuedEvents = (await gateway.audit({ types: ['credential.issued'] })).filter((e) => (e.data as { user?: string }).user === 'alice');
    assert.equal(issuedEvents.length, 1);
    const requests = (await gateway.audit({ types: ['mcp.request'] })).filter((e) => e.actor === 'alice' && (e.data as { credential?: string }).credential !== undefined);
    assert.match(String((requests[requests.length - 1]?.data as { credential?: string }).credential), /^oauth:notes\/alice:r1$/);
  });

  it('a link made for alice does not proceed for bob, signed in as bob', async () => {
    const opened = await newContext();
    bobContext = opened.context;
    bobPage = opened.page;
    await bobPage.goto(aliceLink);
    await bobPage.locator('#username').fill('bob');
    await bobPage.locator('#password').fill(PASSWORD);
    await bobPage.getByRole('button', { name: 'Sign in' }).click();
    await bobPage.getByRole('heading', { name: 'This link is for another account' }).waitFor();
    assert.equal(await bobPage.getByRole('button', { name: 'Connect' }).count(), 0);
    // Nor does a forged POST to it, with bob's session.
    const forged = await bobContext.request.post(aliceLink, { form: { csrf: 'x' }, headers: { origin: gateway.base }, maxRedirects: 0 });
    assert.equal(forged.status(), 403);
  });

  it('bob connects his own account; each user gets their own token', async () => {
    const { elicitation: bobs } = await elicitation('bob');
    await connectInBrowser(bobPage, bobs.url, 'bob', 'bob-at-notes');
    assert.equal(await echoAs('bob', 'two'), 'echo: two');
    assert.equal(lastSeen('bob-at-notes')?.method, 'tools/call');
    assert.equal(await echoAs('alice', 'three'), 'echo: three');
    const alice = lastSeen('alice-at-notes');
    const bob = lastSeen('bob-at-notes');
    assert.ok(alice && bob);
    assert.notEqual(alice.token, bob.token);
    assert.deepEqual(seen.slice(-3).map((s) => `${s.method} ${s.account}`), ['initialize alice-at-notes', 'notifications/initialized alice-at-notes', 'tools/call alice-at-notes'], 'alice\'s last session carried only her token');
  });

  it('an upstream that refuses the access token gets a refreshed one, once; the call succeeds', async () => {
    const old = lastSeen('alice-at-notes')!.token;
    await (await as.AccessToken.find(old))!.destroy();
    assert.equal(await echoAs('alice', 'four'), 'echo: four');
    const fresh = lastSeen('alice-at-notes')!.token;
    assert.notEqual(fresh, old);
    const refreshed = (await gateway.audit({ types: ['credential.refreshed'] })).filter((e) => (e.data as { user?: string }).user === 'alice');
    assert.equal(refreshed.length, 1);
    assert.equal((refreshed[0]!.data as { revision?: number }).revision, 2);
  });

  it('`mandate connections list` shows the connections, never a token', async () => {
    const listed = await gateway.cli(['connections', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const rows = JSON.parse(listed.stdout) as { user: string; server: string }[];
    assert.deepEqual(rows.map((r) => `${r.user}/${r.server}`), ['alice/notes', 'bob/notes']);
    for (const token of issued) assert.ok(!listed.stdout.includes(token), 'no token in the list');
  });

  it('revoking a connection stops it: the next call asks the user to connect again', async () => {
    const token = lastSeen('alice-at-notes')!.token;
    const revoked = await gateway.cli(['connections', 'revoke', 'alice', 'notes', '--config', gateway.configPath, '--json']);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal((JSON.parse(revoked.stdout) as { upstream?: string }).upstream, 'revoked');
    assert.equal(await as.AccessToken.find(token), undefined, 'revoked at the upstream too');
    const event = (await gateway.audit({ types: ['credential.revoked'] })).find((e) => (e.data as { user?: string }).user === 'alice');
    assert.equal((event?.data as { upstream?: string }).upstream, 'revoked');
    assert.notEqual(event?.actor, 'alice', 'the administrator revoked it');
    const again = await gateway.cli(['connections', 'revoke', 'alice', 'notes']);
    assert.notEqual(again.code, 0, 'nothing left to revoke');
    assert.match(again.stderr, /alice has no connection to "notes"/);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const outcome = await connectAs('alice').then(
        async (client) => {
          await client.close();
          return 'still connected';
        },
        (error: unknown) => (error instanceof McpError && error.code === -32042 ? 'asked again' : String(error)),
      );
      if (outcome === 'asked again') break;
      assert.ok(Date.now() < deadline, `alice's connection still in use 10 s after it was revoked: ${outcome}`);
      await delay(200);
    }
    assert.equal(await echoAs('bob', 'five'), 'echo: five', 'bob is not affected');
  });

  it('bob disconnects on his connections page: his tokens are revoked at the upstream too', async () => {
    const token = lastSeen('bob-at-notes')!.token;
    await bobPage.goto(`${gateway.base}/account/connections`);
    await bobPage.locator('[data-connection="notes"]').waitFor();
    await bobPage.locator('[data-connection="notes"]').getByRole('button', { name: 'Disconnect' }).click();
    await bobPage.locator('[data-empty]').waitFor();
    assert.equal(await as.AccessToken.find(token), undefined, 'the upstream no longer honours the token');
    await elicitation('bob');
    const revokedEvents = await gateway.audit({ types: ['credential.revoked'] });
    const bobs = revokedEvents.find((e) => (e.data as { user?: string }).user === 'bob');
    assert.equal((bobs?.data as { upstream?: string }).upstream, 'revoked');
    assert.equal(bobs?.actor, 'bob');
  });

  it('no token the upstream issued is anywhere in the audit log', async () => {
    const exported = await gateway.cli(['audit', 'export']);
    assert.equal(exported.code, 0, exported.stderr);
    assert.ok(issued.length >= 4, `tokens issued: ${issued.length}`);
    for (const token of [...issued, CLIENT_SECRET]) assert.ok(!exported.stdout.includes(token), 'a token or the client secret in the audit log');
    await aliceContext?.close();
    await bobContext?.close();
  });
});
