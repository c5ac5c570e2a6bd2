/**
 * Policy at request time, end to end: the MCP SDK client with a user's or a
 * machine's token, Mandate in-process, and @modelcontextprotocol/server-everything
 * behind it. A user in `readers` sees and can call only what a policy
 * grants; argument conditions decide at call time while the tool stays
 * listed; a forbid beats a permit; a machine client is decided as a Client;
 * denials are recorded with the policy id, allowed calls with theirs, and
 * the chain verifies. The policy directory is changed while the gateway runs.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { hashPassword } from '../../src/identity/users.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { machineToken, registerMachine, userToken } from '../helpers/oauth.ts';
import { EVERYTHING, NODE, tempDir } from '../helpers/process.ts';
import { eventually } from '../gateway/raw.ts';

const PASSWORD = 'correct horse battery staple';

const POLICIES = `
// Readers list and read everything on the server.
@id("readers-read")
permit (principal in Group::"readers", action in Action::"read", resource in Server::"everything");

// echo, only for greetings.
@id("readers-echo")
permit (principal in Group::"readers", action == Action::"tools/call", resource == Tool::"everything/echo")
  when { context.args has message && context.args.message like "hello*" };

// get-sum, with a bound on its first operand.
@id("readers-sum")
permit (principal in Group::"readers", action == Action::"tools/call", resource == Tool::"everything/get-sum")
  when { context.args has a && context.args.a <= 100 };

// get-env is permitted to readers, but a forbid wins.
@id("readers-env")
permit (principal in Group::"readers", action == Action::"tools/call", resource == Tool::"everything/get-env");
@id("no-env")
forbid (principal, action, resource == Tool::"everything/get-env");

// Machines may list tools and call echo, whatever the message.
@id("machines-echo")
permit (principal is Client, action in [Action::"tools/list", Action::"tools/call"], resource in Server::"everything")
  when { principal.kind == "machine" && (action == Action::"tools/list" || resource == Tool::"everything/echo") };
`;

interface Connected {
  client: Client;
  close(): Promise<void>;
}

async function connect(endpoint: string, token: string): Promise<Connected> {
  const transport = new StreamableHTTPClientTransport(new URL(endpoint), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  const client = new Client({ name: 'policy-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, close: () => client.close() };
}

const text = (result: unknown): string => ((result as { content?: { type: string; text?: string }[] }).content ?? []).map((c) => c.text ?? '').join('');

describe('policy at request time (SDK client, server-everything)', { timeout: 120_000 }, () => {
  let mandate: InProcessMandate;
  let policies: string;
  let alice: Connected;
  let bob: Connected;
  let machine: Connected;

  before(async () => {
    policies = tempDir('mandate-policy-dir-');
    writeFileSync(path.join(policies, 'args.cedarschema'), 'type Args = { message?: String, a?: Long };\n');
    writeFileSync(path.join(policies, 'main.cedar'), POLICIES);
    mandate = await startInProcess({
      servers: [{ name: 'everything', command: NODE, args: [EVERYTHING, 'stdio'] }],
      identity: { requireToken: true, registration: { mode: 'open' } },
      extra: { policies },
    });
    const now = Date.now();
    await mandate.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: ['readers'], disabled: false, createdAt: now, updatedAt: now });
    await mandate.store.identity.createUser({ name: 'bob', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
    const endpoint = mandate.endpoint('everything');
    alice = await connect(endpoint, await userToken(mandate.base, 'alice', PASSWORD, 'everything'));
    bob = await connect(endpoint, await userToken(mandate.base, 'bob', PASSWORD, 'everything'));
    machine = await connect(endpoint, await machineToken(mandate.base, await registerMachine(mandate.base, 'robot'), 'everything'));
  });

  after(async () => {
    await Promise.allSettled([alice?.close(), bob?.close(), machine?.close()]);
    await mandate?.stop();
  });

  it('a reader sees only the tools a policy could allow: echo and get-sum (argument conditions), not get-env (forbidden) nor the rest', async () => {
    const { tools } = await alice.client.listTools();
    assert.deepEqual(tools.map((tool) => tool.name).sort(), ['echo', 'get-sum']);
  });

  it('a call is decided with its real arguments: a path-like prefix and a numeric bound', async () => {
    assert.equal(text(await alice.client.callTool({ name: 'echo', arguments: { message: 'hello there' } })), 'Echo: hello there');
    // HTTP 403 with the JSON-RPC error (code -32003) as its body.
    await assert.rejects(alice.client.callTool({ name: 'echo', arguments: { message: 'goodbye' } }), (error: Error & { code?: number }) => {
      assert.equal(error.code, 403);
      assert.match(error.message, /"code":-32003/);
      assert.match(error.message, /"echo\\" is not allowed by policy/);
      assert.doesNotMatch(error.message, /readers|permit|Group/, 'no policy text or entity data in the message');
      return true;
    });
    assert.match(text(await alice.client.callTool({ name: 'get-sum', arguments: { a: 100, b: 1 } })), /101/);
    await assert.rejects(alice.client.callTool({ name: 'get-sum', arguments: { a: 101, b: 1 } }), /not allowed by policy/);
  });

  it('a forbid beats a permit, and a tool hidden from the list is denied when its name is guessed', async () => {
    await assert.rejects(alice.client.callTool({ name: 'get-env', arguments: {} }), /get-env\\" is not allowed by policy/);
    await assert.rejects(alice.client.callTool({ name: 'get-tiny-image', arguments: {} }), /not allowed by policy/);
  });

  it('a user outside the group sees no tools and may not list them', async () => {
    await assert.rejects(bob.client.listTools(), /tools\/list is not allowed by policy/);
    await assert.rejects(bob.client.callTool({ name: 'echo', arguments: { message: 'hello' } }), /not allowed by policy/);
  });

  it('a machine client is decided as a Client: it lists only echo and calls it', async () => {
    const { tools } = await machine.client.listTools();
    assert.deepEqual(tools.map((tool) => tool.name), ['echo']);
    assert.equal(text(await machine.client.callTool({ name: 'echo', arguments: { message: 'beep' } })), 'Echo: beep');
    await assert.rejects(machine.client.callTool({ name: 'get-sum', arguments: { a: 1, b: 2 } }), /not allowed by policy/);
  });

  it('every decision is on record: denials with the determining policy, allowed requests with theirs, and the chain verifies', async () => {
    const denied = await mandate.audit({ types: ['policy.denied'] });
    const env = denied.find((e) => e.tool === 'get-env');
    assert.ok(env, JSON.stringify(denied));
    assert.equal(env.actor, 'alice');
    assert.equal(env.outcome, 'denied');
    assert.deepEqual(env.data?.policies, ['no-env']);
    assert.match(String(env.data?.policySet), /^[0-9a-f]{64}$/);
    const goodbye = denied.find((e) => e.tool === 'echo' && e.actor === 'alice');
    assert.ok(goodbye, JSON.stringify(denied));
    assert.deepEqual(goodbye.data?.policies, [], 'default deny names no policy');
    assert.equal(goodbye.reason, 'no policy permits it');

    const calls = await mandate.audit({ types: ['mcp.request'] });
    assert.ok(calls.some((e) => e.tool === 'echo' && e.actor === 'alice' && e.outcome === 'success' && (e.data?.policies as string[]).includes('readers-echo')));
    const call = calls.find((e) => e.tool === 'get-sum' && e.outcome === 'success');
    assert.ok(call);
    assert.deepEqual(call.data?.policies, ['readers-sum']);
    const list = calls.find((e) => e.data?.method === 'tools/list' && e.actor === 'alice');
    assert.deepEqual(list?.data?.policies, ['readers-read']);
    const machineCall = calls.find((e) => e.tool === 'echo' && e.data?.client_id !== undefined && e.actor !== 'alice' && e.outcome === 'success');
    assert.deepEqual(machineCall?.data?.policies, ['machines-echo']);

    const verified = await mandate.cli(['audit', 'verify']);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  });

  it('a valid change applies without restart; an invalid one is refused with file and line and the set in force keeps deciding', async () => {
    const before = mandate.app.policy.engine?.hash;
    writeFileSync(path.join(policies, 'main.cedar'), `${POLICIES}\n@id("readers-image")\npermit (principal in Group::"readers", action == Action::"tools/call", resource == Tool::"everything/get-tiny-image");\n`);
    await eventually(
      () => alice.client.listTools(),
      ({ tools }) => tools.some((tool) => tool.name === 'get-tiny-image'),
      'get-tiny-image listed after the file changed',
      5000,
    );
    const changed = mandate.app.policy.engine?.hash;
    assert.notEqual(changed, before);
    const loaded = await mandate.audit({ types: ['policy.loaded'] });
    assert.ok(loaded.some((e) => e.data?.sha256 === changed && e.reason === 'watch'), JSON.stringify(loaded.map((e) => e.reason)));

    writeFileSync(path.join(policies, 'broken.cedar'), '// a mistake\n\npermit (principal, action == Action::"tools/call", resource) when { context.args.nope == 1 };\n');
    const outcome = await mandate.app.reloadPolicies();
    assert.equal(outcome.ok, false);
    assert.ok(!outcome.ok && outcome.problems.some((p) => p.file === 'broken.cedar' && p.line === 3), JSON.stringify(outcome));
    assert.equal(mandate.app.policy.engine?.hash, changed, 'the set in force stays');
    assert.match(text(await alice.client.callTool({ name: 'get-tiny-image', arguments: {} })), /tiny|image|/);
    await assert.rejects(alice.client.callTool({ name: 'get-env', arguments: {} }), /not allowed by policy/);
    const rejected = await mandate.audit({ types: ['policy.rejected'] });
    assert.ok(rejected.some((e) => String(e.reason).startsWith('broken.cedar:3')), JSON.stringify(rejected.map((e) => e.reason)));
  });
});
