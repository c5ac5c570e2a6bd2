/**
 * `mandate tasks` against a running gateway's store (docs/tasks.md): no task
 * without a purpose (exit 2 naming the flag), nor beyond tasks.maxTtlSeconds
 * (exit 1 naming the key); a task that opens is stored, listed and recorded
 * as `task.opened`. Only its user or an admin closes it; closing writes a
 * `task` revocation (so every node's revocation list ends its tokens) and
 * `task.closed`, once. Revoking needs the role admin.
 * Real parts: the CLI as a process, the store the gateway runs on.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { createUsers } from '../helpers/users.ts';

const ROLES = { roles: { admin: ['user:ada'] } };

describe('mandate tasks', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  const opened: string[] = [];

  before(async () => {
    mandate = await startInProcess({ servers: [], extra: { admin: ROLES, tasks: { defaultTtlSeconds: 1800, maxTtlSeconds: 7200 } } });
    await createUsers(mandate.store, { ann: [], bob: [], ada: [] });
  });
  after(async () => {
    await mandate?.stop();
  });

  const cli = (args: string[]) => mandate.cli(['tasks', ...args, '--config', mandate.configPath]);
  const open = (extra: string[]) => cli(['open', '--server', 'payments', ...extra]);
  const taskRevocations = async () => (await mandate.store.identity.listRevocations(0, Date.now())).filter((r) => r.kind === 'task');

  it('refuses a task without a purpose (exit 2 naming the flag) or beyond tasks.maxTtlSeconds (exit 1 naming the key)', async () => {
    const [noPurpose, tooLong] = await Promise.all([open(['--as', 'ann']), open(['--purpose', 'rotate keys', '--ttl', '3h', '--as', 'ann'])]);
    assert.equal(noPurpose.code, 2, noPurpose.stderr);
    assert.match(noPurpose.stderr, /--purpose TEXT is required/);
    assert.equal(tooLong.code, 1, tooLong.stderr);
    assert.match(tooLong.stderr, /at most 7200 seconds \(tasks\.maxTtlSeconds\)/);
    assert.deepEqual(await mandate.store.tasks.list(), [], 'a refused task was stored');
    assert.deepEqual(await mandate.audit({ types: ['task.opened'] }), []);
  });

  it('opens a task for the acting user: stored, listed and recorded', async () => {
    const out = await open(['--purpose', 'rotate the payments keys', '--ticket', 'CHG-7', '--tool', 'refund', '--ttl', '30m', '--as', 'ann', '--json']);
    assert.equal(out.code, 0, out.stderr);
    const printed = JSON.parse(out.stdout) as { id: string; status: string };
    assert.match(printed.id, /^tk-[0-9a-f]{12}$/);
    assert.equal(printed.status, 'open');
    opened.push(printed.id);

    const task = await mandate.store.tasks.get(printed.id);
    assert.ok(task);
    assert.deepEqual([task.user, task.clientId, task.server, task.tools, task.purpose, task.ticket, task.status], ['ann', null, 'payments', ['refund'], 'rotate the payments keys', 'CHG-7', 'open']);
    assert.equal(task.expiresAt - task.openedAt, 30 * 60_000);

    const defaulted = await open(['--purpose', 'look into INC-9', '--as', 'bob', '--json']);
    assert.equal(defaulted.code, 0, defaulted.stderr);
    const second = JSON.parse(defaulted.stdout) as { id: string };
    opened.push(second.id);
    const bobs = await mandate.store.tasks.get(second.id);
    assert.equal((bobs?.expiresAt ?? 0) - (bobs?.openedAt ?? 0), 1800_000, 'the default ttl is tasks.defaultTtlSeconds');

    const listed = await cli(['list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { id: string }[]).map((t) => t.id), [second.id, printed.id]);
    const annOnly = await cli(['list', '--user', 'ann', '--status', 'open', '--json']);
    assert.deepEqual((JSON.parse(annOnly.stdout) as { id: string }[]).map((t) => t.id), [printed.id]);
    const text = await cli(['list']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`${printed.id}\\s+ann\\s`));

    const [event] = await mandate.audit({ types: ['task.opened'] });
    assert.equal(event?.actor, 'ann');
    assert.equal(event?.server, 'payments');
    assert.deepEqual(event?.data, {
      id: printed.id,
      user: 'ann',
      clientId: null,
      server: 'payments',
      tools: ['refund'],
      purpose: 'rotate the payments keys',
      ticket: 'CHG-7',
      expiresAt: new Date(task.expiresAt).toISOString(),
    });
  });

  it("close is refused to another user who is not an admin; the task's user closes it once, writing a task revocation", async () => {
    const [annsTask] = opened as [string];
    const byBob = await cli(['close', annsTask, '--as', 'bob']);
    assert.equal(byBob.code, 1, byBob.stderr);
    assert.match(byBob.stderr, /user "bob" may not close task tk-[0-9a-f]{12}: only its user \(ann\) or the role admin/);
    assert.equal((await mandate.store.tasks.get(annsTask))?.status, 'open');
    assert.deepEqual(await taskRevocations(), []);

    const byAnn = await cli(['close', annsTask, '--as', 'ann']);
    assert.equal(byAnn.code, 0, byAnn.stderr);
    const closed = await mandate.store.tasks.get(annsTask);
    assert.deepEqual([closed?.status, closed?.endedBy], ['closed', 'ann']);
    const revocations = await taskRevocations();
    assert.deepEqual(
      revocations.map((r) => [r.kind, r.value, r.revokedAt, r.expiresAt]),
      [['task', annsTask, closed?.endedAt, closed?.expiresAt]],
    );
    const [event] = await mandate.audit({ types: ['task.closed'] });
    assert.deepEqual([event?.actor, event?.data.id, event?.data.user, event?.data.server], ['ann', annsTask, 'ann', 'payments']);

    const again = await cli(['close', annsTask, '--as', 'ann']);
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /is closed already, by ann/);
    assert.equal((await taskRevocations()).length, 1, 'a refused close wrote a revocation');
  });

  it('revoke needs the role admin', async () => {
    const [, bobsTask] = opened as [string, string];
    const byOwner = await cli(['revoke', bobsTask, '--as', 'bob']);
    assert.equal(byOwner.code, 1, byOwner.stderr);
    assert.match(byOwner.stderr, /user "bob" may not revoke tasks: that needs the role admin/);
    assert.equal((await mandate.store.tasks.get(bobsTask))?.status, 'open');

    const byAdmin = await cli(['revoke', bobsTask, '--reason', 'not needed', '--as', 'ada']);
    assert.equal(byAdmin.code, 0, byAdmin.stderr);
    assert.deepEqual(
      [(await mandate.store.tasks.get(bobsTask))?.status, (await taskRevocations()).map((r) => r.value).includes(bobsTask)],
      ['revoked', true],
    );
    const [event] = await mandate.audit({ types: ['task.revoked'] });
    assert.deepEqual([event?.actor, event?.data.id, event?.data.user, event?.data.reason], ['ada', bobsTask, 'bob', 'not needed']);
  });
});
