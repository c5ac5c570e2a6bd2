/**
 * `/v0.1` with tokens required (the default): no token, or one that is not
 * this gateway's, gets 401; a token of this gateway for any of its servers
 * sees the approved entries the policy set could let its caller use.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ServerJson } from '../../src/catalog/types.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { machineToken, registerMachine } from '../helpers/oauth.ts';
import { tempDir } from '../helpers/process.ts';
import { createUsers } from '../helpers/users.ts';

const DAY = 86_400_000;

describe('/v0.1 with tokens required', { timeout: 60_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;

  before(async () => {
    upstream = await startFakeUpstream();
    // Machine clients may use `weather` but never `secret-ops`: the listing follows the policy.
    const policies = tempDir('mandate-registry-policies-');
    writeFileSync(
      path.join(policies, 'main.cedar'),
      '@id("machines") permit (principal is Client, action, resource);\n@id("no-ops") forbid (principal is Client, action, resource in Server::"secret-ops");\n',
    );
    gateway = await startInProcess({
      servers: [{ name: 'local', url: upstream.url }],
      identity: { requireToken: true, registration: { mode: 'open' } },
      extra: { admin: { roles: { publisher: ['user:alice'], approver: ['user:bob'] } }, policies },
    });
    await createUsers(gateway.store, { alice: [], bob: [] });
    for (const route of ['weather', 'secret-ops']) {
      const serverJson: ServerJson = { name: `io.example/${route}`, description: route, version: '1.0.0', remotes: [{ type: 'streamable-http', url: upstream.url }] };
      await gateway.app.catalog.propose({ serverJson, route, owner: 'alice', risk: 'low', environment: 'dev', expiresAt: new Date(Date.now() + DAY) }, 'alice', 'listing');
      await gateway.app.catalog.approve(route, 'bob', 'ok');
    }
    await gateway.app.catalogRuntime.refresh();
  });
  after(async () => {
    await gateway?.stop();
    await upstream?.close();
  });

  const list = (authorization?: string) => fetch(`${gateway.base}/v0.1/servers`, { headers: authorization ? { authorization } : {} });

  it('no token, a malformed one, or a forged one: 401', async () => {
    assert.equal((await list()).status, 401);
    assert.equal((await list('Bearer not-a-token')).status, 401);
    const forged = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ aud: `${gateway.base}/mcp/local` })).toString('base64url')}.`;
    assert.equal((await list(`Bearer ${forged}`)).status, 401, 'an audience read from an unverified token opens nothing');
  });

  it('a token of this gateway for any of its servers lists what the policy could let its caller use', async () => {
    const token = await machineToken(gateway.base, await registerMachine(gateway.base, 'indexer'), 'local');
    const res = await list(`Bearer ${token}`);
    assert.equal(res.status, 200);
    const names = ((await res.json()) as { servers: { server: ServerJson }[] }).servers.map((item) => item.server.name);
    assert.deepEqual(names, ['io.example/weather']);
  });
});
