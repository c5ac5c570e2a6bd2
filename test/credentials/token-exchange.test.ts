/**
 * `auth: { kind: token-exchange }` (RFC 8693): for a user's call, Mandate
 * mints a subject token for the user and an actor token for the client, and
 * exchanges them at the upstream's authorization server for a token the
 * upstream accepts. Here that server is a second oidc-provider in this
 * process, with the token-exchange grant registered: it verifies both tokens
 * against Mandate's /oauth/jwks and issues its own access tokens, the only
 * ones the fake upstream takes. The tests check who the authorization server
 * was told of (the user, the client, only the called tool's scope), that the
 * client authenticated with the stored secret, that the exchanged token is
 * kept and exchanged anew after a refusal, that a refused exchange is a clear
 * error, and that the audit log names each exchange by the subject token's
 * jti and holds no token.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { createRemoteJWKSet, decodeJwt, jwtVerify, type JWTPayload } from 'jose';
import Provider, { errors, type TokenEndpointGrantContext } from 'oidc-provider';
import { pino } from 'pino';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { TokenExchange, type TokenExchangeAuth } from '../../src/credentials/exchange.ts';
import { Signer } from '../../src/credentials/mint.ts';
import { AuthorizationServers } from '../../src/credentials/upstream-as.ts';
import { setSecret } from '../../src/credentials/vault.ts';
import type { CredentialRequest } from '../../src/gateway/credentials.ts';
import type { RegisteredServer } from '../../src/gateway/registry.ts';
import type { Principal } from '../../src/identity/verify.ts';
import { loadSecretKey } from '../../src/identity/secrets.ts';
import { hashPassword } from '../../src/identity/users.ts';
import { startFakeUpstream, type FakeUpstream, type Received } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { userToken } from '../helpers/oauth.ts';
import { eventually } from '../gateway/raw.ts';

const PASSWORD = 'correct horse battery staple';
const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
/** The subject token's audience configured for `internal`. */
const SUBJECT_AUDIENCE = 'https://internal.example/mcp';
const CLIENT_SECRET = `as-${randomBytes(18).toString('base64url')}`;

type Params = { subject_token: string; subject_token_type: string; actor_token: string; actor_token_type: string; requested_token_type?: string; audience?: string };

/** One token request the authorization server received, as it saw it. */
interface Exchange {
  params: Record<string, unknown>;
  subject: JWTPayload;
  actor: JWTPayload;
  subjectToken: string;
  actorToken: string;
  /** The access token it issued; undefined if it refused. */
  issued?: string;
  refusal?: string;
}

describe('token exchange at the upstream authorization server', { timeout: 60_000 }, () => {
  let asServer: Server;
  let asIssuer = '';
  let provider: Provider;
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  const logs: string[] = [];
  const exchanges: Exchange[] = [];
  /** The client credentials of each token request (HTTP Basic). */
  const basic: { id: string; secret: string }[] = [];
  /** Each upstream request, with the token it carried and whether the upstream took it. */
  const seen: { method: string; token: string; accepted: boolean }[] = [];
  let aliceToken = '';
  let clientId = '';
  /** How far the test moved the clocks on (its exchanges' and the authorization server's alike). */
  let clockOffsetMs = 0;
  /** Replaces fields of the authorization server's answer (a token Mandate must not take). */
  let answerWith: Record<string, unknown> = {};

  /** The authorization server's side of RFC 8693: both tokens verified against Mandate's keys, an access token of its own in exchange. */
  async function exchangeGrant(ctx: TokenEndpointGrantContext<Params>): Promise<void> {
    const params = ctx.oidc.params;
    const entry: Exchange = { params: { ...params }, subject: decodeJwt(params.subject_token), actor: decodeJwt(params.actor_token), subjectToken: params.subject_token, actorToken: params.actor_token };
    exchanges.push(entry);
    const jwks = createRemoteJWKSet(new URL(`${gateway.base}/oauth/jwks`));
    // This server knows `internal` by its configured subject audience only: any other audience is refused.
    const verify = (token: string) => jwtVerify(token, jwks, { issuer: gateway.base, audience: SUBJECT_AUDIENCE, maxTokenAge: '60s', currentDate: new Date(Date.now() + clockOffsetMs) });
    try {
      if (params.subject_token_type !== JWT_TYPE || params.actor_token_type !== JWT_TYPE) throw new Error('unsupported token type');
      await verify(params.subject_token);
      await verify(params.actor_token);
    } catch (error) {
      entry.refusal = (error as Error).message;
      throw new errors.InvalidGrant(`the subject or actor token was refused: ${entry.refusal}`);
    }
    const token = new ctx.oidc.provider.AccessToken({ client: ctx.oidc.client, accountId: String(entry.subject.sub), scope: params.scope, grantId: randomBytes(8).toString('hex'), gty: 'token_exchange', extra: { act: entry.actor.sub } });
    entry.issued = await token.save();
    ctx.body = { access_token: entry.issued, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: token.expiration, scope: params.scope, ...answerWith };
  }

  before(async () => {
    // The authorization server's port first: Mandate's configuration names it.
    asServer = createServer();
    await new Promise<void>((resolve) => asServer.listen(0, '127.0.0.1', resolve));
    asIssuer = `http://127.0.0.1:${(asServer.address() as AddressInfo).port}`;
    upstream = await startFakeUpstream();
    const sink = new Writable({
      write(chunk, _encoding, done) {
        logs.push(String(chunk));
        done();
      },
    });
    const asClient = { clientId: 'mandate', clientSecret: 'as-client-secret' };
    gateway = await startInProcess({
      servers: [
        { name: 'internal', url: upstream.url, auth: { kind: 'token-exchange', issuer: asIssuer, ...asClient, scopes: ['read'], resource: upstream.url, audience: 'internal-api', subjectAudience: SUBJECT_AUDIENCE } },
        // The default subject audience (the upstream's URL), which this authorization server does not know: refused.
        { name: 'stranger', url: upstream.url, auth: { kind: 'token-exchange', tokenEndpoint: `${asIssuer}/token`, ...asClient } },
      ],
      identity: { requireToken: true, registration: { mode: 'open' } },
      app: { log: pino({ level: 'debug' }, sink) },
    });

    provider = new Provider(asIssuer, {
      clients: [{ client_id: 'mandate', client_secret: CLIENT_SECRET, grant_types: [GRANT], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic' }],
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      ttl: { AccessToken: 300 },
    });
    provider.registerGrantType(GRANT, exchangeGrant, ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'audience', 'resource', 'scope']);
    const handle = provider.callback();
    asServer.on('request', (req, res) => {
      const header = String(req.headers.authorization ?? '');
      if (req.url === '/token' && header.startsWith('Basic ')) {
        const [id = '', secret = ''] = Buffer.from(header.slice(6), 'base64').toString().split(':').map(decodeURIComponent);
        basic.push({ id, secret });
      }
      void handle(req, res);
    });

    // The upstream takes only access tokens its authorization server issued and has not revoked.
    const guard = async (message: { method?: string }, request: Received) => {
      const token = String(request.headers.authorization ?? '').replace(/^Bearer /, '');
      const accepted = (await provider.AccessToken.find(token)) !== undefined;
      seen.push({ method: message.method ?? request.method, token, accepted });
      return accepted ? undefined : { status: 401, body: '' };
    };
    for (const method of ['initialize', 'notifications/initialized', 'tools/list', 'tools/call', 'GET', 'DELETE']) upstream.on(method, guard);

    const now = Date.now();
    await gateway.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
    aliceToken = await userToken(gateway.base, 'alice', PASSWORD, 'internal');
    clientId = String(decodeJwt(aliceToken).client_id);
    assert.ok(clientId.length > 0);
  });
  after(async () => {
    await gateway?.stop();
    await upstream?.close();
    asServer?.closeAllConnections();
    await new Promise<void>((resolve) => (asServer ? asServer.close(() => resolve()) : resolve()));
  });

  async function connect(name: string, token: string): Promise<Client> {
    const client = new Client({ name: 'token-exchange-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint(name)), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
    return client;
  }

  const echo = async (client: Client, text: string) => ((await client.callTool({ name: 'echo', arguments: { text } })).content as { text: string }[])[0]?.text;
  const toolExchanges = () => exchanges.filter((e) => e.issued !== undefined && e.subject.scope === 'mcp:internal:tool:echo');
  const callRecords = async () => (await gateway.audit({ types: ['mcp.request'] })).filter((e) => e.server === 'internal' && e.data?.method === 'tools/call');
  /** Every token and secret of the test: none may be in an error, a log or the audit log. */
  const everyToken = () => [aliceToken, CLIENT_SECRET, ...exchanges.flatMap((e) => [e.subjectToken, e.actorToken, e.issued ?? ''])].filter((t) => t !== '');

  it('a client secret that is not set refuses the call closed, naming the secret', async () => {
    await assert.rejects(connect('internal', aliceToken), /upstream server "internal" needs the secret "as-client-secret", which is not set/);
    assert.equal(exchanges.length, 0, 'nothing was sent to the authorization server');
    assert.equal(upstream.requests.length, 0, 'nothing was sent to the upstream');
  });

  it('a tools/call goes through with the exchanged token: the authorization server saw the user, the client and only the tool', async () => {
    await setSecret(gateway.store, loadSecretKey(gateway.dataDir), { name: 'as-client-secret', environment: '', tenant: '' }, CLIENT_SECRET, 'test', 0);
    // The broker reads the secrets again within a second.
    const client = (await eventually(() => connect('internal', aliceToken).catch(() => null), (c) => c !== null, 'the client secret to be in force'))!;
    assert.equal(await echo(client, 'hi'), 'echo: hi');

    const [call] = toolExchanges();
    assert.ok(call, 'the tools/call was exchanged for a token of its own');
    assert.equal(toolExchanges().length, 1);
    assert.equal(call.subject.sub, 'alice');
    assert.equal(call.subject.aud, SUBJECT_AUDIENCE);
    assert.equal(call.subject.iss, gateway.base);
    assert.equal(call.subject.scope, 'mcp:internal:tool:echo', 'only the called tool');
    assert.equal(call.subject.client_id, clientId);
    assert.ok((call.subject.exp as number) - (call.subject.iat as number) <= 60, 'the subject token is short-lived');
    assert.equal(call.actor.sub, clientId, 'the actor token names the client');
    assert.equal(call.actor.aud, SUBJECT_AUDIENCE);
    assert.deepEqual(
      { scope: call.params.scope, resource: call.params.resource, audience: call.params.audience, requested: call.params.requested_token_type },
      { scope: 'read', resource: upstream.url, audience: 'internal-api', requested: ACCESS_TOKEN_TYPE },
    );
    // The session's own requests (initialize…) were exchanged with the token's scopes on this server.
    assert.ok(exchanges.some((e) => e.issued !== undefined && e.subject.scope === 'mcp:internal'));
    assert.ok(exchanges.every((e) => e.refusal === undefined));

    // Mandate authenticated as its client, with the stored secret.
    assert.ok(basic.length >= exchanges.length && basic.length > 0);
    for (const credentials of basic) assert.deepEqual(credentials, { id: 'mandate', secret: CLIENT_SECRET });

    // The upstream saw the exchanged token, never the client's token nor a token Mandate minted.
    const toolCall = seen.find((s) => s.method === 'tools/call');
    assert.deepEqual(toolCall, { method: 'tools/call', token: call.issued, accepted: true });
    assert.ok(seen.length > 0 && seen.every((s) => s.accepted), JSON.stringify(seen.filter((s) => !s.accepted)));
    const minted = new Set([aliceToken, ...exchanges.flatMap((e) => [e.subjectToken, e.actorToken])]);
    assert.ok(upstream.requests.every((r) => !minted.has(String(r.headers.authorization ?? '').replace(/^Bearer /, ''))));

    // The call's record names the exchange by the subject token's jti.
    const [record] = await callRecords();
    assert.equal(record?.data?.credential, `exchange:${String(call.subject.jti)}`);
    await client.close();
  });

  it('the exchanged token is kept; after the upstream refuses it, Mandate exchanges anew and retries once', async () => {
    const client = await connect('internal', aliceToken);
    const before = exchanges.length;
    assert.equal(await echo(client, 'again'), 'echo: again');
    assert.equal(exchanges.length, before, 'no new exchange: the token was kept (the session, too, reused its own)');
    const [first] = toolExchanges();
    assert.equal(seen.filter((s) => s.method === 'tools/call').at(-1)?.token, first?.issued);

    // The authorization server revokes the token: the upstream refuses it once, and the retry carries a new one.
    await (await provider.AccessToken.find(first!.issued!))!.destroy();
    const calls = seen.filter((s) => s.method === 'tools/call').length;
    assert.equal(await echo(client, 'after'), 'echo: after');
    assert.deepEqual(
      seen.filter((s) => s.method === 'tools/call').slice(calls).map((s) => s.accepted),
      [false, true],
      'refused once, then accepted',
    );
    assert.equal(exchanges.length, before + 1, 'exactly one new exchange');
    const second = toolExchanges()[1];
    assert.ok(second?.issued !== undefined && second.issued !== first?.issued);
    assert.equal(seen.filter((s) => s.method === 'tools/call').at(-1)?.token, second.issued);
    const last = (await callRecords()).at(-1);
    assert.equal(last?.data?.credential, `exchange:${String(second.subject.jti)}`, 'the record names the token the answer came with');
    assert.equal(last?.outcome, 'success');
    assert.deepEqual(await gateway.audit({ types: ['credential.rejected'] }), []);
    await client.close();
  });

  it('an authorization server that refuses the exchange gives a JSON-RPC error naming the server, and no token', async () => {
    const token = await userToken(gateway.base, 'alice', PASSWORD, 'stranger');
    const before = exchanges.length;
    const answer = await fetch(gateway.endpoint('stranger'), {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
    });
    const text = await answer.text();
    const body = JSON.parse(text) as { id?: unknown; error?: { code: number; message: string } };
    assert.equal(body.id, 1);
    assert.match(body.error?.message ?? '', /^upstream server "stranger" needs a token exchange, which its authorization server did not grant \(invalid_grant\)$/);
    assert.equal(exchanges.length, before + 1);
    const refused = exchanges.at(-1)!;
    assert.equal(refused.issued, undefined);
    assert.equal(refused.subject.aud, upstream.url, 'by default the subject token is for the upstream');
    for (const secret of [...everyToken(), token]) assert.ok(!text.includes(secret), 'no token in the answer');
    assert.ok(!text.includes('subject or actor token was refused'), 'not the authorization server\'s own words');
    assert.ok(logs.some((line) => line.includes('"code":"invalid_grant"')), 'a warning with the error code');
  });

  it('each exchange is recorded as credential.issued by its subject jti, and no token is in the audit log or the logs', async () => {
    const issued = exchanges.filter((e) => e.issued !== undefined);
    const events = await gateway.audit({ types: ['credential.issued'] });
    assert.deepEqual(events.map((e) => e.data.subject_jti).sort(), issued.map((e) => String(e.subject.jti)).sort());
    for (const event of events) {
      const exchange = issued.find((e) => e.subject.jti === event.data.subject_jti)!;
      assert.equal(event.server, 'internal');
      assert.equal(event.outcome, 'success');
      assert.deepEqual(event.data, { kind: 'token-exchange', user: 'alice', client: clientId, subject_jti: exchange.subject.jti, scope: exchange.subject.scope, expires_in: 300 });
    }
    const exported = await gateway.cli(['audit', 'export']);
    assert.equal(exported.code, 0, exported.stderr);
    assert.ok(exported.stdout.includes(String(issued[0]?.subject.jti)), 'the export holds the events');
    const tokens = everyToken();
    assert.ok(tokens.length >= 3 * issued.length);
    for (const [where, haystack] of [['audit export', exported.stdout], ['logs', logs.join('')]] as const) {
      for (const secret of tokens) assert.ok(!haystack.includes(secret), `a token or secret in the ${where}`);
    }
  });

  it('the exchange itself: one for calls at once, a refusal drops only the refused token, renewal at 80%, only a Bearer access token taken', async () => {
    const server = { name: 'internal', url: upstream.url, endpoint: gateway.endpoint('internal'), transport: 'http', generation: 1 } as unknown as RegisteredServer;
    const auth: TokenExchangeAuth = { kind: 'token-exchange', tokenEndpoint: `${asIssuer}/token`, clientId: 'mandate', clientSecret: 'as-client-secret', scopes: [], subjectAudience: SUBJECT_AUDIENCE };
    const now = () => Date.now() + clockOffsetMs;
    const identity = gateway.app.identity;
    const exchange = new TokenExchange({
      signer: new Signer({ issuer: gateway.base, key: () => identity.signingKey }),
      servers: new AuthorizationServers(),
      clientSecret: () => ({ value: CLIENT_SECRET, ref: 'v1' }),
      log: pino({ level: 'silent' }),
      now,
    });
    const principal = { sub: 'alice', user: 'alice', clientId, scopes: ['mcp:internal'] } as unknown as Principal;
    const ask = (): CredentialRequest => ({ server, principal, purpose: 'request', attempt: 0, call: { method: 'tools/call', tool: 'echo' } });
    const before = exchanges.length;
    const requests = [ask(), ask(), ask(), ask(), ask()];
    const given = await Promise.all(requests.map((request) => exchange.credential(request, auth)));
    assert.equal(exchanges.length, before + 1, 'one exchange for five calls at once');
    assert.equal(new Set(given.map((c) => c.headers?.authorization)).size, 1);
    assert.equal(given[0]?.reference, `exchange:${String(exchanges.at(-1)?.subject.jti)}`);

    // The first refusal drops the token; the next call exchanges anew; a late refusal of the old token keeps the new one.
    exchange.forget(requests[0]!);
    const renewed = await exchange.credential(ask(), auth);
    assert.equal(exchanges.length, before + 2);
    assert.notEqual(renewed.headers?.authorization, given[0]?.headers?.authorization);
    exchange.forget(requests[1]!);
    assert.deepEqual(await exchange.credential(ask(), auth), renewed);
    assert.equal(exchanges.length, before + 2);

    // Kept until 80% of its lifetime (300 s here), not beyond.
    clockOffsetMs += 239_000;
    assert.deepEqual(await exchange.credential(ask(), auth), renewed);
    clockOffsetMs += 2_000;
    await exchange.credential(ask(), auth);
    assert.equal(exchanges.length, before + 3);

    // No user: refused closed, nothing sent.
    await assert.rejects(exchange.credential({ ...ask(), principal: null }, auth), /upstream server "internal" needs a token exchange, and the request carries no token/);
    assert.equal(exchanges.length, before + 3);

    // Only an access token to present as a Bearer token is taken (N_A per RFC 8693 too); each answer below is for another tool, so none is kept.
    const forTool = (tool: string): CredentialRequest => ({ ...ask(), call: { method: 'tools/call', tool } });
    const refusals: [Record<string, string>, RegExp][] = [
      [{ token_type: 'DPoP' }, /\(unsupported_token_type\)$/],
      [{ token_type: 'mac' }, /\(OAUTH_UNSUPPORTED_OPERATION\)$/],
      [{ issued_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }, /\(unsupported_token_type\)$/],
      [{ access_token: 'two\nlines' }, /\(invalid_token_response\)$/],
    ];
    for (const [index, [answer, expected]] of refusals.entries()) {
      answerWith = answer;
      await assert.rejects(exchange.credential(forTool(`t${index}`), auth), expected, JSON.stringify(answer));
    }
    answerWith = { token_type: 'N_A' };
    assert.match(String((await exchange.credential(forTool('n-a'), auth)).headers?.authorization), /^Bearer \S+$/);
    // An answer without expires_in: taken as 60 s, so kept for 48 s.
    answerWith = { expires_in: undefined };
    const count = exchanges.length;
    const short = await exchange.credential(forTool('short'), auth);
    answerWith = {};
    clockOffsetMs += 47_000;
    assert.deepEqual(await exchange.credential(forTool('short'), auth), short);
    clockOffsetMs += 2_000;
    assert.notDeepEqual(await exchange.credential(forTool('short'), auth), short);
    assert.equal(exchanges.length, count + 2);

    // An authorization server that cannot be reached: the system's error code, nothing else.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await assert.rejects(exchange.credential(forTool('unreachable'), { ...auth, tokenEndpoint: `http://127.0.0.1:${port}/token` }), /which its authorization server did not grant \(ECONNREFUSED\)$/);
  });
});
