/**
 * Task-bound access, end to end: alice opens a task for her agent (server a,
 * tool echo, ten minutes); the agent exchanges alice's token for one bound
 * to the task (token exchange with `task`); the policy set forbids calls on
 * server a without a task. The bound token works for the task's tool, not
 * for another, and stops working within about a second of the task being
 * closed by the CLI (another process: the gateway learns of it from the
 * store, as every node would). A token exchanged from a task-bound one stays
 * bound to the task.
 */
import { callWithToken } from '../helpers/mcp-call.ts';
import { loadConfig } from '../../src/config/load.ts';
import { Identity } from '../../src/identity/service.ts';
import { createLogger } from '../../src/observability/log.ts';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hashPassword } from '../../src/identity/users.ts';
import { eventually } from '../gateway/raw.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { adminClient, jwtClaims, token, userToken, type Answer } from '../helpers/oauth.ts';
import { tempDir } from '../helpers/process.ts';

const PASSWORD = 'correct horse battery staple';
const AGENT = 'mc_task_agent';
const SECRET = 'agent-secret-agent-secret-agent-secret';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const POLICIES = `@id("scopes-decide")
permit (principal, action, resource);

@id("a-only-within-a-task")
forbid (principal, action == Action::"tools/call", resource in Server::"a")
  unless { context has task && context.task.purpose like "*incident*" };
`;
const TOOL = (name: string) => ({ name, description: name, inputSchema: { type: 'object' } });

describe('task-bound access', { timeout: 120_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  let subject = '';
  let taskId = '';
  let bound = '';

  before(async () => {
    upstream = await startFakeUpstream({ tools: [TOOL('echo'), TOOL('add')] });
    const policies = tempDir('mandate-task-policies-');
    writeFileSync(path.join(policies, 'main.cedar'), POLICIES);
    gateway = await startInProcess({
      servers: ['a', 'b'].map((name) => ({ name, url: upstream.url })),
      identity: { requireToken: true, registration: { mode: 'open' }, delegation: { maxChainDepth: 2, allow: [{ actor: AGENT, for: ['user:alice'] }] } },
      extra: { policies },
    });
    const now = Date.now();
    await gateway.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
    await adminClient(gateway.store, AGENT, ['client_credentials', EXCHANGE], SECRET);
    subject = await userToken(gateway.base, 'alice', PASSWORD, 'a');
  });
  after(async () => {
    await gateway?.stop();
    await upstream?.close();
  });

  const exchange = (params: Record<string, string>, subjectToken = subject): Promise<Answer> =>
    token(gateway.base, { grant_type: EXCHANGE, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN, ...params }, { basic: { id: AGENT, secret: SECRET } });

  const call = (accessToken: string, tool: string): Promise<string> => callWithToken(gateway.endpoint('a'), accessToken, tool);


  it('alice opens a task for her agent', async () => {
    const opened = await gateway.cli(['tasks', 'open', '--purpose', 'incident 42: restart the cache', '--ticket', 'INC-42', '--server', 'a', '--tool', 'echo', '--ttl', '10m', '--for-client', AGENT, '--as', 'alice', '--config', gateway.configPath, '--json']);
    assert.equal(opened.code, 0, opened.stderr);
    taskId = (JSON.parse(opened.stdout) as { id: string }).id;
    assert.match(taskId, /^tk-[0-9a-f]{12}$/);
  });

  it('without a task the policy forbids the call', async () => {
    assert.match(await call(subject, 'echo'), /not allowed by policy/);
  });

  it("the agent exchanges alice's token for one bound to the task: the task's tool only, no longer than the task", async () => {
    const answer = await exchange({ resource: gateway.endpoint('a'), task: taskId });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    bound = String(answer.body.access_token);
    const claims = jwtClaims(bound);
    assert.equal(claims.scope, 'mcp:a:tool:echo');
    assert.deepEqual(claims.task, { id: taskId, purpose: 'incident 42: restart the cache', ticket: 'INC-42', tools: ['echo'] });
    // Another server, or more than the task's tools, is refused.
    const other = await exchange({ resource: gateway.endpoint('b'), task: taskId });
    assert.equal(other.body.error, 'invalid_target', JSON.stringify(other.body));
    const wider = await exchange({ resource: gateway.endpoint('a'), task: taskId, scope: 'mcp:a' });
    assert.equal(wider.body.error, 'invalid_scope', JSON.stringify(wider.body));
    const unknown = await exchange({ resource: gateway.endpoint('a'), task: 'tk-000000000000' });
    assert.equal(unknown.body.error, 'invalid_grant', JSON.stringify(unknown.body));
  });

  it('the bound token works for the task\'s tool, not for another; the call is marked with the task', async () => {
    assert.equal(await call(bound, 'echo'), 'echo: x');
    assert.match(await call(bound, 'add'), /refused/);
    const record = (await gateway.audit({ types: ['mcp.request'] })).filter((e) => e.tool === 'echo' && e.outcome === 'success').at(-1);
    assert.equal(record?.data?.task, taskId);
  });

  it('a token exchanged from a bound one stays bound to the task', async () => {
    const again = await exchange({ resource: gateway.endpoint('a') }, bound);
    // The agent acting again for itself would be a chain of 2; whatever it yields, it carries the task.
    if (again.status === 200) assert.equal((jwtClaims(String(again.body.access_token)).task as { id?: string } | undefined)?.id, taskId);
    else assert.ok(['invalid_grant', 'invalid_scope'].includes(String(again.body.error)), JSON.stringify(again.body));
    const escape = await exchange({ resource: gateway.endpoint('a'), task: 'tk-111111111111' }, bound);
    assert.equal(escape.body.error, 'invalid_grant', JSON.stringify(escape.body));
  });

  it('closing the task stops its tokens within about a second, here and on another node sharing the store', async () => {
    // Another node: its own authorization server and verifier (its own revocation list) on the same store.
    const config = loadConfig({ config: gateway.configPath, data: gateway.dataDir, host: '127.0.0.1', port: Number(new URL(gateway.base).port) }, {});
    const other = await Identity.start({ config, store: gateway.store, audit: gateway.app.audit, log: createLogger('silent') });
    const serverA = config.servers.find((s) => s.name === 'a')!;
    try {
      assert.equal((await other.verifier.verify(`Bearer ${bound}`, serverA)).task?.id, taskId, 'the other node takes the bound token');
      const closed = await gateway.cli(['tasks', 'close', taskId, '--as', 'alice', '--config', gateway.configPath]);
      assert.equal(closed.code, 0, closed.stderr);
      const started = Date.now();
      await eventually(
        () => other.verifier.verify(`Bearer ${bound}`, serverA).then(() => 'accepted', (error: Error) => error.message),
        (outcome) => outcome !== 'accepted',
        'the other node to refuse the closed task\'s token',
        5000,
      );
      // The revocation list is polled every 500 ms; the bound allows for a loaded machine.
      assert.ok(Date.now() - started < 2000, `the other node took it ${Date.now() - started} ms after the close`);
    } finally {
      other.stop();
    }
  });

  it('the closed task\'s token is refused at this gateway too', async () => {
    await eventually(() => call(bound, 'echo'), (outcome) => outcome.startsWith('refused'), 'the closed task\'s token to be refused', 5000);
    const refused = await exchange({ resource: gateway.endpoint('a'), task: taskId });
    assert.equal(refused.body.error, 'invalid_grant', 'a closed task binds no new token');
  });
});
