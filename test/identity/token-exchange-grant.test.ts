/**
 * Delegation by token exchange (RFC 8693) at the token endpoint
 * (src/identity/exchange-grant.ts): a client allowed by
 * `identity.delegation.allow` exchanges a user's token for a narrower one,
 * or for another server the user consented to in the same grant; never a
 * wider one. The issued token names its actors in `act` (nested, the current
 * actor outermost), the chain is at most `maxChainDepth` deep, every
 * exchange is on record as `token.exchanged`, and the exchanged token works
 * at the gateway.
 */
import { eventually } from '../gateway/raw.ts';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { hashPassword } from '../../src/identity/users.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { adminClient, jwtClaims, machineToken, refusedWith, registerMachine, revoke, token, userGrant, userToken, type Answer } from '../helpers/oauth.ts';

const PASSWORD = 'correct horse battery staple';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const SECRET = 'a-client-secret-for-the-agents';

/** Clients made by an administrator, with ids the configuration can name. */
const ONE = 'mc_agent_one';
const TWO = 'mc_agent_two';
const THREE = 'mc_agent_three';
const STRANGER = 'mc_stranger';
const PUBLIC = 'mc_public_agent';

const basic = (id: string) => ({ basic: { id, secret: SECRET } });

describe('token exchange (delegation)', { timeout: 120_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  /** alice's token for server a (scope mcp:a), from a grant that also holds mcp:b:tool:echo for server b. */
  let subject: string;
  /** The first exchange: ONE for alice, server a, mcp:a:tool:echo. */
  let narrowed: string;
  /** The second exchange: TWO acting for ONE acting for alice, on server a. */
  let chained = '';
  /** Every token value seen, to prove none reached the audit log. */
  const values: string[] = [];

  const resource = (server: string): string => `${gateway.base}/mcp/${server}`;

  /** A token exchange by `client` (its secret, unless `auth` says otherwise; null: no client authentication). */
  async function exchange(client: string, subjectToken: string, params: Record<string, string | undefined>, auth: Parameters<typeof token>[2] | null = basic(client)): Promise<Answer> {
    const answer = await token(gateway.base, { grant_type: EXCHANGE, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN, ...params }, auth ?? undefined);
    if (typeof answer.body.access_token === 'string') values.push(answer.body.access_token);
    return answer;
  }

  /** alice signs in once for servers a and b (scope mcp:a mcp:b:tool:echo); the code is redeemed for server a. */
  async function aliceToken(): Promise<string> {
    const answer = await userGrant(gateway.base, 'alice', PASSWORD, ['a', 'b'], 'mcp:a mcp:b:tool:echo');
    values.push(String(answer.body.access_token), String(answer.body.refresh_token ?? ''));
    return String(answer.body.access_token);
  }

  before(async () => {
    upstream = await startFakeUpstream();
    gateway = await startInProcess({
      servers: ['a', 'b', 'c'].map((name) => ({ name, url: upstream.url })),
      identity: {
        requireToken: true,
        registration: { mode: 'open' },
        delegation: {
          maxChainDepth: 2,
          allow: [
            { actor: ONE, for: ['user:alice'] },
            { actor: TWO, for: ['group:eng'] },
            { actor: THREE, for: ['*'] },
            { actor: PUBLIC, for: ['*'] },
          ],
        },
      },
    });
    const now = Date.now();
    await gateway.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: ['eng'], disabled: false, createdAt: now, updatedAt: now });
    // Confidential machine clients; the public one is an interactive client (a public client has no client credentials).
    const agent = (id: string, confidential = true) =>
      adminClient(gateway.store, id, confidential ? ['client_credentials', EXCHANGE] : ['authorization_code', EXCHANGE], confidential ? SECRET : null);
    for (const id of [ONE, TWO, THREE, STRANGER]) await agent(id);
    await agent(PUBLIC, false);
    subject = await aliceToken();
  });

  after(async () => {
    await gateway?.stop();
    await upstream?.close();
  });

  it('is advertised in the metadata', async () => {
    const metadata = (await (await fetch(`${gateway.base}/.well-known/oauth-authorization-server`)).json()) as { grant_types_supported: string[] };
    assert.ok(metadata.grant_types_supported.includes(EXCHANGE), JSON.stringify(metadata.grant_types_supported));
  });

  it('an allowed client exchanges a user token for a narrower one: sub the user, act the client, the same audience, no longer life', async () => {
    const answer = await exchange(ONE, subject, { resource: resource('a'), scope: 'mcp:a:tool:echo' });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.issued_token_type, ACCESS_TOKEN);
    assert.equal(answer.body.token_type, 'Bearer');
    assert.equal(answer.body.scope, 'mcp:a:tool:echo');
    assert.equal(answer.body.refresh_token, undefined, 'no refresh token');
    narrowed = String(answer.body.access_token);
    const claims = jwtClaims(narrowed);
    const before = jwtClaims(subject);
    assert.equal(claims.sub, 'alice');
    assert.deepEqual(claims.act, { sub: ONE });
    assert.equal(claims.client_id, ONE);
    assert.equal(claims.aud, resource('a'));
    assert.equal(claims.scope, 'mcp:a:tool:echo');
    assert.equal(claims.gid, before.gid, 'bound to the subject token\'s grant: revoking it revokes both');
    assert.ok((claims.exp as number) <= (before.exp as number), 'never outlives the subject token');
    assert.equal(typeof answer.body.expires_in, 'number');
    assert.equal((claims.exp as number) - (claims.iat as number), answer.body.expires_in, 'exp is iat plus the lifetime answered');
  });

  it('without a scope, the subject\'s scopes on that server', async () => {
    const answer = await exchange(THREE, subject, { resource: resource('a') });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.scope, 'mcp:a');
  });

  it('another server only within what the user granted there: mcp:b:tool:echo yes, mcp:b (wider) no', async () => {
    refusedWith(await exchange(ONE, subject, { resource: resource('b'), scope: 'mcp:b' }), 'invalid_scope', /mcp:b is wider/);
    const answer = await exchange(ONE, subject, { resource: resource('b'), scope: 'mcp:b:tool:echo' });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(jwtClaims(String(answer.body.access_token)).aud, resource('b'));
  });

  it('a server the subject holds no scope for is refused, naming it', async () => {
    refusedWith(await exchange(ONE, subject, { resource: resource('c') }), 'invalid_scope', /no scope for server c/);
    refusedWith(await exchange(ONE, subject, { resource: resource('c'), scope: 'mcp:c' }), 'invalid_scope', /server c/);
    refusedWith(await exchange(ONE, subject, { resource: resource('a'), scope: 'mcp:b:tool:echo' }), 'invalid_scope', /not a scope of server a/);
  });

  it('a resource outside Mandate, or none, is invalid_target', async () => {
    refusedWith(await exchange(ONE, subject, { resource: 'https://elsewhere.example/mcp' }), 'invalid_target', /not an MCP server/);
    refusedWith(await exchange(ONE, subject, {}), 'invalid_target', /resource/);
  });

  it('a client the allowlist does not name for the user is refused', async () => {
    refusedWith(await exchange(STRANGER, subject, { resource: resource('a') }), 'invalid_grant', new RegExp(`client ${STRANGER} may not act for user alice`));
  });

  it('a public client may not exchange: the actor must authenticate', async () => {
    const answer = await exchange(PUBLIC, subject, { resource: resource('a'), client_id: PUBLIC }, null);
    refusedWith(answer, 'unauthorized_client', /confidential/);
  });

  it('a client without the grant among its grant_types is refused', async () => {
    const machine = await registerMachine(gateway.base, 'no-exchange');
    const answer = await exchange(machine.id, subject, { resource: resource('a') }, { basic: machine });
    assert.equal(answer.status, 400);
    assert.match(String(answer.body.error_description), /grant type is not allowed/);
  });

  it('a second exchange nests act; a third exceeds maxChainDepth 2', async () => {
    // Never wider along the chain: the narrowed token holds only mcp:a:tool:echo, and no other server.
    refusedWith(await exchange(TWO, narrowed, { resource: resource('a'), scope: 'mcp:a' }), 'invalid_scope', /wider/);
    refusedWith(await exchange(TWO, narrowed, { resource: resource('b'), scope: 'mcp:b:tool:echo' }), 'invalid_scope', /no scope for server b/);
    const second = await exchange(TWO, narrowed, { resource: resource('a') });
    assert.equal(second.status, 200, JSON.stringify(second.body));
    const claims = jwtClaims(String(second.body.access_token));
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.client_id, TWO);
    assert.equal(claims.scope, 'mcp:a:tool:echo');
    assert.deepEqual(claims.act, { sub: TWO, act: { sub: ONE } });
    chained = String(second.body.access_token);
    refusedWith(await exchange(THREE, String(second.body.access_token), { resource: resource('a') }), 'invalid_grant', /actor chain would be 3 deep; at most 2/);

    const events = await gateway.audit({ types: ['token.exchanged'] });
    const record = events.find((event) => event.outcome === 'success' && event.data?.jti === claims.jti);
    assert.ok(record, 'the exchange is on record');
    assert.equal(record.actor, 'alice');
    assert.equal(record.server, 'a');
    assert.equal(record.data?.client_id, TWO);
    assert.deepEqual(record.data?.chain, [TWO, ONE]);
    assert.equal(record.data?.subject_jti, jwtClaims(narrowed).jti);
    assert.equal(record.data?.scope, 'mcp:a:tool:echo');
    assert.equal(record.data?.exp, claims.exp);
    const deep = events.find((event) => event.outcome === 'denied' && /3 deep/.test(String(event.reason)));
    assert.ok(deep, 'the refusal is on record');
    assert.deepEqual(deep.data?.chain, [THREE, TWO, ONE]);
    assert.equal(deep.data?.error, 'invalid_grant');
  });

  it('a machine token cannot be exchanged', async () => {
    const machine = await machineToken(gateway.base, { id: THREE, secret: SECRET }, 'a');
    values.push(machine);
    refusedWith(await exchange(THREE, machine, { resource: resource('a') }), 'invalid_grant', /machine token/);
  });

  it('a revoked, a foreign or a malformed subject token is refused', async () => {
    const other = await userToken(gateway.base, 'alice', PASSWORD, 'a');
    values.push(other);
    const clientId = String(jwtClaims(other).client_id);
    assert.equal((await revoke(gateway.base, { token: other, client_id: clientId })).status, 200);
    refusedWith(await exchange(ONE, other, { resource: resource('a') }), 'invalid_grant', /revoked/);
    refusedWith(await exchange(ONE, 'not-a-token', { resource: resource('a') }), 'invalid_grant', /not a valid/);
    refusedWith(await exchange(ONE, subject, { resource: resource('a'), subject_token_type: 'urn:ietf:params:oauth:token-type:id_token' }), 'invalid_request', /subject_token_type/);
  });

  it('the exchanged token works at the gateway; no token value is ever on record', async () => {
    const client = new Client({ name: 'delegate', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint('a')), { requestInit: { headers: { authorization: `Bearer ${narrowed}` } } }));
    const result = await client.callTool({ name: 'echo', arguments: { text: 'delegated' } });
    assert.equal((result.content as { text: string }[])[0]?.text, 'echo: delegated');
    await client.close();
    const record = (await gateway.audit({ types: ['mcp.request'] })).find((event) => event.data?.method === 'tools/call');
    assert.equal(record?.actor, 'alice', 'the call is the user\'s');
    assert.deepEqual(record?.data?.actors, [ONE], 'the record names the actor');

    // Two deep: the record lists the whole chain, the current actor first.
    const deep = new Client({ name: 'delegate-of-delegate', version: '1.0.0' });
    await deep.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint('a')), { requestInit: { headers: { authorization: `Bearer ${chained}` } } }));
    await deep.callTool({ name: 'echo', arguments: { text: 'twice delegated' } });
    await deep.close();
    const calls = (await gateway.audit({ types: ['mcp.request'] })).filter((event) => event.data?.method === 'tools/call');
    assert.deepEqual(calls.at(-1)?.data?.actors, [TWO, ONE]);

    const all = JSON.stringify(await gateway.audit());
    for (const value of values.filter(Boolean)) assert.ok(!all.includes(value), 'a token value reached the audit log');
  });

  it('revoking a client of the chain ends the tokens exchanged from its tokens too', async () => {
    const revoked = await gateway.cli(['clients', 'revoke', ONE]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const status = async () => (await fetch(gateway.endpoint('a'), { method: 'POST', headers: { authorization: `Bearer ${chained}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }) })).status;
    await eventually(status, (code) => code === 401, 'the chained token to be refused');
  });
});
