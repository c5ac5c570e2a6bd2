/**
 * Per-tenant isolation of upstream credentials: a catalog entry that serves
 * a tenant gets that tenant's secret, and only on behalf of callers in the
 * tenant (users in the group `tenant:NAME`). A caller from another tenant is
 * refused before anything reaches the upstream, even though an unscoped
 * secret of the same name exists; an entry without a tenant never gets the
 * tenant's version. The entries' `auth` comes through the catalog.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ServerJson } from '../../src/catalog/types.ts';
import { setSecret } from '../../src/credentials/vault.ts';
import { loadSecretKey } from '../../src/identity/secrets.ts';
import { hashPassword } from '../../src/identity/users.ts';
import { eventually, initializeMessage, post } from '../gateway/raw.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { userToken } from '../helpers/oauth.ts';

const PASSWORD = 'correct horse battery staple';
const ROLES = { roles: { publisher: ['user:carol'], approver: ['user:dave'] } };
const AUTH = { kind: 'secret', secret: 'api-key', header: 'X-Api-Key' };

describe('per-tenant isolation of upstream credentials', { timeout: 90_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  const tokens: Record<string, string> = {};

  before(async () => {
    upstream = await startFakeUpstream();
    gateway = await startInProcess({ servers: [], identity: { requireToken: true, registration: { mode: 'open' } }, extra: { admin: ROLES } });
    const now = Date.now();
    const users: Record<string, string[]> = { alice: ['tenant:acme'], bob: ['tenant:globex'], carol: [], dave: [] };
    for (const [name, groups] of Object.entries(users)) {
      await gateway.store.identity.createUser({ name, passwordHash: await hashPassword(PASSWORD), groups, disabled: false, createdAt: now, updatedAt: now });
    }
    const serverJson: ServerJson = { name: 'io.example/weather', description: 'Weather', version: '1.0.0', remotes: [{ type: 'streamable-http', url: upstream.url }] };
    const expiresAt = new Date(now + 86_400_000);
    for (const [route, tenant] of [['acme-weather', 'acme'], ['weather', undefined]] as const) {
      await gateway.app.catalog.propose({ serverJson, route, owner: 'carol', risk: 'low', environment: 'prod', expiresAt, auth: AUTH, ...(tenant ? { tenant } : {}) }, 'carol', 'weather');
      await gateway.app.catalog.approve(route, 'dave', 'reviewed');
    }
    const secret = loadSecretKey(gateway.dataDir);
    await setSecret(gateway.store, secret, { name: 'api-key', environment: '', tenant: 'acme' }, 'acme-value', 'test', 0);
    await setSecret(gateway.store, secret, { name: 'api-key', environment: '', tenant: '' }, 'unscoped-value', 'test', 0);
    await gateway.app.catalogRuntime.refresh();
    for (const user of ['alice', 'bob']) for (const route of ['acme-weather', 'weather']) tokens[`${user}@${route}`] = await userToken(gateway.base, user, PASSWORD, route);
  });
  after(async () => {
    await gateway?.stop();
    await upstream?.close();
  });

  /** An initialize as `user` on `route`; the X-Api-Key the upstream got with it (null: nothing reached it). */
  async function keySeen(user: string, route: string): Promise<{ status: number; key: string | null; message: string | null }> {
    const before = upstream.requests.length;
    const answer = await post(gateway.endpoint(route), initializeMessage(1), { authorization: `Bearer ${tokens[`${user}@${route}`]}` });
    const reached = upstream.requests.slice(before).filter((r) => r.message?.method === 'initialize');
    const key = reached.length === 0 ? null : String(reached[0]!.headers['x-api-key']);
    // An error may come as HTTP 200 with a JSON-RPC error (as it does for initialize) or with an error status.
    const text = await answer.text();
    const error = /"error":\{[^}]*"message":"((?:[^"\\]|\\.)*)"/.exec(text);
    const message = error === null ? null : (JSON.parse(`"${error[1]}"`) as string);
    const session = answer.headers.get('mcp-session-id');
    if (session !== null) await fetch(gateway.endpoint(route), { method: 'DELETE', headers: { authorization: `Bearer ${tokens[`${user}@${route}`]}`, 'mcp-session-id': session } });
    return { status: answer.status, key, message };
  }

  it("a caller in the tenant gets the tenant's secret on its server", async () => {
    // The broker learns of the secrets within its poll.
    const seen = await eventually(() => keySeen('alice', 'acme-weather'), (s) => s.key === 'acme-value', "alice's call to carry acme's secret");
    assert.equal(seen.status, 200);
    assert.equal(seen.message, null);
  });

  it("a caller from another tenant is refused on that server (a JSON-RPC error naming the tenant): nothing reaches the upstream, not even the unscoped secret", async () => {
    const seen = await keySeen('bob', 'acme-weather');
    assert.notEqual(seen.message, null, JSON.stringify(seen));
    assert.equal(seen.key, null, 'the upstream got nothing');
    assert.match(String(seen.message), /upstream server "acme-weather" serves the tenant "acme": its credentials are used only for callers in that tenant/);
    assert.ok(!String(seen.message).includes('value'), 'no secret in the error');
  });

  it("a server without a tenant never gets a tenant's version, whoever calls", async () => {
    assert.equal((await keySeen('alice', 'weather')).key, 'unscoped-value');
    assert.equal((await keySeen('bob', 'weather')).key, 'unscoped-value');
  });

  it("a catalog entry's auth is checked like servers[].auth", async () => {
    const serverJson: ServerJson = { name: 'io.example/other', description: 'Other', version: '1.0.0', remotes: [{ type: 'streamable-http', url: upstream.url }] };
    const propose = (auth: unknown) =>
      gateway.app.catalog.propose({ serverJson, route: 'other', owner: 'carol', risk: 'low', environment: 'prod', expiresAt: new Date(Date.now() + 86_400_000), auth }, 'carol', 'other');
    await assert.rejects(propose({ kind: 'secret', secret: 'api-key', env: 'API_KEY' }), /auth\.env: an HTTP server \(`url`\) takes its secret in a `header`/);
    await assert.rejects(propose({ kind: 'secret', secret: 'Bad Name', header: 'X-Api-Key' }), /auth\.secret: must be lowercase/);
    await assert.rejects(propose({ kind: 'magic' }), /auth/);
  });
});
