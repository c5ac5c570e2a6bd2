/**
 * A revocation by time (of a client, of a user, of a consent) covers exactly
 * the tokens issued up to its instant, to the millisecond: within one second,
 * a token issued before the revocation is refused and one issued after it is
 * accepted, whichever node issued it and whichever node checks it. The clock
 * is mocked (Date only) so that both tokens fall in the same second, around a
 * revocation in its middle; `iat` (whole seconds) cannot tell them apart.
 *
 * Two identity nodes share one store: the app's own, and a second one served
 * on its own port. Revocations are made on the first and reach the second
 * through the store, as those of `mandate tokens revoke` and
 * `mandate consents revoke` reach every node.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it, mock } from 'node:test';
import type { ResolvedServer } from '../../src/config/load.ts';
import { consentKey, KEEP_MS } from '../../src/identity/revocations.ts';
import { Identity } from '../../src/identity/service.ts';
import { hashPassword } from '../../src/identity/users.ts';
import { AuthError } from '../../src/identity/verify.ts';
import { createLogger } from '../../src/observability/log.ts';
import { CookieJar, authorizeUrl, jwtClaims, loginAndConsent, pkcePair, REDIRECT_URI, register, token } from '../helpers/oauth.ts';
import { startInProcess, type InProcess } from './in-process.ts';

const PASSWORD = 'correct horse battery staple';

describe('revocation by time is exact to the millisecond, on one node and across nodes', { timeout: 90_000 }, () => {
  let gw: InProcess;
  let other: Identity;
  let otherServer: Server;
  /** The second node's address (same issuer, same store). */
  let otherBase = '';
  let alpha: ResolvedServer;
  let machine: { basic: { id: string; secret: string } };
  let interactive = '';
  /** A whole second in the near future, at which the mocked clock starts; each test takes the next one. */
  let second = 0;

  before(async () => {
    gw = await startInProcess((base) =>
      [`issuer: ${base}`, 'servers:', '  - name: alpha', '    url: http://127.0.0.1:9/mcp', 'identity:', '  registration:', '    mode: open', 'log:', '  level: silent', ''].join('\n'),
    );
    const { config, store, audit } = gw.app;
    other = await Identity.start({ config, store, audit, log: createLogger('silent') });
    otherServer = createServer((req, res) => void other.handle(req, res).catch(() => res.destroy()));
    await new Promise<void>((resolve) => otherServer.listen(0, '127.0.0.1', resolve));
    otherBase = `http://127.0.0.1:${(otherServer.address() as AddressInfo).port}`;
    alpha = config.servers[0]!;
    const now = Date.now();
    for (const name of ['alice', 'bob']) await store.identity.createUser({ name, passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
    const registered = await register(gw.base, { client_name: 'machine', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    machine = { basic: { id: String(registered.body.client_id), secret: String(registered.body.client_secret) } };
    const app = await register(gw.base, { client_name: 'app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
    assert.equal(app.status, 201, JSON.stringify(app.body));
    interactive = String(app.body.client_id);
    second = (Math.floor(Date.now() / 1000) + 2) * 1000;
  });

  afterEach(() => mock.timers.reset());

  after(async () => {
    mock.timers.reset();
    other?.stop();
    otherServer?.close();
    await gw?.stop();
  });

  /** Mocks Date from `ms` into a fresh second: the returned function moves the clock to that second + ms. */
  function clockAt(ms: number): (ms: number) => void {
    second += 2000;
    const start = second;
    mock.timers.enable({ apis: ['Date'], now: start + ms });
    return (at) => mock.timers.setTime(start + at);
  }

  const nodes = () => [gw.app.identity, other];
  const resource = () => alpha.endpoint;

  async function machineToken(base: string): Promise<string> {
    const issued = await token(base, { grant_type: 'client_credentials', resource: resource(), scope: 'mcp:alpha' }, machine);
    assert.equal(issued.status, 200, JSON.stringify(issued.body));
    return String(issued.body.access_token);
  }

  /** Signs the user in through the interactive client; the code's token request, not yet sent. */
  async function codeRequest(user: string, jar: CookieJar): Promise<Record<string, string>> {
    const { verifier, challenge } = pkcePair();
    const url = authorizeUrl(gw.base, { client_id: interactive, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'mcp:alpha', resource: resource(), code_challenge: challenge, code_challenge_method: 'S256', state: 's' });
    const { code } = await loginAndConsent(gw.base, url, user, PASSWORD, jar);
    return { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: interactive, resource: resource() };
  }

  async function accepted(accessToken: string): Promise<void> {
    for (const node of nodes()) await node.verifier.verify(`Bearer ${accessToken}`, alpha);
  }

  async function refused(accessToken: string, by: string): Promise<void> {
    for (const node of nodes()) {
      await assert.rejects(node.verifier.verify(`Bearer ${accessToken}`, alpha), (error: unknown) => error instanceof AuthError && error.reason === 'revoked' && error.message.includes(by));
    }
  }

  /** Revokes on the first node (stored at once) and lets the second one read it, as it does every 500 ms. */
  async function revoke(kind: 'client' | 'user' | 'consent', value: string, at: number): Promise<void> {
    await gw.app.identity.revocations.revoke(kind, value, at + KEEP_MS[kind], at);
    await other.revocations.refresh();
  }

  /** The issue time a token carries: `iat` in seconds and the precise one in ms. */
  const issued = (accessToken: string) => {
    const claims = jwtClaims(accessToken);
    return { iat: Number(claims.iat), ms: Number(claims.iat_ms) };
  };

  it('a client: its token issued 300 ms before the revocation is refused, the one 300 ms after accepted', async () => {
    const at = clockAt(100);
    const before = await machineToken(gw.base);
    at(400);
    const sameInstant = await machineToken(otherBase);
    const revokedAt = Date.now();
    await revoke('client', machine.basic.id, revokedAt);
    at(700);
    const afterwards = await machineToken(otherBase);

    const [b, s, a] = [issued(before), issued(sameInstant), issued(afterwards)];
    assert.equal(b.iat, a.iat, 'both tokens were issued within the one second');
    assert.equal(s.iat, a.iat);
    await refused(before, 'client');
    await refused(sameInstant, 'client');
    await accepted(afterwards);
    assert.deepEqual([b.ms, s.ms, a.ms], [revokedAt - 300, revokedAt, revokedAt + 300], 'each carries its precise issue time');
  });

  it('a user: a code, a refresh token and an access token from before are refused; those issued after in the same second work', async () => {
    const jar = new CookieJar();
    const at = clockAt(100);
    const first = await token(gw.base, await codeRequest('alice', jar));
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const unusedCode = await codeRequest('alice', jar);
    at(400);
    await revoke('user', 'alice', Date.now());
    at(700);
    const laterCode = await codeRequest('alice', jar);
    // Exchanged and refreshed on the other node: what counts is when each was issued, not where.
    const later = await token(otherBase, laterCode);
    assert.equal(later.status, 200, `a code issued after the revocation: ${JSON.stringify(later.body)}`);
    assert.equal(issued(String(first.body.access_token)).iat, issued(String(later.body.access_token)).iat, 'all within the one second');

    await refused(String(first.body.access_token), 'user');
    await accepted(String(later.body.access_token));
    const oldCode = await token(otherBase, unusedCode);
    assert.equal(oldCode.status, 400);
    assert.equal(oldCode.body.error, 'invalid_grant');
    const oldRefresh = await token(otherBase, { grant_type: 'refresh_token', refresh_token: String(first.body.refresh_token), client_id: interactive, resource: resource() });
    assert.equal(oldRefresh.status, 400);
    assert.equal(oldRefresh.body.error, 'invalid_grant');
    const newRefresh = await token(gw.base, { grant_type: 'refresh_token', refresh_token: String(later.body.refresh_token), client_id: interactive, resource: resource() });
    assert.equal(newRefresh.status, 200, `a refresh token issued after the revocation: ${JSON.stringify(newRefresh.body)}`);
    await accepted(String(newRefresh.body.access_token));
  });

  it('a consent: the token from before it was withdrawn is refused, the one after it accepted', async () => {
    const jar = new CookieJar();
    const at = clockAt(100);
    const before = await token(gw.base, await codeRequest('bob', jar));
    assert.equal(before.status, 200, JSON.stringify(before.body));
    at(400);
    await revoke('consent', consentKey('bob', interactive), Date.now());
    at(700);
    const afterwards = await token(gw.base, await codeRequest('bob', jar));
    assert.equal(afterwards.status, 200, JSON.stringify(afterwards.body));
    assert.equal(issued(String(before.body.access_token)).iat, issued(String(afterwards.body.access_token)).iat);
    await refused(String(before.body.access_token), 'consent');
    await accepted(String(afterwards.body.access_token));
  });
});
