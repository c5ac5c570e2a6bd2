/**
 * Break-glass at the gateway: a policy set forbids calls on `ops` unless a
 * break-glass grant covers them (`context has breakglass`). A grant for a
 * user on that server (or some of its tools) lets that user's calls through
 * from its opening until it expires or is closed, on a node that learns of
 * it from the store; every call under it is marked with the grant's id.
 * Nobody else gets anything from it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { hashPassword } from '../../src/identity/users.ts';
import { NOT_CLOSED_OR_REVIEWED } from '../../src/store/breakglass.ts';
import { eventually } from '../gateway/raw.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { userToken } from '../helpers/oauth.ts';
import { tempDir } from '../helpers/process.ts';

const PASSWORD = 'correct horse battery staple';
const POLICIES = `@id("scopes-decide")
permit (principal, action, resource);

@id("ops-only-under-breakglass")
forbid (principal, action == Action::"tools/call", resource in Server::"ops")
  unless { context has breakglass && context.breakglass.ticket like "INC-*" };
`;
const TOOL = (name: string) => ({ name, description: name, inputSchema: { type: 'object' } });

describe('break-glass at the gateway', { timeout: 90_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  const clients: Record<string, Client> = {};

  before(async () => {
    upstream = await startFakeUpstream({ tools: [TOOL('echo'), TOOL('restart')] });
    const policies = tempDir('mandate-breakglass-policies-');
    writeFileSync(path.join(policies, 'main.cedar'), POLICIES);
    gateway = await startInProcess({ servers: [{ name: 'ops', url: upstream.url }], identity: { requireToken: true, registration: { mode: 'open' } }, extra: { policies, breakglass: { reviewDays: 0 } } });
    const now = Date.now();
    for (const name of ['ann', 'bob']) {
      await gateway.store.identity.createUser({ name, passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
      const client = new Client({ name: `breakglass-${name}`, version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint('ops')), { requestInit: { headers: { authorization: `Bearer ${await userToken(gateway.base, name, PASSWORD, 'ops')}` } } }));
      clients[name] = client;
    }
  });
  after(async () => {
    for (const client of Object.values(clients)) await client.close();
    await gateway?.stop();
    await upstream?.close();
  });

  /** 'allowed' or 'denied' for a call of `tool` by `user`. */
  async function call(user: string, tool: string): Promise<string> {
    try {
      await clients[user]!.callTool({ name: tool, arguments: { text: 'x' } });
      return 'allowed';
    } catch (error) {
      if (/not allowed by policy/.test(String(error))) return 'denied';
      throw error;
    }
  }

  const grant = async (fields: { user: string; tools: string[]; ticket: string; ttlMs: number }) => {
    const now = Date.now();
    const id = `bg-${randomBytes(6).toString('hex')}`;
    await gateway.store.breakglass.create({
      id,
      user: fields.user,
      openedBy: 'root',
      server: 'ops',
      tools: fields.tools,
      ticket: fields.ticket,
      reason: 'the disk is full',
      openedAt: now,
      expiresAt: now + fields.ttlMs,
      ...NOT_CLOSED_OR_REVIEWED,
    });
    return id;
  };

  it('without a grant the policy forbids the call', async () => {
    assert.equal(await call('ann', 'echo'), 'denied');
  });

  it("a grant lets its user's calls of its tools through until it expires, each marked with its id; nobody else's", async () => {
    const id = await grant({ user: 'ann', tools: ['echo'], ticket: 'INC-1', ttlMs: 4000 });
    await eventually(() => call('ann', 'echo'), (outcome) => outcome === 'allowed', 'the grant to be in force');
    const records = (await gateway.audit({ types: ['mcp.request'] })).filter((e) => e.actor === 'ann' && e.tool === 'echo' && e.outcome === 'success');
    assert.equal(records.at(-1)?.data?.breakglass, id, 'the call is marked');
    assert.equal(await call('ann', 'restart'), 'denied', 'a tool the grant does not name');
    assert.equal(await call('bob', 'echo'), 'denied', 'another user');
    const denied = (await gateway.audit({ types: ['policy.denied'] })).filter((e) => e.actor === 'ann' && e.tool === 'restart');
    assert.equal(denied.at(-1)?.data?.breakglass, undefined, 'a call the grant does not cover is not marked');
    // Expiry is checked on each request, not only when the store is read again.
    await eventually(() => call('ann', 'echo'), (outcome) => outcome === 'denied', 'the grant to expire', 8000);
  });

  it("the policy reads the grant: one whose ticket it does not accept lets nothing through, and its denial is marked", async () => {
    const id = await grant({ user: 'ann', tools: [], ticket: 'CHANGE-7', ttlMs: 60_000 });
    await delay(1500);
    assert.equal(await call('ann', 'echo'), 'denied');
    const denied = (await gateway.audit({ types: ['policy.denied'] })).filter((e) => e.actor === 'ann');
    assert.equal(denied.at(-1)?.data?.breakglass, id);
    assert.ok(await gateway.store.breakglass.close(id, 'root', Date.now()));
  });

  it('closing a grant ends it within about a second', async () => {
    const id = await grant({ user: 'ann', tools: [], ticket: 'INC-2', ttlMs: 60_000 });
    await eventually(() => call('ann', 'echo'), (outcome) => outcome === 'allowed', 'the grant for every tool to be in force');
    assert.ok(await gateway.store.breakglass.close(id, 'root', Date.now()));
    await eventually(() => call('ann', 'echo'), (outcome) => outcome === 'denied', 'the closed grant to end', 3000);
  });

  it('the metric counts the grants whose review is overdue (reviewDays 0: every unreviewed one)', async () => {
    const overdue = async () => /^mandate_breakglass_overdue (\d+)$/m.exec(await (await fetch(`${gateway.base}/metrics`)).text())?.[1];
    await eventually(overdue, (count) => count === '3', 'the three unreviewed grants to be counted');
    const [first] = await gateway.store.breakglass.list();
    assert.ok(await gateway.store.breakglass.review(first!.id, 'sam', 'justified', 'the disk was full', Date.now()));
    await eventually(overdue, (count) => count === '2', 'a reviewed grant to leave the count');
  });
});
