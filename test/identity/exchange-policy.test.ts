/**
 * A token exchange never adds a server the policy set keeps the user from:
 * alice consented to servers a and b in one grant, and the policy set
 * forbids her everything on b. An allowed agent exchanging her token gets a
 * token for a, and is refused one for b, naming the policy.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hashPassword } from '../../src/identity/users.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { adminClient, jwtClaims, refusedWith, token, userGrant } from '../helpers/oauth.ts';
import { tempDir } from '../helpers/process.ts';

const PASSWORD = 'correct horse battery staple';
const AGENT = 'mc_policy_agent';
const SECRET = 'a-client-secret-for-the-policy-agent';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const POLICIES = `@id("scopes-decide")
permit (principal, action, resource);

@id("alice-not-on-b")
forbid (principal == User::"alice", action, resource in Server::"b");
`;

describe('token exchange and the policy set', { timeout: 60_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  let subject = '';

  before(async () => {
    upstream = await startFakeUpstream();
    const policies = tempDir('mandate-exchange-policies-');
    writeFileSync(path.join(policies, 'main.cedar'), POLICIES);
    gateway = await startInProcess({
      servers: ['a', 'b'].map((name) => ({ name, url: upstream.url })),
      identity: { requireToken: true, registration: { mode: 'open' }, delegation: { maxChainDepth: 2, allow: [{ actor: AGENT, for: ['user:alice'] }] } },
      extra: { policies },
    });
    const now = Date.now();
    await gateway.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
    await adminClient(gateway.store, AGENT, ['client_credentials', EXCHANGE], SECRET);
    subject = String((await userGrant(gateway.base, 'alice', PASSWORD, ['a', 'b'], 'mcp:a mcp:b')).body.access_token);
  });
  after(async () => {
    await gateway?.stop();
    await upstream?.close();
  });

  const exchange = (server: string) =>
    token(gateway.base, { grant_type: EXCHANGE, subject_token: subject, subject_token_type: ACCESS_TOKEN, resource: gateway.endpoint(server) }, { basic: { id: AGENT, secret: SECRET } });

  it('a server the policy lets the user use: exchanged', async () => {
    const answer = await exchange('a');
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(jwtClaims(String(answer.body.access_token)).aud, gateway.endpoint('a'));
  });

  it('a server the policy keeps the user from, though consented to: refused, naming the policy', async () => {
    refusedWith(await exchange('b'), 'invalid_target', /server b: the policy set lets user alice use nothing there/);
  });
});
