/**
 * The client's credentials never reach an upstream, on either transport.
 *
 * HTTP: a client sends its Mandate token and every other credential-like
 * header it could (a cookie, its own X-Api-Key, Proxy-Authorization); every
 * request the upstream receives (initialize, the notification, tools/list,
 * tools/call, the GET stream, the DELETE that ends the session) carries only
 * what the broker gives: the stored secret, none of the client's.
 *
 * stdio: the process the gateway starts for the client's session has the
 * stored secret in its variable and nothing of the client's nor of the
 * gateway's own environment (a canary variable set in the gateway's process).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { setSecret } from '../../src/credentials/vault.ts';
import { loadSecretKey } from '../../src/identity/secrets.ts';
import { hashPassword } from '../../src/identity/users.ts';
import { eventually } from '../gateway/raw.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { userToken } from '../helpers/oauth.ts';
import { EVERYTHING, NODE } from '../helpers/process.ts';

const PASSWORD = 'correct horse battery staple';
const CANARY = 'MANDATE_TEST_CANARY_SECRET';

describe("the client's credentials never reach an upstream", { timeout: 90_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;

  before(async () => {
    process.env[CANARY] = 'gateway-only-value';
    upstream = await startFakeUpstream();
    gateway = await startInProcess({
      servers: [
        { name: 'remote', url: upstream.url, auth: { kind: 'secret', secret: 'remote-key', header: 'X-Api-Key' } },
        { name: 'local', command: NODE, args: [EVERYTHING, 'stdio'], auth: { kind: 'secret', secret: 'local-key', env: 'LOCAL_KEY' } },
      ],
      identity: { requireToken: true, registration: { mode: 'open' } },
    });
    const now = Date.now();
    await gateway.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
    const secret = loadSecretKey(gateway.dataDir);
    await setSecret(gateway.store, secret, { name: 'remote-key', environment: '', tenant: '' }, 'stored-remote-value', 'test', 0);
    await setSecret(gateway.store, secret, { name: 'local-key', environment: '', tenant: '' }, 'stored-local-value', 'test', 0);
  });
  after(async () => {
    delete process.env[CANARY];
    await gateway?.stop();
    await upstream?.close();
  });

  it('HTTP: no request the upstream receives carries any of the client\'s headers', async () => {
    const token = await userToken(gateway.base, 'alice', PASSWORD, 'remote');
    const own = { authorization: `Bearer ${token}`, cookie: 'session=client-cookie', 'x-api-key': 'client-own-key', 'proxy-authorization': 'Basic Y2xpZW50OnB3' };
    // The broker reads the secrets within its poll; until then the call fails closed.
    await eventually(
      async () => {
        const client = new Client({ name: 'passthrough-test', version: '1.0.0' });
        try {
          await client.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint('remote')), { requestInit: { headers: own } }));
          await client.listTools();
          await client.callTool({ name: 'echo', arguments: { text: 'hi' } });
          await (client.transport as StreamableHTTPClientTransport).terminateSession();
          await client.close();
          return true;
        } catch {
          await client.close().catch(() => undefined);
          return false;
        }
      },
      (done) => done,
      'a session with the stored secret',
    );
    const methods = new Set(upstream.requests.map((r) => r.message?.method ?? r.method));
    for (const method of ['initialize', 'notifications/initialized', 'tools/list', 'tools/call', 'DELETE']) assert.ok(methods.has(method), `the upstream got ${method}: ${[...methods].join(', ')}`);
    for (const request of upstream.requests) {
      const what = request.message?.method ?? request.method;
      assert.equal(request.headers.authorization, undefined, `${what}: an Authorization header`);
      assert.equal(request.headers.cookie, undefined, `${what}: a cookie`);
      assert.equal(request.headers['proxy-authorization'], undefined, `${what}: Proxy-Authorization`);
      assert.equal(request.headers['x-api-key'], 'stored-remote-value', `${what}: the stored secret, not the client's key`);
      const all = JSON.stringify(request.headers) + request.body;
      assert.ok(!all.includes(token) && !all.includes('client-own-key') && !all.includes('client-cookie'), `${what}: something of the client's`);
    }
  });

  it("stdio: the process has the stored secret, and nothing of the client's or the gateway's own environment", async () => {
    const token = await userToken(gateway.base, 'alice', PASSWORD, 'local');
    const client = new Client({ name: 'passthrough-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint('local')), { requestInit: { headers: { authorization: `Bearer ${token}`, 'x-api-key': 'client-own-key' } } }));
    try {
      const result = await client.callTool({ name: 'get-env', arguments: {} });
      const env = JSON.parse((result.content as { text: string }[])[0]!.text) as Record<string, string>;
      assert.equal(env.LOCAL_KEY, 'stored-local-value');
      assert.equal(env[CANARY], undefined, "the gateway's own environment is not passed on");
      const text = JSON.stringify(env);
      assert.ok(!text.includes(token), "the client's token");
      assert.ok(!text.includes('client-own-key'), "the client's key");
      assert.ok(!Object.keys(env).some((name) => name.startsWith('MANDATE_')), `no MANDATE_ variable: ${Object.keys(env).join(', ')}`);
    } finally {
      await client.close();
    }
  });
});
