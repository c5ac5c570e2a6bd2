/**
 * Approval of a single call, end to end: a permit marked `@approval("ops")`
 * lets `tools/call` of srv/echo through only with an approval of that very
 * call. The SDK client sees the URL elicitation (-32042) naming the
 * request's page; a member of `ops` approves it there in Chromium (the
 * caller cannot, nor can a non-member); the retried call with the same
 * arguments passes, once; other arguments need their own approval; a denied
 * one is refused with who denied it and why.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import type { Browser, Page } from 'playwright-core';
import { hashPassword } from '../../src/identity/users.ts';
import { launchBrowser } from '../helpers/browser.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { userToken } from '../helpers/oauth.ts';
import { tempDir } from '../helpers/process.ts';

const PASSWORD = 'correct horse battery staple';
const POLICIES = `@id("lists")
permit (principal, action in Action::"read", resource);

@id("echo-with-approval")
@approval("ops")
permit (principal, action == Action::"tools/call", resource == Tool::"srv/echo");
`;

describe('approval of a single call', { timeout: 120_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  let browser: Browser;
  let ann: Client;

  before(async () => {
    upstream = await startFakeUpstream();
    const policies = tempDir('mandate-approval-policies-');
    writeFileSync(path.join(policies, 'main.cedar'), POLICIES);
    gateway = await startInProcess({ servers: [{ name: 'srv', url: upstream.url }], identity: { requireToken: true, registration: { mode: 'open' } }, extra: { policies } });
    const now = Date.now();
    for (const [name, groups] of [['ann', []], ['olga', ['ops']], ['pete', []]] as const) {
      await gateway.store.identity.createUser({ name, passwordHash: await hashPassword(PASSWORD), groups: [...groups], disabled: false, createdAt: now, updatedAt: now });
    }
    ann = new Client({ name: 'approval-test', version: '1.0.0' }, { capabilities: { elicitation: { url: {} } } });
    await ann.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint('srv')), { requestInit: { headers: { authorization: `Bearer ${await userToken(gateway.base, 'ann', PASSWORD, 'srv')}` } } }));
    browser = await launchBrowser();
  });
  after(async () => {
    await ann?.close();
    await browser?.close();
    await gateway?.stop();
    await upstream?.close();
  });

  /** The echo call's answer text, or the JSON-RPC error it got. */
  async function echo(text: string): Promise<{ text: string } | { error: McpError }> {
    try {
      const result = await ann.callTool({ name: 'echo', arguments: { text } });
      return { text: (result.content as { text: string }[])[0]!.text };
    } catch (error) {
      assert.ok(error instanceof McpError, String(error));
      return { error };
    }
  }

  /** The approval page a -32042 names. */
  function linkOf(outcome: Awaited<ReturnType<typeof echo>>): string {
    assert.ok('error' in outcome, `the call went through: ${JSON.stringify(outcome)}`);
    assert.equal(outcome.error.code, -32042, outcome.error.message);
    const url = (outcome.error.data as { elicitations?: { mode: string; url: string }[] }).elicitations?.[0]?.url ?? '';
    assert.match(url, new RegExp(`^${gateway.base}/approvals/ap-[0-9a-f]{12}$`));
    assert.ok(outcome.error.message.includes(url), 'the message names the link too');
    return url;
  }

  async function signedIn(user: string): Promise<Page> {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(`${gateway.base}/account/connections`);
    await page.locator('#username').fill(user);
    await page.locator('#password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Your connections' }).waitFor();
    return page;
  }

  let first = '';

  it('the call is answered with a URL elicitation naming its approval page; asking again names the same one; nothing reached the upstream', async () => {
    const calls = () => upstream.requests.filter((r) => r.message?.method === 'tools/call').length;
    const before = calls();
    first = linkOf(await echo('deploy to prod'));
    assert.equal(linkOf(await echo('deploy to prod')), first, 'still pending: the same request');
    assert.equal(calls(), before);
    const requested = await gateway.audit({ types: ['approval.requested'] });
    assert.equal(requested.length, 1);
    assert.equal(requested[0]?.actor, 'ann');
    assert.ok(!JSON.stringify(requested).includes('deploy to prod'), 'the arguments are not in the audit log');
  });

  it('the caller cannot approve their own call, nor can someone outside the group', async () => {
    for (const user of ['ann', 'pete']) {
      const page = await signedIn(user);
      await page.goto(first);
      assert.match(await page.locator('[data-args]').innerText(), /deploy to prod/);
      assert.match(await page.locator('[data-blocked]').innerText(), user === 'ann' ? /you made this call/ : /only members of ops/);
      assert.equal(await page.getByRole('button', { name: 'Approve' }).count(), 0);
      await page.context().close();
    }
  });

  it('a member of the group approves on the page; the retried call with the same arguments passes, once, marked', async () => {
    const page = await signedIn('olga');
    await page.goto(first);
    await page.locator('#reason').fill('change CHG-12 is approved');
    await page.getByRole('button', { name: 'Approve' }).click();
    await page.locator('[data-status]').filter({ hasText: 'approved' }).waitFor();
    await page.context().close();
    const passed = await echo('deploy to prod');
    assert.deepEqual(passed, { text: 'echo: deploy to prod' });
    const id = first.split('/').pop();
    const record = (await gateway.audit({ types: ['mcp.request'] })).filter((e) => e.tool === 'echo' && e.outcome === 'success').at(-1);
    assert.equal(record?.data?.approval, id);
    assert.equal((await gateway.audit({ types: ['approval.used'] })).length, 1);
    // Single use: the same call again needs a new approval.
    const again = linkOf(await echo('deploy to prod'));
    assert.notEqual(again, first);
  });

  it('other arguments need their own approval; a denial is final for that call', async () => {
    const other = linkOf(await echo('drop the table'));
    assert.notEqual(other, first);
    const id = other.split('/').pop()!;
    const denied = await gateway.cli(['approvals', 'deny', id, '--reason', 'not without a backup', '--as', 'olga', '--config', gateway.configPath]);
    assert.equal(denied.code, 0, denied.stderr);
    // A denial is a policy refusal (HTTP 403, -32003), not another elicitation.
    await assert.rejects(ann.callTool({ name: 'echo', arguments: { text: 'drop the table' } }), (error: Error) => {
      assert.match(error.message, /"code":-32003/);
      assert.match(error.message, /denied by olga: not without a backup/);
      assert.doesNotMatch(error.message, /approvals\/ap-/);
      return true;
    });
    const events = await gateway.audit({ types: ['approval.denied'] });
    assert.equal(events.at(-1)?.actor, 'olga');
  });
});
