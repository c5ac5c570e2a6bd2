/**
 * The TasksStore contract (src/store/tasks.ts), on SQLite and PostgreSQL:
 * tasks round-trip whole, `list` is newest first and filters by user and
 * status, `end` happens once and writes a `task` revocation in the same
 * transaction, `expire` marks only open tasks past their expiry, and every
 * change moves the counter. Also migration 8's widening of `revocations.kind`
 * (a table rebuild on SQLite): rows and seqs kept, seqs never handed out again.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { TaskRecord } from '../../src/store/tasks.ts';
import { freshStores, type StoreHarness } from './contract.ts';

const T = Date.parse('2026-12-03T12:00:00Z');
const HOUR = 3_600_000;

const task = (n: number, extra: Partial<TaskRecord> = {}): TaskRecord => ({
  id: `tk-00000000000${n}`,
  user: 'ann',
  clientId: null,
  purpose: 'rotate the payments keys',
  ticket: null,
  server: 'payments',
  tools: [],
  status: 'open',
  openedAt: T + n * HOUR,
  expiresAt: T + n * HOUR + HOUR,
  endedAt: null,
  endedBy: null,
  ...extra,
});

const ids = (records: TaskRecord[]): string[] => records.map((r) => r.id);

export function runTasksContract(label: string, harness: StoreHarness): void {
  describe(`Tasks store contract: ${label}`, () => {
    const { ready, open } = freshStores(harness);

    it('a task round-trips whole; an id is taken once; list is newest first, filtered and bounded', async () => {
      const store = await ready();
      assert.equal(await store.tasks.get('tk-000000000001'), null);
      const first = task(1, { user: 'bob', clientId: 'client-1', tools: ['refund', 'charge'], ticket: 'CHG-42 "quoted"', purpose: 'ünïcode purpose' });
      await store.tasks.create(first);
      assert.deepEqual(await store.tasks.get(first.id), first);
      await assert.rejects(store.tasks.create(task(1)), /already exists/);
      await store.tasks.create(task(3));
      await store.tasks.create(task(2));
      assert.deepEqual(ids(await store.tasks.list()), [task(3).id, task(2).id, task(1).id]);
      assert.deepEqual(ids(await store.tasks.list({ limit: 2 })), [task(3).id, task(2).id]);
      assert.deepEqual(ids(await store.tasks.list({ user: 'ann' })), [task(3).id, task(2).id]);
      assert.deepEqual(ids(await store.tasks.list({ user: 'bob', status: 'open' })), [task(1).id]);
      assert.deepEqual(await store.tasks.list({ status: 'closed' }), []);
    });

    it('end is compare-and-set from open, and writes a task revocation (until the task expires) in the same transaction', async () => {
      const store = await ready();
      for (const n of [1, 2]) await store.tasks.create(task(n));
      assert.equal(await store.tasks.end(task(1).id, 'closed', 'ann', T + 5), true);
      assert.equal(await store.tasks.end(task(1).id, 'revoked', 'bea', T + 6), false, 'ended twice');
      assert.equal(await store.tasks.end('tk-ffffffffffff', 'closed', 'ann', T + 6), false, 'no such task');
      assert.equal(await store.tasks.end(task(2).id, 'revoked', 'bea', T + 7), true);
      const closed = await store.tasks.get(task(1).id);
      assert.deepEqual([closed?.status, closed?.endedAt, closed?.endedBy], ['closed', T + 5, 'ann']);
      const revoked = await store.tasks.get(task(2).id);
      assert.deepEqual([revoked?.status, revoked?.endedAt, revoked?.endedBy], ['revoked', T + 7, 'bea']);
      const revocations = await store.identity.listRevocations(0, T);
      assert.deepEqual(
        revocations.map(({ kind, value, revokedAt, expiresAt }) => ({ kind, value, revokedAt, expiresAt })),
        [
          { kind: 'task', value: task(1).id, revokedAt: T + 5, expiresAt: task(1).expiresAt },
          { kind: 'task', value: task(2).id, revokedAt: T + 7, expiresAt: task(2).expiresAt },
        ],
        'one revocation per ended task, none for a refused end',
      );
      assert.deepEqual(ids(await store.tasks.list({ status: 'open' })), []);
    });

    it('expire marks open tasks at or past their expiry, and only those; they are not ended again', async () => {
      const store = await ready();
      for (const n of [1, 2, 3]) await store.tasks.create(task(n));
      await store.tasks.end(task(1).id, 'closed', 'ann', T + HOUR + 1);
      // Task n runs from T+n h to T+(n+1) h.
      assert.equal(await store.tasks.expire(T + 3 * HOUR), 1, 'task 1 was closed, task 2 expired at T+3h, task 3 runs on');
      assert.equal(await store.tasks.expire(T + 3 * HOUR), 0, 'expired twice');
      const expired = await store.tasks.get(task(2).id);
      assert.deepEqual([expired?.status, expired?.endedAt, expired?.endedBy], ['expired', task(2).expiresAt, 'system']);
      assert.equal((await store.tasks.get(task(1).id))?.status, 'closed');
      assert.equal((await store.tasks.get(task(3).id))?.status, 'open');
      assert.equal(await store.tasks.end(task(2).id, 'closed', 'ann', T + 3 * HOUR), false, 'an expired task is not closed');
      assert.deepEqual(ids(await store.tasks.list({ status: 'expired' })), [task(2).id]);
    });

    it('the change counter starts at 0 and grows with every create, end and expiry, not with a refused one', async () => {
      const store = await ready();
      assert.equal(await store.tasks.lastChange(), 0);
      await store.tasks.create(task(1));
      const created = await store.tasks.lastChange();
      assert.ok(created > 0);
      await store.tasks.end(task(1).id, 'closed', 'ann', T + 5);
      const ended = await store.tasks.lastChange();
      assert.ok(ended > created);
      await store.tasks.end(task(1).id, 'closed', 'ann', T + 6);
      await assert.rejects(store.tasks.create(task(1)));
      assert.equal(await store.tasks.expire(T + 10 * HOUR), 0);
      assert.equal(await store.tasks.lastChange(), ended, 'a refused change moved the counter');
      await store.tasks.create(task(2));
      const before = await store.tasks.lastChange();
      assert.equal(await store.tasks.expire(T + 10 * HOUR), 1);
      assert.ok((await store.tasks.lastChange()) > before);
    });

    it('migration 8 keeps every revocation and its seq, and a purged seq is never handed out again', async () => {
      const first = await ready();
      const now = Date.now();
      const kept = await first.identity.addRevocation({ kind: 'user', value: 'ann', revokedAt: now, expiresAt: now + HOUR });
      const also = await first.identity.addRevocation({ kind: 'consent', value: 'ann\nclient-1', revokedAt: now, expiresAt: now + 2 * HOUR });
      const purged = await first.identity.addRevocation({ kind: 'jti', value: 'j1', revokedAt: now - 2, expiresAt: now - 1 });
      assert.equal(await first.identity.purgeExpired(now), 1);
      // Take the database back to version 7 (as far as migration 8 cares) and migrate again.
      await harness.exec(
        'DROP TABLE tasks; DROP TABLE task_changes; DELETE FROM schema_migrations WHERE version = 8; ' + (label === 'sqlite'
          ? ''
          : "ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check, ADD CONSTRAINT revocations_kind_check CHECK (kind IN ('jti', 'grant', 'client', 'user', 'consent'));"),
      );
      const second = await open();
      assert.deepEqual(
        (await second.migrate()).map((m) => m.version),
        [1, 2, 3, 4, 5, 6, 7, 8],
      );
      assert.deepEqual(await second.identity.listRevocations(0, now), [kept, also], 'the rows and their seqs survive the migration');
      const next = await second.identity.addRevocation({ kind: 'task', value: 'tk-000000000001', revokedAt: now, expiresAt: now + HOUR });
      assert.ok(next.seq > purged.seq, `seq ${next.seq} handed out again after ${purged.seq}`);
      await assert.rejects(second.identity.addRevocation({ kind: 'nonsense' as 'task', value: 'x', revokedAt: now, expiresAt: now + HOUR }));
      const indexes = await harness.rows(
        label === 'sqlite' ? "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'revocations_expires'" : "SELECT indexname AS name FROM pg_indexes WHERE indexname = 'revocations_expires' AND schemaname = current_schema()",
      );
      assert.equal(indexes.length, 1, 'the expiry index was not recreated');
    });
  });
}
