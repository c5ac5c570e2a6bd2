/**
 * Hostile clients against the gateway (Mandate in this process, the same
 * start-up as `mandate up`), one attack per test. Each asserts the OAuth
 * error the attacker gets (status and `error`) and that nothing was issued:
 * no code or token in the answer, no `token.issued` success in the audit log,
 * or the MCP endpoint still refusing. Administrators act through the real
 * `mandate` command (a separate process on the same store).
 *
 * Gateways, shared between cases and started once:
 *   open      registration `open`; servers alpha, beta (a scripted HTTP
 *             upstream with server-everything's tool names) and gamma (one
 *             whose recorded requests show what the gateway forwards);
 *             CIMD admits 127.0.0.1 and 169.254.169.254 (the SSRF guard must still refuse them)
 *   approval  registration `approval`, accessTokenTtl 30 s (the expiry case)
 *   closed    registration `closed`
 *   iat       registration `initial-access-token`
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ECHO_TOOL, startFakeUpstream, textResult, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import {
  REDIRECT_URI,
  addUser,
  authorize,
  authorizeUrl,
  jwtClaims,
  loginAndConsent,
  pkcePair,
  register,
  revoke,
  token,
  type Params,
} from '../helpers/oauth.ts';
import { freePort, rpcHeaders, waitFor } from '../helpers/process.ts';

type Mandate = InProcessMandate;

const PASSWORD = 'correct horse battery staple';
const BOB_PASSWORD = 'another long enough password';
const PROTOCOL = '2025-06-18';
const ALLOWED_ORIGIN = 'https://app.example.com';

let open: Mandate;
let approval: Mandate;
let closed: Mandate;
let iat: Mandate;
/** alpha and beta: answers like server-everything's, for the tools these cases name. */
let upstream: FakeUpstream;
/** gamma: its recorded requests show what the gateway forwards. */
let recorder: FakeUpstream;

/** A TCP listener on the port a CIMD client_id URL names: any connection means the SSRF guard let the fetch through. */
let trap: Server;
let trapPort = 0;
let trapConnections = 0;

const TOOL = (name: string) => ({ name, inputSchema: { type: 'object', properties: {} } });
const http = (name: string, target: FakeUpstream) => ({ name, url: target.url });

// ---------------------------------------------------------------------------
// Helpers

interface McpAnswer {
  status: number;
  headers: Headers;
  body: Record<string, unknown> | null;
}

/** One JSON-RPC message to /mcp/SERVER with a bearer token; the answer parsed from JSON or SSE. */
async function mcp(m: Mandate, server: string, bearer: string | null, message: Record<string, unknown>, session?: string): Promise<McpAnswer> {
  const extra: Record<string, string> = {};
  if (bearer !== null) extra.authorization = `Bearer ${bearer}`;
  if (session !== undefined) {
    extra['mcp-session-id'] = session;
    extra['mcp-protocol-version'] = PROTOCOL;
  }
  const response = await fetch(m.endpoint(server), { method: 'POST', headers: rpcHeaders(extra), body: JSON.stringify({ jsonrpc: '2.0', ...message }) });
  const text = await response.text();
  let body: Record<string, unknown> | null = null;
  const type = response.headers.get('content-type') ?? '';
  try {
    if (type.includes('text/event-stream')) {
      const data = text
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => JSON.parse(line.slice(5)) as Record<string, unknown>);
      body = data.find((item) => 'result' in item || 'error' in item) ?? data.at(-1) ?? null;
    } else if (text) {
      body = JSON.parse(text) as Record<string, unknown>;
    }
  } catch {
    body = { raw: text };
  }
  return { status: response.status, headers: response.headers, body };
}

const initializeMessage = { id: 0, method: 'initialize', params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'hostile-test', version: '1.0.0' } } };

/** initialize + notifications/initialized; the session id. */
async function openSession(m: Mandate, server: string, bearer: string): Promise<string> {
  const answer = await mcp(m, server, bearer, initializeMessage);
  assert.equal(answer.status, 200, `initialize on ${server}: ${JSON.stringify(answer.body)}`);
  const session = answer.headers.get('mcp-session-id');
  assert.ok(session, 'initialize answered without a session id');
  const initialized = await mcp(m, server, bearer, { method: 'notifications/initialized' }, session);
  assert.equal(initialized.status, 202);
  return session;
}

/** Registers an interactive public client (loopback redirect); its client_id. */
async function publicClient(m: Mandate, extra: Record<string, unknown> = {}): Promise<string> {
  const answer = await register(m.base, { client_name: 'hostile test client', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], ...extra });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return String(answer.body.client_id);
}

interface Flow {
  params: Record<string, string>;
  verifier: string;
}

/** Authorization request parameters for a client and a server (S256 PKCE). */
function flow(m: Mandate, clientId: string, server: string, scope = `mcp:${server}`): Flow {
  const { verifier, challenge } = pkcePair();
  return {
    verifier,
    params: { client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URI, scope, resource: m.endpoint(server), code_challenge: challenge, code_challenge_method: 'S256', state: `state-${Math.random().toString(36).slice(2)}` },
  };
}

/** Signs in, allows, and returns the code's token request parameters (not yet sent). */
async function codeFor(m: Mandate, clientId: string, server: string, user = 'alice', password = PASSWORD, scope?: string): Promise<Record<string, string>> {
  const f = flow(m, clientId, server, scope);
  const result = await loginAndConsent(m.base, authorizeUrl(m.base, f.params), user, password);
  assert.equal(result.state, f.params.state);
  assert.equal(result.iss, m.base);
  return { grant_type: 'authorization_code', code: result.code, redirect_uri: REDIRECT_URI, code_verifier: f.verifier, client_id: clientId, resource: m.endpoint(server) };
}

/** A whole authorization: the token response body. */
async function tokensFor(m: Mandate, clientId: string, server: string, user = 'alice', password = PASSWORD, scope?: string): Promise<{ access: string; refresh: string | undefined; scope: string }> {
  const answer = await token(m.base, await codeFor(m, clientId, server, user, password, scope));
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  assert.equal(typeof answer.body.access_token, 'string');
  return { access: String(answer.body.access_token), refresh: typeof answer.body.refresh_token === 'string' ? answer.body.refresh_token : undefined, scope: String(answer.body.scope) };
}

interface AuditEvent {
  type: string;
  outcome: string;
  reason: string | null;
  server: string | null;
  actor: string | null;
  data: Record<string, unknown>;
}

async function audit(m: Mandate, type: string): Promise<AuditEvent[]> {
  return (await m.audit({ types: [type] })) as AuditEvent[];
}

/** Successful token.issued / token.refreshed events for a client. */
async function issuedTo(m: Mandate, clientId: string): Promise<AuditEvent[]> {
  const events = [...(await audit(m, 'token.issued')), ...(await audit(m, 'token.refreshed'))];
  return events.filter((event) => event.outcome === 'success' && event.data.client_id === clientId);
}

/** Waits until an event matching `match` is in the log (gateway events are written asynchronously). */
async function eventually(m: Mandate, type: string, match: (event: AuditEvent) => boolean, what: string): Promise<AuditEvent> {
  let found: AuditEvent | undefined;
  await waitFor(async () => {
    found = (await audit(m, type)).find(match);
    return found !== undefined;
  }, what, 10_000);
  return found!;
}

/** An authorization answer that must be an error page: no redirect anywhere, nothing issued. */
async function assertErrorPage(response: Response, status: number, error: string): Promise<string> {
  const html = await response.text();
  assert.equal(response.status, status, html.slice(0, 500));
  assert.equal(response.headers.get('location'), null, 'an error page must not redirect');
  assert.match(response.headers.get('content-type') ?? '', /text\/html/);
  assert.ok(html.includes(error), `the page names ${error}: ${html.replace(/<style>[\s\S]*?<\/style>/, '').replace(/<[^>]+>/g, ' ').slice(0, 400)}`);
  assert.ok(!/[?&]code=/.test(html), 'no code on the page');
  return html;
}

/** An authorization answer redirected to the client's own redirect URI with an error and no code. */
function assertErrorRedirect(response: Response, error: string, state: string): URL {
  assert.equal(response.status, 303, `expected a redirect with ${error}`);
  const target = new URL(response.headers.get('location') ?? '', 'http://invalid/');
  assert.equal(`${target.origin}${target.pathname}`, REDIRECT_URI, 'the error goes to the registered redirect URI only');
  assert.equal(target.searchParams.get('error'), error, target.href);
  assert.equal(target.searchParams.get('code'), null, 'no code');
  assert.equal(target.searchParams.get('state'), state);
  return target;
}

function assertNoToken(body: Record<string, unknown>): void {
  assert.equal(body.access_token, undefined, 'no access token');
  assert.equal(body.refresh_token, undefined, 'no refresh token');
  assert.equal(body.id_token, undefined, 'no id token');
}

function bearerChallenge(answer: McpAnswer): string {
  return answer.headers.get('www-authenticate') ?? '';
}

// ---------------------------------------------------------------------------
// The gateways

before(async () => {
  trap = createServer((socket) => {
    trapConnections += 1;
    socket.destroy();
  });
  trapPort = await freePort();
  await new Promise<void>((resolve) => trap.listen(trapPort, '127.0.0.1', resolve));
  upstream = await startFakeUpstream({ tools: [ECHO_TOOL, TOOL('get-sum'), TOOL('get-env')] });
  recorder = await startFakeUpstream({ tools: [TOOL('hello')] });
  recorder.onTool('hello', (message) => ({ json: textResult(message, 'hello') }));

  [open, approval, closed, iat] = await Promise.all([
    startInProcess({
      servers: [http('alpha', upstream), http('beta', upstream), http('gamma', recorder)],
      identity: {
        registration: { mode: 'open', maxPerAddressPerHour: 1000, allowedRedirectOrigins: [ALLOWED_ORIGIN] },
        cimd: { allowedDomains: ['127.0.0.1', '169.254.169.254'] },
      },
    }),
    startInProcess({ servers: [http('alpha', upstream)], identity: { accessTokenTtl: 30, registration: { mode: 'approval', maxPerAddressPerHour: 1000 } } }),
    startInProcess({ servers: [http('alpha', upstream)], identity: { registration: { mode: 'closed' } } }),
    startInProcess({ servers: [http('alpha', upstream)], identity: { registration: { mode: 'initial-access-token', maxPerAddressPerHour: 1000 } } }),
  ]);
  const added = await Promise.all([
    addUser('alice', PASSWORD, ['--data', open.dataDir]),
    addUser('bob', BOB_PASSWORD, ['--data', open.dataDir]),
    addUser('alice', PASSWORD, ['--data', approval.dataDir]),
  ]);
  for (const result of added) assert.equal(result.code, 0, result.stderr);
});

after(async () => {
  await Promise.all([open, approval, closed, iat].filter(Boolean).map((m) => m.stop()));
  await Promise.all([upstream?.close(), recorder?.close()]);
  await new Promise<void>((resolve) => (trap ? trap.close(() => resolve()) : resolve()));
});

// ---------------------------------------------------------------------------
// The authorization endpoint

describe('authorization endpoint', () => {
  let clientId = '';
  before(async () => {
    clientId = await publicClient(open);
  });

  it('1. without PKCE (no code_challenge): invalid_request to the client, no code', async () => {
    const f = flow(open, clientId, 'alpha');
    const response = await authorize(open.base, { ...f.params, code_challenge: undefined, code_challenge_method: undefined });
    assertErrorRedirect(response, 'invalid_request', f.params.state!);
  });

  it('2. code_challenge_method=plain: invalid_request, no code', async () => {
    const f = flow(open, clientId, 'alpha');
    const response = await authorize(open.base, { ...f.params, code_challenge_method: 'plain', code_challenge: f.verifier });
    const target = assertErrorRedirect(response, 'invalid_request', f.params.state!);
    assert.match(target.searchParams.get('error_description') ?? '', /code_challenge_method/);
  });

  it('5. a redirect URI that is not registered, or has an added path or query: an error page, never a redirect', async () => {
    for (const redirect of ['https://attacker.example/callback', 'http://127.0.0.1:9/elsewhere', `${REDIRECT_URI}/extra`, `${REDIRECT_URI}?next=https://attacker.example`, `${REDIRECT_URI}#fragment`]) {
      const f = flow(open, clientId, 'alpha');
      const response = await authorize(open.base, { ...f.params, redirect_uri: redirect });
      await assertErrorPage(response, 400, 'invalid_redirect_uri');
    }
  });

  it('6. resource naming an unknown server, or missing: invalid_target, no code', async () => {
    for (const resource of [`${open.base}/mcp/nope`, 'https://attacker.example/mcp/alpha', `${open.base}/mcp/alpha/extra`, undefined]) {
      const f = flow(open, clientId, 'alpha');
      const response = await authorize(open.base, { ...f.params, resource });
      assertErrorRedirect(response, 'invalid_target', f.params.state!);
    }
  });

  it('14a. duplicated client_id or redirect_uri: invalid_request on an error page', async () => {
    const f = flow(open, clientId, 'alpha');
    await assertErrorPage(await authorize(open.base, { ...f.params, client_id: [clientId, clientId] }), 400, 'invalid_request');
    const other = await publicClient(open);
    await assertErrorPage(await authorize(open.base, { ...f.params, client_id: [other, clientId] }), 400, 'invalid_request');
    await assertErrorPage(await authorize(open.base, { ...f.params, redirect_uri: [REDIRECT_URI, REDIRECT_URI] }), 400, 'invalid_request');
    await assertErrorPage(await authorize(open.base, { ...f.params, redirect_uri: [REDIRECT_URI, 'https://attacker.example/cb'] }), 400, 'invalid_request');
  });
});

// ---------------------------------------------------------------------------
// The token endpoint

describe('token endpoint', () => {
  let clientId = '';
  before(async () => {
    clientId = await publicClient(open);
  });

  it('3. a wrong code_verifier: invalid_grant, no token', async () => {
    const params = await codeFor(open, clientId, 'alpha');
    const before = (await issuedTo(open, clientId)).length;
    const answer = await token(open.base, { ...params, code_verifier: pkcePair().verifier });
    assert.equal(answer.status, 400);
    assert.equal(answer.body.error, 'invalid_grant');
    assertNoToken(answer.body);
    // Without any verifier, too.
    const none = await token(open.base, { ...params, code_verifier: undefined });
    assert.equal(none.status, 400);
    assert.ok(['invalid_grant', 'invalid_request'].includes(String(none.body.error)), JSON.stringify(none.body));
    assertNoToken(none.body);
    assert.equal((await issuedTo(open, clientId)).length, before, 'no token.issued success');
  });

  it('4. a reused authorization code: invalid_grant, and the tokens from its first use are revoked', async () => {
    const params = await codeFor(open, clientId, 'alpha');
    const first = await token(open.base, params);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const access = String(first.body.access_token);
    await openSession(open, 'alpha', access);
    const issued = (await issuedTo(open, clientId)).length;

    const second = await token(open.base, params);
    assert.equal(second.status, 400);
    assert.equal(second.body.error, 'invalid_grant');
    assertNoToken(second.body);
    assert.equal((await issuedTo(open, clientId)).length, issued, 'no second token.issued success');

    // RFC 6749 §4.1.2: the tokens issued from the code should be revoked. Observed: the grant is revoked, at once.
    const after = await mcp(open, 'alpha', access, initializeMessage);
    assert.equal(after.status, 401, 'the first access token is refused after the code was replayed');
    assert.match(bearerChallenge(after), /error="invalid_token"/);
    assert.match(bearerChallenge(after), /revoked/);
    const refreshed = await token(open.base, { grant_type: 'refresh_token', refresh_token: String(first.body.refresh_token), client_id: clientId, resource: open.endpoint('alpha') });
    assert.equal(refreshed.status, 400);
    assert.equal(refreshed.body.error, 'invalid_grant', 'the refresh token of the first use is dead too');
    assertNoToken(refreshed.body);
  });

  it('6b. resource naming an unknown server, or another server than granted, at the token endpoint: invalid_target, no token', async () => {
    for (const resource of [`${open.base}/mcp/nope`, open.endpoint('beta'), 'https://attacker.example/mcp/alpha']) {
      // A fresh code each time: the library consumes the code before it checks the resource.
      const params = await codeFor(open, clientId, 'alpha');
      const before = (await issuedTo(open, clientId)).length;
      const answer = await token(open.base, { ...params, resource });
      assert.equal(answer.status, 400, JSON.stringify(answer.body));
      assert.equal(answer.body.error, 'invalid_target', resource);
      assertNoToken(answer.body);
      assert.equal((await issuedTo(open, clientId)).length, before);
    }
  });

  it('6c. a missing resource at the token endpoint: invalid_target (docs/identity.md: "resource is required … at the authorization and token endpoints")', async () => {
    const params = await codeFor(open, clientId, 'alpha');
    const before = (await issuedTo(open, clientId)).length;
    const answer = await token(open.base, { ...params, resource: undefined });
    assert.equal(answer.status, 400, `a token was issued without a resource: ${JSON.stringify({ ...answer.body, access_token: answer.body.access_token ? '…' : undefined, refresh_token: undefined })}`);
    assert.equal(answer.body.error, 'invalid_target');
    assertNoToken(answer.body);
    assert.equal((await issuedTo(open, clientId)).length, before);
  });

  it('14b. a duplicated code at the token endpoint: invalid_request, no token', async () => {
    const params = await codeFor(open, clientId, 'alpha');
    const before = (await issuedTo(open, clientId)).length;
    const answer = await token(open.base, { ...params, code: [params.code!, params.code!] } as Params);
    assert.equal(answer.status, 400);
    assert.equal(answer.body.error, 'invalid_request');
    assertNoToken(answer.body);
    assert.equal((await issuedTo(open, clientId)).length, before);
  });

  it('11. refresh token reuse: invalid_grant; the rotated one dies too; the newest access token is refused; token.reuse_detected', async () => {
    const first = await tokensFor(open, clientId, 'alpha');
    assert.ok(first.refresh, 'a refresh token');
    const refresh = (value: string) => token(open.base, { grant_type: 'refresh_token', refresh_token: value, client_id: clientId, resource: open.endpoint('alpha') });
    const rotated = await refresh(first.refresh);
    assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
    const newest = String(rotated.body.access_token);
    const newRefresh = String(rotated.body.refresh_token);
    assert.notEqual(newRefresh, first.refresh);
    await openSession(open, 'alpha', newest);

    const reused = await refresh(first.refresh);
    assert.equal(reused.status, 400);
    assert.equal(reused.body.error, 'invalid_grant');
    assertNoToken(reused.body);

    const next = await refresh(newRefresh);
    assert.equal(next.status, 400, 'the refresh token rotated in must be dead after the reuse');
    assert.equal(next.body.error, 'invalid_grant');
    assertNoToken(next.body);

    for (const access of [newest, first.access]) {
      const answer = await mcp(open, 'alpha', access, initializeMessage);
      assert.equal(answer.status, 401);
      assert.match(bearerChallenge(answer), /error="invalid_token"/);
    }
    const grant = jwtClaims(newest).gid;
    const detected = await audit(open, 'token.reuse_detected');
    assert.ok(
      detected.some((event) => event.data.client_id === clientId && event.data.grant === grant),
      `token.reuse_detected for the grant: ${JSON.stringify(detected)}`,
    );
  });
});

// ---------------------------------------------------------------------------
// The gateway: audience, scope, revocation, sessions, upstream headers

describe('gateway enforcement', () => {
  let clientA = '';
  let clientB = '';
  let alphaToken = '';
  before(async () => {
    clientA = await publicClient(open);
    clientB = await publicClient(open);
    alphaToken = (await tokensFor(open, clientA, 'alpha')).access;
  });

  it('7. a token for alpha used on beta: 401 invalid_token, auth.rejected wrong_audience', async () => {
    assert.equal((await mcp(open, 'alpha', alphaToken, initializeMessage)).status, 200, 'the token works where it belongs');
    const answer = await mcp(open, 'beta', alphaToken, initializeMessage);
    assert.equal(answer.status, 401);
    assert.match(bearerChallenge(answer), /^Bearer /);
    assert.match(bearerChallenge(answer), /error="invalid_token"/);
    assert.match(bearerChallenge(answer), /resource_metadata="[^"]*\/mcp\/beta"/);
    assert.equal(answer.body?.result, undefined);
    assert.equal(answer.headers.get('mcp-session-id'), null, 'no session opened');
    const claims = jwtClaims(alphaToken);
    await eventually(open, 'auth.rejected', (event) => event.reason === 'wrong_audience' && event.server === 'beta' && event.data.client_id === claims.client_id, 'auth.rejected wrong_audience');
  });

  it('15. a tool-scoped token: its tool works, another tool is 403 insufficient_scope naming that tool', async () => {
    const client = await publicClient(open);
    const scoped = await tokensFor(open, client, 'alpha', 'alice', PASSWORD, 'mcp:alpha:tool:echo');
    assert.equal(scoped.scope, 'mcp:alpha:tool:echo');
    assert.equal(jwtClaims(scoped.access).scope, 'mcp:alpha:tool:echo');
    const session = await openSession(open, 'alpha', scoped.access);
    const listed = await mcp(open, 'alpha', scoped.access, { id: 1, method: 'tools/list' }, session);
    assert.equal(listed.status, 200);
    const tools = ((listed.body?.result as { tools: { name: string }[] }).tools ?? []).map((tool) => tool.name);
    assert.ok(tools.includes('echo') && tools.includes('get-sum'), `the upstream's tools: ${tools.join(', ')}`);
    const reached = () => upstream.messages('tools/call').filter((m) => m.params?.name !== 'echo').length;
    const seen = reached();

    const echo = await mcp(open, 'alpha', scoped.access, { id: 2, method: 'tools/call', params: { name: 'echo', arguments: { message: 'hi' } } }, session);
    assert.equal(echo.status, 200, JSON.stringify(echo.body));
    assert.ok(echo.body?.result, JSON.stringify(echo.body));

    for (const tool of ['get-sum', 'get-env']) {
      const refused = await mcp(open, 'alpha', scoped.access, { id: 3, method: 'tools/call', params: { name: tool, arguments: { a: 1, b: 2 } } }, session);
      assert.equal(refused.status, 403, `${tool}: ${JSON.stringify(refused.body)}`);
      assert.match(bearerChallenge(refused), new RegExp(`^Bearer error="insufficient_scope", scope="mcp:alpha:tool:${tool}"`));
      assert.equal(refused.body?.result, undefined);
    }
    const resources = await mcp(open, 'alpha', scoped.access, { id: 4, method: 'resources/list' }, session);
    assert.equal(resources.status, 403);
    assert.match(bearerChallenge(resources), /error="insufficient_scope", scope="mcp:alpha"/);
    assert.equal(reached(), seen, 'a refused call reached the upstream');
    assert.equal(upstream.messages('resources/list').length, 0, 'a refused list reached the upstream');
    await eventually(open, 'auth.rejected', (event) => event.reason === 'insufficient_scope' && event.data.scope === 'mcp:alpha:tool:get-sum', 'auth.rejected insufficient_scope');
  });

  it('9a. revoked through POST /oauth/revoke by its own client: the next MCP call is 401 at once (another client cannot revoke it)', async () => {
    const { access } = await tokensFor(open, clientA, 'alpha');
    const session = await openSession(open, 'alpha', access);
    // Another client's revocation request: RFC 7009 answers 200, but the token lives on.
    const foreign = await revoke(open.base, { token: access, token_type_hint: 'access_token', client_id: clientB });
    assert.equal(foreign.status, 200);
    assert.equal((await mcp(open, 'alpha', access, { id: 1, method: 'ping' }, session)).status, 200, 'another client cannot revoke the token');

    const revoked = await revoke(open.base, { token: access, token_type_hint: 'access_token', client_id: clientA });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    const answer = await mcp(open, 'alpha', access, { id: 2, method: 'ping' }, session);
    assert.equal(answer.status, 401);
    assert.match(bearerChallenge(answer), /error="invalid_token"/);
    assert.match(bearerChallenge(answer), /revoked/);
    const { jti } = jwtClaims(access);
    await eventually(open, 'token.revoked', (event) => event.data.jti === jti, 'token.revoked for the jti');
    await eventually(open, 'auth.rejected', (event) => event.reason === 'revoked' && event.data.client_id === clientA, 'auth.rejected revoked');
  });

  it('9b. revoked with `mandate tokens revoke --jti`: refused within about a second', async (t) => {
    const { access } = await tokensFor(open, clientA, 'alpha');
    const session = await openSession(open, 'alpha', access);
    assert.equal((await mcp(open, 'alpha', access, { id: 1, method: 'ping' }, session)).status, 200);
    const revoked = await open.cli(['tokens', 'revoke', '--jti', String(jwtClaims(access).jti)]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const start = Date.now();
    let status = 0;
    while (Date.now() - start < 3000) {
      status = (await mcp(open, 'alpha', access, { id: 2, method: 'ping' }, session)).status;
      if (status === 401) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const elapsed = Date.now() - start;
    t.diagnostic(`refused ${elapsed} ms after the CLI exited`);
    assert.equal(status, 401, 'refused after the CLI revocation');
    assert.ok(elapsed <= 1500, `refused after ${elapsed} ms (the revocation list is polled every 500 ms)`);
  });

  it('9c. consent withdrawn with `mandate consents revoke`: that user\'s tokens through that client stop; other users\' do not', async () => {
    // A client of its own: revocations cover tokens issued up to the same second.
    const client = await publicClient(open);
    const alice = await tokensFor(open, client, 'beta');
    const bob = await tokensFor(open, client, 'beta', 'bob', BOB_PASSWORD);
    const aliceSession = await openSession(open, 'beta', alice.access);
    const bobSession = await openSession(open, 'beta', bob.access);
    const withdrawn = await open.cli(['consents', 'revoke', '--user', 'alice', '--client', client]);
    assert.equal(withdrawn.code, 0, withdrawn.stderr);
    let status = 0;
    const start = Date.now();
    while (Date.now() - start < 3000) {
      status = (await mcp(open, 'beta', alice.access, { id: 2, method: 'ping' }, aliceSession)).status;
      if (status === 401) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(status, 401, 'alice\'s access token through that client is refused');
    assert.equal((await mcp(open, 'beta', bob.access, { id: 3, method: 'ping' }, bobSession)).status, 200, 'bob keeps his');
    if (alice.refresh) {
      const refreshed = await token(open.base, { grant_type: 'refresh_token', refresh_token: alice.refresh, client_id: client, resource: open.endpoint('beta') });
      assert.equal(refreshed.body.error, 'invalid_grant', 'her refresh token is dead too');
    }
  });

  it('16. a session opened by one caller, used with another valid token: 404', async () => {
    const session = await openSession(open, 'alpha', alphaToken);
    const bob = (await tokensFor(open, clientB, 'alpha', 'bob', BOB_PASSWORD)).access;
    const aliceOtherClient = (await tokensFor(open, clientB, 'alpha', 'alice', PASSWORD)).access;
    for (const intruder of [bob, aliceOtherClient]) {
      const answer = await mcp(open, 'alpha', intruder, { id: 1, method: 'tools/list' }, session);
      assert.equal(answer.status, 404, JSON.stringify(answer.body));
      assert.equal(answer.body?.result, undefined);
      const deleted = await fetch(open.endpoint('alpha'), { method: 'DELETE', headers: { authorization: `Bearer ${intruder}`, 'mcp-session-id': session, 'mcp-protocol-version': PROTOCOL } });
      assert.equal(deleted.status, 404, 'another caller cannot close the session');
    }
    assert.equal((await mcp(open, 'alpha', alphaToken, { id: 2, method: 'tools/list' }, session)).status, 200, 'the owner still can use it');
  });

  it('17. the client\'s Authorization header never reaches the upstream', async () => {
    const { access } = await tokensFor(open, clientA, 'gamma');
    const seen = recorder.requests.length;
    const session = await openSession(open, 'gamma', access);
    const called = await mcp(open, 'gamma', access, { id: 1, method: 'tools/call', params: { name: 'hello', arguments: {} } }, session);
    assert.equal(called.status, 200, JSON.stringify(called.body));
    const requests = recorder.requests.slice(seen);
    assert.ok(requests.length >= 2, `the upstream saw ${requests.length} requests`);
    for (const request of requests) {
      assert.equal(request.headers.authorization, undefined, `authorization forwarded on ${request.body}`);
      assert.equal(request.headers.cookie, undefined);
      for (const [name, value] of Object.entries(request.headers)) assert.ok(!String(value).includes(access), `the token is in upstream header ${name}`);
      assert.ok(!request.body.includes(access), 'the token is in an upstream body');
    }
  });
});

// ---------------------------------------------------------------------------
// Client ID Metadata Documents: the SSRF guard

describe('client ID metadata documents', () => {
  it('12. a client_id URL on 127.0.0.1, on 169.254.169.254, or off the allowed domains: refused, and no connection made', async () => {
    const cases: [string, RegExp][] = [
      [`https://127.0.0.1:${trapPort}/client.json`, /fetch failed/],
      ['https://169.254.169.254/client.json', /fetch failed/],
      ['https://169.254.169.254/latest/meta-data/client.json', /fetch failed/],
      ['https://attacker.example/client.json', /not allowed/],
    ];
    const before = await open.cli(['clients', 'list', '--json']);
    for (const [clientId, description] of cases) {
      const { params } = flow(open, clientId, 'alpha');
      const html = await assertErrorPage(await authorize(open.base, params), 400, 'invalid_client');
      assert.match(html, description, clientId);
    }
    assert.equal(trapConnections, 0, 'the SSRF guard must refuse before connecting to 127.0.0.1');
    const listed = await open.cli(['clients', 'list', '--json']);
    const ids = (JSON.parse(listed.stdout) as { id: string }[]).map((client) => client.id);
    assert.equal(ids.length, (JSON.parse(before.stdout) as unknown[]).length);
    assert.ok(!ids.some((id) => id.startsWith('https://')), 'no metadata-document client recorded');
  });
});

// ---------------------------------------------------------------------------
// Registration

describe('registration', () => {
  const count = async (m: Mandate) => (JSON.parse((await m.cli(['clients', 'list', '--json'])).stdout) as unknown[]).length;

  it('13. oversize, malformed, foreign redirect origin, public client_credentials: refused, nothing registered', async () => {
    const before = await count(open);
    const big = await register(open.base, { redirect_uris: [REDIRECT_URI], client_name: 'x'.repeat(17 * 1024) });
    assert.equal(big.status, 413);
    assert.equal(big.body.error, 'invalid_client_metadata');
    const cases: [Record<string, unknown> | string, number, string][] = [
      ['{"redirect_uris": [', 400, 'invalid_client_metadata'],
      ['[]', 400, 'invalid_client_metadata'],
      [{ redirect_uris: ['https://attacker.example/callback'] }, 400, 'invalid_redirect_uri'],
      [{ redirect_uris: [`${ALLOWED_ORIGIN}.attacker.example/cb`] }, 400, 'invalid_redirect_uri'],
      [{ redirect_uris: ['http://attacker.example/callback'] }, 400, 'invalid_redirect_uri'],
      [{ redirect_uris: [`${REDIRECT_URI}#frag`] }, 400, 'invalid_redirect_uri'],
      [{ grant_types: ['client_credentials'], token_endpoint_auth_method: 'none' }, 400, 'invalid_client_metadata'],
      [{ redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'client_secret_jwt' }, 400, 'invalid_client_metadata'],
      [{ redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code', 'implicit'] }, 400, 'invalid_client_metadata'],
    ];
    for (const [metadata, status, error] of cases) {
      const answer = await register(open.base, metadata);
      assert.equal(answer.status, status, `${JSON.stringify(metadata)}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error, error, JSON.stringify(metadata));
      assert.equal(answer.body.client_id, undefined);
      assert.equal(answer.body.client_secret, undefined);
    }
    // The allowed https origin passes (the rule is an allow-list, not a block-list).
    const allowed = await register(open.base, { redirect_uris: [`${ALLOWED_ORIGIN}/callback`] });
    assert.equal(allowed.status, 201, JSON.stringify(allowed.body));
    assert.equal(await count(open), before + 1, 'only the allowed registration was stored');
  });

  it('13b. refused registrations are on record: client.registered, outcome denied, with the reason (docs/identity.md, Evidence)', async () => {
    const denied = async (m: Mandate) => (await audit(m, 'client.registered')).filter((event) => event.outcome === 'denied');
    const seenOpen = (await denied(open)).length;
    const seenClosed = (await denied(closed)).length;
    const malformed = await register(open.base, '{"redirect_uris": [');
    assert.equal(malformed.status, 400);
    const foreign = await register(open.base, { redirect_uris: ['https://attacker.example/callback'] });
    assert.equal(foreign.status, 400);
    const shut = await register(closed.base, { redirect_uris: [REDIRECT_URI] });
    assert.equal(shut.status, 403);
    const openRefusals = (await denied(open)).slice(seenOpen);
    assert.deepEqual(
      openRefusals.map((event) => event.data.error),
      ['invalid_client_metadata', 'invalid_redirect_uri'],
      `intake refusals on the open gateway are recorded: ${JSON.stringify(openRefusals)}`,
    );
    assert.equal((await denied(closed)).length - seenClosed, 1, 'the closed-mode refusal is recorded');
  });

  it('registration mode closed: 403 access_denied, nothing registered', async () => {
    const answer = await register(closed.base, { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' });
    assert.equal(answer.status, 403);
    assert.equal(answer.body.error, 'access_denied');
    assert.equal(answer.body.client_id, undefined);
    assert.equal(await count(closed), 0);
  });

  it('registration mode initial-access-token: none 401, a created token 201, the used-up token 401', async () => {
    const metadata = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' };
    const without = await register(iat.base, metadata);
    assert.equal(without.status, 401);
    assert.equal(without.body.error, 'invalid_token');
    assert.match(without.response.headers.get('www-authenticate') ?? '', /^Bearer/);
    const forged = await register(iat.base, metadata, { authorization: 'Bearer not-a-real-initial-access-token' });
    assert.equal(forged.status, 401);

    const created = await iat.cli(['clients', 'token', 'create', '--json']);
    assert.equal(created.code, 0, created.stderr);
    const { token: initial } = JSON.parse(created.stdout) as { token: string };
    const first = await register(iat.base, metadata, { authorization: `Bearer ${initial}` });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    assert.equal(first.body.client_status, 'active');
    const again = await register(iat.base, metadata, { authorization: `Bearer ${initial}` });
    assert.equal(again.status, 401, 'a one-use token cannot register twice');
    assert.equal(again.body.error, 'invalid_token');
    assert.equal(again.body.client_id, undefined);
    assert.equal(await count(iat), 1);
  });

  it('another spelling of an endpoint path (case, trailing slash) does not get around Mandate\'s steps', async () => {
    const metadata = JSON.stringify({ redirect_uris: ['https://evil.example/cb'], token_endpoint_auth_method: 'none' });
    for (const path of ['/OAUTH/REGISTER', '/oauth/register/', '/OAuth/Register//']) {
      const res = await fetch(`${iat.base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: metadata });
      assert.notEqual(res.status, 201, path);
      if (res.status !== 404) assert.equal(((await res.json()) as { error: string }).error, 'invalid_token', path);
    }
    assert.equal(await count(iat), 1, 'nothing was registered');
    // The token endpoint's evidence step sees the spelled-differently path too.
    const machine = await register(open.base, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' });
    const auth = { basic: { id: String(machine.body.client_id), secret: String(machine.body.client_secret) } };
    const issued = await token(open.base, { grant_type: 'client_credentials', resource: open.endpoint('alpha'), scope: 'mcp:alpha' }, auth, '/OAUTH/TOKEN/');
    assert.equal(issued.status, 200, JSON.stringify(issued.body));
    const jti = String(jwtClaims(String(issued.body.access_token)).jti);
    const events = JSON.parse((await open.cli(['audit', 'list', '--json', '--type', 'token.issued'])).stdout) as { data?: { jti?: string } }[];
    assert.ok(events.some((event) => event.data?.jti === jti), 'the token issued at /OAUTH/TOKEN/ is on record');
  });
});

// ---------------------------------------------------------------------------
// Approval mode: a pending client gets nothing

describe('approval mode', () => {
  it('10. a pending interactive client cannot authorize; a pending machine client gets invalid_client for client_credentials', async () => {
    const interactive = await register(approval.base, { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' });
    assert.equal(interactive.status, 201);
    assert.equal(interactive.body.client_status, 'pending');
    const f = flow(approval, String(interactive.body.client_id), 'alpha');
    const html = await assertErrorPage(await authorize(approval.base, f.params), 400, 'invalid_client');
    assert.match(html, /pending approval/);
    // The refusal is on record, with the client and why.
    const denied = JSON.parse((await approval.cli(['audit', 'list', '--json', '--type', 'authorization.denied'])).stdout) as { reason?: string; data?: Record<string, unknown> }[];
    assert.ok(
      denied.some((event) => event.reason === 'invalid_client' && event.data?.client_id === interactive.body.client_id && event.data?.detail === 'client is pending'),
      JSON.stringify(denied),
    );

    const machine = await register(approval.base, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' });
    assert.equal(machine.status, 201, JSON.stringify(machine.body));
    assert.equal(machine.body.client_status, 'pending');
    const id = String(machine.body.client_id);
    const secret = String(machine.body.client_secret);
    const params = { grant_type: 'client_credentials', scope: 'mcp:alpha', resource: approval.endpoint('alpha') };
    const refused = await token(approval.base, params, { basic: { id, secret } });
    assert.equal(refused.status, 401, JSON.stringify(refused.body));
    assert.equal(refused.body.error, 'invalid_client');
    assert.match(String(refused.body.error_description), /pending approval/);
    assertNoToken(refused.body);
    assert.equal((await issuedTo(approval, id)).length, 0);
    assert.equal((await issuedTo(approval, String(interactive.body.client_id))).length, 0);

    // Control: the same request once an administrator approved the client.
    assert.equal((await approval.cli(['clients', 'approve', id])).code, 0);
    const granted = await token(approval.base, params, { basic: { id, secret } });
    assert.equal(granted.status, 200, JSON.stringify(granted.body));
    assert.equal(jwtClaims(String(granted.body.access_token)).aud, approval.endpoint('alpha'));
  });
});

// ---------------------------------------------------------------------------
// Expiry

describe('expiry', () => {
  it('8. an expired access token: 401 invalid_token, auth.rejected expired', async (t) => {
    // A 30 s token from the approval gateway: registered (pending), approved, authorized, used once (so the gateway has seen it valid).
    const clientId = await publicClient(approval);
    const approved = await approval.cli(['clients', 'approve', clientId]);
    assert.equal(approved.code, 0, approved.stderr);
    const { access } = await tokensFor(approval, clientId, 'alpha');
    const claims = jwtClaims(access);
    assert.equal(Number(claims.exp) - Number(claims.iat), 30);
    await openSession(approval, 'alpha', access);
    // The gateway runs in this process: its clock moves past the expiry plus the 5 s leeway, instead of the test waiting 36 s.
    t.mock.timers.enable({ apis: ['Date'], now: Number(claims.exp) * 1000 + 6000 });
    const answer = await mcp(approval, 'alpha', access, initializeMessage);
    t.mock.timers.reset();
    assert.equal(answer.status, 401);
    assert.match(bearerChallenge(answer), /error="invalid_token"/);
    assert.match(bearerChallenge(answer), /expired/);
    assert.equal(answer.headers.get('mcp-session-id'), null);
    await eventually(approval, 'auth.rejected', (event) => event.reason === 'expired' && event.data.client_id === clientId, 'auth.rejected expired');
  });
});
