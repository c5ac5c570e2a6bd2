/**
 * `auth: { kind: jwt }`: for each call Mandate mints a short-lived token for
 * the upstream, signed with the keys it publishes at /oauth/jwks. An upstream
 * that verifies it there sees who is calling (`sub`: the user), through what
 * (`act`: the client), and only what the call needs (`scope`: for a
 * tools/call, the one tool); never the client's own token.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { hashPassword } from '../../src/identity/users.ts';
import { startFakeUpstream, type FakeUpstream, type Received } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { userToken } from '../helpers/oauth.ts';

const PASSWORD = 'correct horse battery staple';

describe('minted tokens for a jwt upstream', { timeout: 60_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  const verified: { method: string; claims: JWTPayload }[] = [];
  const refused: string[] = [];

  before(async () => {
    upstream = await startFakeUpstream();
    gateway = await startInProcess({
      servers: [{ name: 'internal', url: upstream.url, auth: { kind: 'jwt' } }],
      identity: { requireToken: true, registration: { mode: 'open' } },
    });
    const jwks = createRemoteJWKSet(new URL(`${gateway.base}/oauth/jwks`));
    // The upstream trusts Mandate's published keys, and nothing else.
    const guard = async (message: { method?: string }, request: Received) => {
      const header = String(request.headers.authorization ?? '');
      try {
        const { payload } = await jwtVerify(header.replace(/^Bearer /, ''), jwks, { issuer: gateway.base, audience: upstream.url, maxTokenAge: '5m' });
        verified.push({ method: message.method ?? '', claims: payload });
        return undefined;
      } catch (error) {
        refused.push(`${message.method}: ${(error as Error).message}`);
        return { status: 401, body: '' };
      }
    };
    for (const method of ['initialize', 'notifications/initialized', 'tools/list', 'tools/call']) upstream.on(method, guard);
    const now = Date.now();
    await gateway.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
  });
  after(async () => {
    await gateway?.stop();
    await upstream?.close();
  });

  it('the upstream verifies each call against /oauth/jwks and sees sub, act and only the scope the call needs', async () => {
    const token = await userToken(gateway.base, 'alice', PASSWORD, 'internal');
    const client = new Client({ name: 'jwt-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint('internal')), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
    const result = await client.callTool({ name: 'echo', arguments: { text: 'hi' } });
    assert.equal((result.content as { text: string }[])[0]?.text, 'echo: hi');
    await client.close();
    assert.deepEqual(refused, []);
    const call = verified.find((v) => v.method === 'tools/call')?.claims;
    assert.ok(call, 'the tools/call carried a verified token');
    assert.equal(call.sub, 'alice');
    assert.equal((call.act as { sub?: string } | undefined)?.sub, call.client_id, 'act names the client');
    assert.equal(call.scope, 'mcp:internal:tool:echo', 'only the called tool');
    assert.ok(typeof call.jti === 'string' && (call.exp as number) - (call.iat as number) <= 300);
    const init = verified.find((v) => v.method === 'initialize')?.claims;
    assert.equal(init?.scope, 'mcp:internal');
    // The call's record names the minted token by its jti, never the token.
    const record = (await gateway.audit({ types: ['mcp.request'] })).find((e) => e.data?.method === 'tools/call');
    assert.equal(record?.data?.credential, `jwt:${String(call.jti)}`);
    // Each minted token is on record (credential.issued) by its jti and scope, never the token.
    const issued = await gateway.audit({ types: ['credential.issued'] });
    const minted = issued.find((e) => e.data?.jti === call.jti);
    assert.equal(minted?.data?.kind, 'jwt');
    assert.equal(minted?.data?.sub, 'alice');
    assert.equal(minted?.data?.scope, 'mcp:internal:tool:echo');
    assert.ok(issued.some((e) => e.data?.jti === init?.jti), 'the initialize token too');
    // The client's own token never reached the upstream.
    assert.ok(upstream.requests.every((r) => String(r.headers.authorization) !== `Bearer ${token}`));
  });
});
