/**
 * Proof of the authorization server, end to end: the official v1 SDK client
 * (StreamableHTTPClientTransport with an OAuthClientProvider) against a real
 * `mandate up`, with a real headless Chromium on the sign-in and consent
 * pages and a loopback redirect URI.
 *
 *  - Dynamic registration in approval mode: 401 → discovery → registration
 *    (pending) → the authorization endpoint refuses the pending client → an
 *    admin approves it → sign in → consent → code (with `iss`, RFC 9207) →
 *    token → tools. Consent is remembered afterwards. The access token is an
 *    RFC 9068 JWT for exactly one server; the refresh token rotates, and
 *    reusing a rotated one revokes the grant.
 *  - A Client ID Metadata Document client: its https client_id is served from
 *    a local https server with a self-signed certificate.
 *
 * Each flow ends with the audit trail it must have left, and a chain that verifies.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { auth, UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import type { OAuthDiscoveryState } from '@modelcontextprotocol/sdk/client/auth.js';
import { launchBrowser, startCallbackServer, type CallbackHit, type CallbackServer } from '../helpers/browser.ts';
import { EVERYTHING, MANDATE, NODE, ROOT, rpcHeaders, startMandate, stopBounded, tempDir, type Mandate } from '../helpers/process.ts';
import { initializeMessage } from '../gateway/raw.ts';

const TEST_TIMEOUT_MS = 120_000;
const STEP_TIMEOUT_MS = 15_000;
const USER = 'alice';
const PASSWORD = 'correct horse battery staple';
const SERVERS = [{ name: 'everything', command: NODE, args: [EVERYTHING, 'stdio'] }];

// ---------------------------------------------------------------------------
// The client side

/**
 * An OAuthClientProvider that keeps everything in memory and hands the
 * authorization URL to the browser (`open`). What the SDK saves is kept
 * exactly as given (it stamps client information and tokens with the issuer).
 */
class MemoryOAuthProvider implements OAuthClientProvider {
  readonly redirectUrl: string;
  readonly clientMetadata: OAuthClientMetadata;
  readonly clientMetadataUrl: string | undefined;
  /** Every authorization URL the SDK sent the user to, oldest first. */
  readonly authorizationUrls: URL[] = [];
  /** Every token response the SDK saved, oldest first. */
  readonly savedTokens: OAuthTokens[] = [];
  /** The state of the latest authorization request. */
  lastState: string | undefined;
  open: (url: URL) => Promise<void>;
  private info: OAuthClientInformationMixed | undefined;
  private current: OAuthTokens | undefined;
  private verifier: string | undefined;
  private discovery: OAuthDiscoveryState | undefined;

  constructor(options: { redirectUrl: string; clientName: string; clientMetadataUrl?: string; open: (url: URL) => Promise<void> }) {
    this.redirectUrl = options.redirectUrl;
    this.clientMetadataUrl = options.clientMetadataUrl;
    this.open = options.open;
    this.clientMetadata = {
      client_name: options.clientName,
      redirect_uris: [options.redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  state(): string {
    this.lastState = randomBytes(16).toString('base64url');
    return this.lastState;
  }
  clientInformation(): OAuthClientInformationMixed | undefined {
    return this.info;
  }
  saveClientInformation(info: OAuthClientInformationMixed): void {
    this.info = info;
  }
  tokens(): OAuthTokens | undefined {
    return this.current;
  }
  saveTokens(tokens: OAuthTokens): void {
    this.current = tokens;
    this.savedTokens.push(tokens);
  }
  /** Forgets the tokens (as a client that lost them would), keeping its registration. */
  clearTokens(): void {
    this.current = undefined;
  }
  async redirectToAuthorization(url: URL): Promise<void> {
    this.authorizationUrls.push(url);
    await this.open(url);
  }
  saveCodeVerifier(verifier: string): void {
    this.verifier = verifier;
  }
  codeVerifier(): string {
    if (!this.verifier) throw new Error('no code verifier saved');
    return this.verifier;
  }
  saveDiscoveryState(state: OAuthDiscoveryState): void {
    this.discovery = state;
  }
  discoveryState(): OAuthDiscoveryState | undefined {
    return this.discovery;
  }
  invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery'): void {
    if (scope === 'all' || scope === 'client') this.info = undefined;
    if (scope === 'all' || scope === 'tokens') this.current = undefined;
    if (scope === 'all' || scope === 'verifier') this.verifier = undefined;
    if (scope === 'all' || scope === 'discovery') this.discovery = undefined;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function textOf(result: unknown): string {
  const content = (result as { content?: { type: string; text?: string }[] }).content ?? [];
  return content.map((part) => part.text ?? '').join('\n');
}

/** Connects a fresh SDK client with the provider's tokens, lists tools and calls echo; closes it again. */
async function listAndEcho(endpoint: string, provider: MemoryOAuthProvider, message: string): Promise<{ tools: string[]; echo: string }> {
  const transport = new StreamableHTTPClientTransport(new URL(endpoint), { authProvider: provider });
  const client = new Client({ name: 'mandate-oauth-e2e', version: '1.0.0' });
  await withTimeout(client.connect(transport), STEP_TIMEOUT_MS, 'connect with a token');
  try {
    const tools = await client.listTools(undefined, { timeout: STEP_TIMEOUT_MS });
    const echo = await client.callTool({ name: 'echo', arguments: { message } }, undefined, { timeout: STEP_TIMEOUT_MS });
    return { tools: tools.tools.map((tool) => tool.name), echo: textOf(echo) };
  } finally {
    await withTimeout(transport.terminateSession(), 10_000, 'terminate session').catch(() => undefined);
    await withTimeout(client.close(), 10_000, 'close client');
  }
}

/** The first contact: the SDK gets 401, discovers, registers (or uses its metadata URL) and sends the user to authorize. */
async function connectExpectingAuthorization(endpoint: string, provider: MemoryOAuthProvider): Promise<void> {
  const transport = new StreamableHTTPClientTransport(new URL(endpoint), { authProvider: provider });
  const client = new Client({ name: 'mandate-oauth-e2e', version: '1.0.0' });
  await assert.rejects(withTimeout(client.connect(transport), STEP_TIMEOUT_MS, 'first connect'), (error: unknown) => {
    assert.ok(error instanceof UnauthorizedError, `connect without a token ends in UnauthorizedError, not ${String(error)}`);
    return true;
  });
  await client.close().catch(() => undefined);
}

/** An MCP initialize straight to the gateway with this bearer token: the HTTP status. */
async function gatewayStatus(endpoint: string, accessToken: string): Promise<number> {
  const res = await fetch(endpoint, { method: 'POST', headers: rpcHeaders({ authorization: `Bearer ${accessToken}` }), body: JSON.stringify(initializeMessage('probe')) });
  await res.body?.cancel();
  return res.status;
}

// ---------------------------------------------------------------------------
// The browser side

/** A page in its own browser context (its own cookies), recording every navigation request. */
async function newPage(browser: Browser): Promise<{ context: BrowserContext; page: Page; navigations: string[] }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const navigations: string[] = [];
  page.on('request', (request) => {
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) navigations.push(request.url());
  });
  return { context, page, navigations };
}

const mainText = (page: Page): Promise<string> => page.locator('main').innerText();

async function signIn(page: Page, user: string, password: string): Promise<void> {
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.locator('#username').fill(user);
  await page.locator('#password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** The next hit at the redirect URI; a wait nobody ends up awaiting (a step before it failed) is not an unhandled rejection. */
function nextHit(callback: CallbackServer): Promise<CallbackHit> {
  const hit = callback.next();
  hit.catch(() => undefined);
  return hit;
}

/** Clicks Allow on the consent page and returns what the redirect URI received. */
async function allow(page: Page, callback: CallbackServer): Promise<CallbackHit> {
  const hit = nextHit(callback);
  await page.getByRole('button', { name: 'Allow' }).click();
  await page.waitForURL((url) => url.href.startsWith(callback.url));
  return hit;
}

// ---------------------------------------------------------------------------
// Mandate side helpers

/** `mandate users add NAME --password-stdin`, the password written to standard input. */
function addUser(mandate: Mandate, name: string, password: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [MANDATE, 'users', 'add', name, '--password-stdin', '--data', mandate.dataDir], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`users add exited ${code}: ${output}`))));
    child.stdin.end(`${password}\n`);
  });
}

async function cliJson<T>(mandate: Mandate, args: string[]): Promise<T> {
  const result = await mandate.cli([...args, '--json']);
  assert.equal(result.code, 0, `mandate ${args.join(' ')}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

interface AuditEvent {
  seq: number;
  type: string;
  actor?: string | null;
  server?: string | null;
  outcome: string;
  reason?: string | null;
  data?: Record<string, unknown>;
}

const auditList = (mandate: Mandate): Promise<AuditEvent[]> => cliJson<AuditEvent[]>(mandate, ['audit', 'list', '--limit', '10000']);

/** Finds each step after the previous one; fails naming the first step missing. Returns the events matched. */
function assertInOrder(events: AuditEvent[], steps: Array<{ type: string; where?: (event: AuditEvent) => boolean }>): AuditEvent[] {
  const matched: AuditEvent[] = [];
  let from = 0;
  for (const step of steps) {
    const index = events.findIndex((event, i) => i >= from && event.type === step.type && (step.where?.(event) ?? true));
    const seen = events.map((event) => `${event.seq} ${event.type} ${event.actor ?? '-'} ${event.outcome}${event.reason ? ` (${event.reason})` : ''}`).join('\n');
    assert.ok(index >= 0, `audit: no ${step.type} (matching) after ${matched.at(-1)?.type ?? 'the start'}; the log:\n${seen}`);
    matched.push(events[index]!);
    from = index + 1;
  }
  return matched;
}

async function assertAuditVerifies(mandate: Mandate): Promise<void> {
  const verify = await mandate.cli(['audit', 'verify']);
  assert.equal(verify.code, 0, `audit verify: ${verify.stdout}${verify.stderr}`);
}

/** The access token's header and claims, checked against the RFC 9068 profile and this server. */
function assertAccessToken(token: string, mandate: Mandate, clientId: string): Record<string, unknown> {
  const header = decodeProtectedHeader(token);
  assert.equal(header.typ, 'at+jwt', 'RFC 9068 typ header');
  assert.equal(header.alg, 'ES256');
  const claims = decodeJwt(token) as Record<string, unknown>;
  assert.equal(claims.iss, mandate.base);
  assert.equal(claims.aud, mandate.endpoint('everything'), 'aud is exactly the one server the token was issued for');
  assert.equal(claims.sub, USER);
  assert.equal(claims.client_id, clientId);
  assert.ok(typeof claims.scope === 'string' && claims.scope.split(' ').includes('mcp:everything'), `scope ${String(claims.scope)}`);
  assert.ok(typeof claims.jti === 'string' && claims.jti.length > 0);
  assert.ok(typeof claims.gid === 'string' && claims.gid.length > 0, 'gid names the grant');
  assert.ok(typeof claims.exp === 'number' && typeof claims.iat === 'number' && claims.exp > claims.iat);
  return claims;
}

// ---------------------------------------------------------------------------

describe('OAuth end to end: SDK client, Chromium, mandate up', { timeout: 2 * TEST_TIMEOUT_MS }, () => {
  let browser: Browser;

  before(async () => {
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
  });

  describe('dynamic registration in approval mode', () => {
    let mandate: Mandate;
    let callback: CallbackServer;

    before(async () => {
      callback = await startCallbackServer();
      mandate = await startMandate({ servers: SERVERS, identity: { registration: { mode: 'approval' } } });
      await addUser(mandate, USER, PASSWORD);
    });

    after(async () => {
      if (mandate) await stopBounded(mandate);
      await callback?.close();
    });

    test('pending client refused, approved, sign-in, consent, tools; consent remembered; refresh rotation and reuse', { timeout: TEST_TIMEOUT_MS }, async () => {
      const endpoint = mandate.endpoint('everything');
      const first = await newPage(browser);
      let page = first.page;
      const provider = new MemoryOAuthProvider({
        redirectUrl: callback.url,
        clientName: 'OAuth E2E client',
        open: async (url) => {
          await page.goto(url.href);
        },
      });
      try {
        // 1. No token: 401 → discovery → registration → the browser is sent to authorize.
        await connectExpectingAuthorization(endpoint, provider);
        const clientId = provider.clientInformation()?.client_id;
        assert.ok(clientId, 'the SDK registered a client');
        const discovery = provider.discoveryState();
        assert.equal(discovery?.resourceMetadata?.resource, endpoint, 'protected resource metadata names the endpoint');
        assert.deepEqual(discovery?.resourceMetadata?.authorization_servers, [mandate.base]);
        assert.equal(discovery?.authorizationServerMetadata?.issuer, mandate.base);
        assert.equal(provider.authorizationUrls.length, 1);
        const authorizationUrl = provider.authorizationUrls[0]!;
        assert.equal(authorizationUrl.origin + authorizationUrl.pathname, `${mandate.base}/oauth/authorize`);
        assert.equal(authorizationUrl.searchParams.get('resource'), endpoint);
        assert.equal(authorizationUrl.searchParams.get('code_challenge_method'), 'S256');
        assert.equal(authorizationUrl.searchParams.get('scope'), 'mcp:everything');

        // 2. The client is pending: the authorization endpoint refuses it, nothing reaches the redirect URI.
        const pending = await cliJson<Array<{ id: string; status: string; source: string; name: string }>>(mandate, ['clients', 'list', '--status', 'pending']);
        const registered = pending.find((entry) => entry.id === clientId);
        assert.ok(registered, `the new client is listed as pending: ${JSON.stringify(pending)}`);
        assert.equal(registered.source, 'dcr');
        assert.equal(registered.name, 'OAuth E2E client');
        const refusal = await mainText(page);
        assert.match(refusal, /pending approval/, `the browser shows the pending refusal: ${refusal}`);
        assert.ok(!page.url().startsWith(callback.url));
        assert.equal(callback.hits.length, 0, 'a pending client gets no answer at its redirect URI');

        // 3. The administrator approves it.
        const approved = await mandate.cli(['clients', 'approve', clientId]);
        assert.equal(approved.code, 0, approved.stderr);

        // 4. Authorize again: sign in, consent, code.
        assert.equal(await auth(provider, { serverUrl: endpoint }), 'REDIRECT');
        assert.equal(provider.authorizationUrls.length, 2);
        const login = await mainText(page);
        assert.match(login, /OAuth E2E client/, 'the sign-in page names the client');
        await signIn(page, USER, PASSWORD);
        await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
        assert.equal(await page.locator('[data-client]').innerText(), 'OAuth E2E client');
        assert.equal(await page.locator('[data-redirect-uri]').innerText(), callback.url);
        assert.equal(await page.locator('[data-server]').innerText(), 'everything');
        const consent = await mainText(page);
        assert.ok(consent.includes(clientId), 'the consent page shows the client id');
        assert.ok(consent.includes(endpoint), 'the consent page shows the server resource');
        assert.ok(consent.includes('mcp:everything'), 'the consent page shows the scope');
        assert.ok(consent.includes(`Signed in as ${USER}`));
        const granted = await allow(page, callback);
        assert.equal(granted.error, null);
        assert.ok(granted.code, 'the redirect carries a code');
        assert.equal(granted.state, provider.lastState, 'state comes back unchanged');
        assert.equal(granted.iss, mandate.base, 'iss names the issuer (RFC 9207)');

        // 5. Code → tokens → MCP.
        const transport = new StreamableHTTPClientTransport(new URL(endpoint), { authProvider: provider });
        await transport.finishAuth(granted.code);
        const tokens = provider.tokens();
        assert.ok(tokens?.access_token && tokens.refresh_token, 'an access token and a refresh token');
        assert.equal(tokens.token_type.toLowerCase(), 'bearer');
        const claims = assertAccessToken(tokens.access_token, mandate, clientId);
        const used = await listAndEcho(endpoint, provider, 'hello through OAuth');
        assert.ok(used.tools.includes('echo'));
        assert.equal(used.echo, 'Echo: hello through OAuth');

        // 6. Remembered consent, same browser session: no sign-in, no consent page, straight to the redirect.
        provider.clearTokens();
        const navigationsBefore = first.navigations.length;
        assert.equal(await auth(provider, { serverUrl: endpoint }), 'REDIRECT');
        const again = await callback.next();
        assert.ok(page.url().startsWith(callback.url), `the browser ended at the redirect URI, not ${page.url()}`);
        const walked = first.navigations.slice(navigationsBefore);
        assert.ok(!walked.some((url) => url.includes('/interaction/')), `no sign-in or consent page: ${walked.join(' → ')}`);
        assert.ok(again.code && again.state === provider.lastState && again.iss === mandate.base);
        await new StreamableHTTPClientTransport(new URL(endpoint), { authProvider: provider }).finishAuth(again.code);
        const sessionTokens = provider.tokens();
        assert.ok(sessionTokens?.access_token && sessionTokens.refresh_token);
        assert.notEqual(sessionTokens.access_token, tokens.access_token);

        // 7. Remembered consent, a new browser (no session): the sign-in page, then straight to the redirect.
        await first.context.close();
        const second = await newPage(browser);
        page = second.page;
        try {
          provider.clearTokens();
          assert.equal(await auth(provider, { serverUrl: endpoint }), 'REDIRECT');
          const hit = nextHit(callback);
          await signIn(page, USER, PASSWORD);
          const remembered = await hit;
          await page.waitForURL((url) => url.href.startsWith(callback.url));
          const interactions = second.navigations.filter((url) => url.includes('/interaction/'));
          assert.equal(interactions.filter((url) => !/\/login$/.test(url)).length, 1, `one sign-in page and no consent page: ${second.navigations.join(' → ')}`);
          assert.ok(remembered.code && remembered.state === provider.lastState && remembered.iss === mandate.base);
          await new StreamableHTTPClientTransport(new URL(endpoint), { authProvider: provider }).finishAuth(remembered.code);
        } finally {
          await second.context.close();
        }
        const grantTokens = provider.tokens();
        assert.ok(grantTokens?.access_token && grantTokens.refresh_token);
        assertAccessToken(grantTokens.access_token, mandate, clientId);
        assert.equal((await listAndEcho(endpoint, provider, 'remembered')).echo, 'Echo: remembered');

        // 8. Refresh: the SDK refreshes once (rotation: a new refresh token), and the new access token works.
        const rotated = grantTokens.refresh_token;
        assert.equal(await auth(provider, { serverUrl: endpoint }), 'AUTHORIZED');
        const refreshed = provider.tokens();
        assert.ok(refreshed?.access_token && refreshed.refresh_token);
        assert.notEqual(refreshed.refresh_token, rotated, 'the refresh token rotates');
        assert.notEqual(refreshed.access_token, grantTokens.access_token);
        const refreshedClaims = assertAccessToken(refreshed.access_token, mandate, clientId);
        assert.equal(refreshedClaims.gid, decodeJwt(grantTokens.access_token).gid, 'same grant');
        assert.equal(await gatewayStatus(endpoint, refreshed.access_token), 200);

        // 9. Reuse of the rotated refresh token: invalid_grant, and the whole grant is revoked.
        const reuse = await fetch(`${mandate.base}/oauth/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: rotated, client_id: clientId, resource: endpoint }),
        });
        assert.equal(reuse.status, 400);
        assert.equal(((await reuse.json()) as { error: string }).error, 'invalid_grant');
        assert.equal(await gatewayStatus(endpoint, refreshed.access_token), 401, 'the new access token of the revoked grant is refused');
        assert.equal(await gatewayStatus(endpoint, grantTokens.access_token), 401, 'and so is the earlier one');
        const later = await fetch(`${mandate.base}/oauth/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshed.refresh_token, client_id: clientId, resource: endpoint }),
        });
        assert.equal(later.status, 400, 'the newest refresh token of the revoked grant is refused too');
        assert.equal(((await later.json()) as { error: string }).error, 'invalid_grant');
        // Another grant of the same user and client is untouched.
        assert.notEqual(decodeJwt(sessionTokens.access_token).gid, refreshedClaims.gid, 'the session-reuse token belongs to another grant');
        assert.notEqual(claims.gid, refreshedClaims.gid);
        assert.equal(await gatewayStatus(endpoint, sessionTokens.access_token), 200, 'a token of another grant still works');

        // 10. The audit trail.
        const events = await auditList(mandate);
        const forClient = (event: AuditEvent) => event.data?.client_id === clientId;
        const [, registeredEvent] = assertInOrder(events, [
          { type: 'auth.rejected', where: (event) => event.reason === 'missing' && event.server === 'everything' },
          { type: 'client.registered', where: (event) => forClient(event) && event.outcome === 'success' },
          { type: 'client.approved', where: forClient },
          { type: 'login.succeeded', where: (event) => event.actor === USER && forClient(event) },
          { type: 'consent.granted', where: (event) => event.actor === USER && event.outcome === 'success' && event.server === 'everything' && forClient(event) },
          { type: 'token.issued', where: (event) => event.outcome === 'success' && forClient(event) },
          { type: 'session.opened', where: (event) => event.actor === USER && event.server === 'everything' },
          { type: 'mcp.request', where: (event) => event.actor === USER && event.server === 'everything' },
        ]);
        assert.equal(registeredEvent?.data?.status, 'pending');
        const consents = events.filter((event) => event.type === 'consent.granted' && forClient(event));
        assert.equal(consents.length, 1, 'consent was asked once and remembered after');
        assert.deepEqual((consents[0]?.data?.scopes as string[] | undefined)?.includes('mcp:everything'), true);
        assert.equal(events.filter((event) => event.type === 'login.succeeded' && event.actor === USER).length, 2, 'signed in twice: once per browser');
        assertInOrder(events, [
          { type: 'token.refreshed', where: forClient },
          { type: 'token.reuse_detected', where: forClient },
          { type: 'auth.rejected', where: (event) => event.reason === 'revoked' },
        ]);
        for (const event of events) {
          const body = JSON.stringify(event);
          for (const secret of [tokens.access_token, tokens.refresh_token, rotated, refreshed.access_token, refreshed.refresh_token, granted.code, PASSWORD]) {
            assert.ok(!body.includes(secret), `event ${event.seq} (${event.type}) holds no token, code or password`);
          }
        }
        await assertAuditVerifies(mandate);
      } finally {
        await first.context.close().catch(() => undefined);
      }
    });
  });

  describe('Client ID Metadata Document', () => {
    let mandate: Mandate;
    let callback: CallbackServer;
    let documentServer: HttpsServer;
    let documentServerV6: HttpsServer | undefined;
    let documentUrl: string;
    let documentFetches = 0;
    let dir: string;
    let machineUrl = '';
    let machineDocument = '';
    let machineKey: CryptoKey;

    before(async () => {
      dir = tempDir('mandate-cimd-');
      const key = path.join(dir, 'k.pem');
      const cert = path.join(dir, 'c.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
      callback = await startCallbackServer();
      let document = '';
      const serve = (req: IncomingMessage, res: ServerResponse): void => {
        if (req.url === '/machine.json') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(machineDocument);
          return;
        }
        if (req.url !== '/client.json') {
          res.writeHead(404).end();
          return;
        }
        documentFetches += 1;
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' }).end(document);
      };
      const tls = { key: readFileSync(key), cert: readFileSync(cert) };
      const listen = (server: HttpsServer, port: number, host: string): Promise<void> =>
        new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(port, host, () => resolve());
        });
      documentServer = createHttpsServer(tls, serve);
      await listen(documentServer, 0, '127.0.0.1');
      const port = (documentServer.address() as AddressInfo).port;
      // Where localhost also resolves to ::1, serve there too (best effort: no IPv6, no matter).
      const v6 = createHttpsServer(tls, serve);
      if (await listen(v6, port, '::1').then(() => true, () => false)) documentServerV6 = v6;
      documentUrl = `https://localhost:${port}/client.json`;
      machineUrl = `https://localhost:${port}/machine.json`;
      const pair = await generateKeyPair('ES256');
      machineKey = pair.privateKey;
      machineDocument = JSON.stringify({
        client_id: machineUrl,
        client_name: 'a machine pretending to be a metadata-document client',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'private_key_jwt',
        jwks: { keys: [{ ...(await exportJWK(pair.publicKey)), alg: 'ES256', use: 'sig', kid: 'm1' }] },
      });
      document = JSON.stringify({
        client_id: documentUrl,
        client_name: 'CIMD E2E client',
        redirect_uris: [callback.url],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      });
      mandate = await startMandate({
        servers: SERVERS,
        identity: { cimd: { allowedDomains: ['localhost'], allowPrivateAddresses: ['localhost'] } },
        env: { NODE_EXTRA_CA_CERTS: cert },
      });
      await addUser(mandate, USER, PASSWORD);
    });

    after(async () => {
      if (mandate) await stopBounded(mandate);
      await callback?.close();
      for (const server of [documentServer, documentServerV6]) {
        if (!server) continue;
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    test('a metadata document describing a machine client (client_credentials) gets no token', { timeout: TEST_TIMEOUT_MS }, async () => {
      const tokenEndpoint = `${mandate.base}/oauth/token`;
      const assertion = await new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: 'm1' })
        .setIssuer(machineUrl)
        .setSubject(machineUrl)
        .setAudience(tokenEndpoint)
        .setJti(randomUUID())
        .setIssuedAt()
        .setExpirationTime('1m')
        .sign(machineKey);
      const res = await fetch(tokenEndpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          client_id: machineUrl,
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
          resource: mandate.endpoint('everything'),
          scope: 'mcp:everything',
        }),
      });
      const body = (await res.json()) as Record<string, unknown>;
      assert.ok(res.status === 400 || res.status === 401, JSON.stringify(body));
      assert.equal(body.error, 'invalid_client');
      assert.equal(body.access_token, undefined);
      const listed = JSON.parse((await mandate.cli(['clients', 'list', '--json'])).stdout) as { id: string }[];
      assert.ok(!listed.some((client) => client.id === machineUrl), 'not recorded as a client');
    });

    test('an https client_id: metadata fetched, verified host on the consent page, token, tools', { timeout: TEST_TIMEOUT_MS }, async () => {
      const endpoint = mandate.endpoint('everything');
      const metadata = (await (await fetch(`${mandate.base}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
      assert.equal(metadata.client_id_metadata_document_supported, true, 'the AS metadata advertises metadata documents');
      const { context, page, navigations } = await newPage(browser);
      const provider = new MemoryOAuthProvider({
        redirectUrl: callback.url,
        clientName: 'CIMD E2E client',
        clientMetadataUrl: documentUrl,
        open: async (url) => {
          await page.goto(url.href);
        },
      });
      try {
        await connectExpectingAuthorization(endpoint, provider);
        assert.equal(provider.clientInformation()?.client_id, documentUrl, 'the SDK uses the metadata URL as client_id, no registration');
        assert.equal(provider.authorizationUrls[0]?.searchParams.get('client_id'), documentUrl);
        assert.ok(documentFetches >= 1, 'Mandate fetched the metadata document');

        await signIn(page, USER, PASSWORD);
        await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
        const host = new URL(documentUrl).host;
        assert.equal(await page.locator('[data-client]').innerText(), host, 'the consent page leads with the verified host');
        assert.equal(new URL(documentUrl).hostname, 'localhost');
        assert.equal(await page.locator('[data-redirect-uri]').innerText(), callback.url);
        assert.equal(await page.locator('[data-server]').innerText(), 'everything');
        const consent = await mainText(page);
        assert.ok(consent.includes('CIMD E2E client'), 'the self-asserted name is shown as such');
        assert.ok(consent.includes(documentUrl), 'the metadata document URL is shown');
        assert.ok(consent.includes('mcp:everything'));
        const granted = await allow(page, callback);
        assert.ok(granted.code);
        assert.equal(granted.state, provider.lastState);
        assert.equal(granted.iss, mandate.base, 'iss names the issuer (RFC 9207)');
        assert.ok(navigations.some((url) => url.includes('/interaction/')));

        await new StreamableHTTPClientTransport(new URL(endpoint), { authProvider: provider }).finishAuth(granted.code);
        const tokens = provider.tokens();
        assert.ok(tokens?.access_token && tokens.refresh_token);
        assertAccessToken(tokens.access_token, mandate, documentUrl);
        const used = await listAndEcho(endpoint, provider, 'hello from a metadata document client');
        assert.equal(used.echo, 'Echo: hello from a metadata document client');

        const clients = await cliJson<Array<{ id: string; status: string; source: string }>>(mandate, ['clients', 'list']);
        const known = clients.find((entry) => entry.id === documentUrl);
        assert.ok(known, 'the metadata document client is recorded');
        assert.equal(known.source, 'cimd');
        assert.equal(known.status, 'active');

        const events = await auditList(mandate);
        const forClient = (event: AuditEvent) => event.data?.client_id === documentUrl;
        const [registered] = assertInOrder(events, [
          { type: 'client.registered', where: (event) => forClient(event) && event.outcome === 'success' },
          { type: 'login.succeeded', where: (event) => event.actor === USER && forClient(event) },
          { type: 'consent.granted', where: (event) => event.actor === USER && event.outcome === 'success' && event.server === 'everything' && forClient(event) },
          { type: 'token.issued', where: (event) => event.outcome === 'success' && forClient(event) },
          { type: 'session.opened', where: (event) => event.actor === USER && event.server === 'everything' },
          { type: 'mcp.request', where: (event) => event.actor === USER && event.server === 'everything' },
        ]);
        assert.equal(registered?.data?.source, 'cimd');
        assert.ok(!events.some((event) => event.type === 'client.approved'), 'a metadata document client needs no approval');
        await assertAuditVerifies(mandate);
      } finally {
        await context.close().catch(() => undefined);
      }
    });
  });
});
