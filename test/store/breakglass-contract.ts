/**
 * The BreakglassStore contract (src/store/breakglass.ts), on SQLite and
 * PostgreSQL: grants round-trip whole, `active` is what is neither closed nor
 * expired, `list` is newest first, `unreviewed` oldest first up to a cut, a
 * close and a review each happen once, and every change moves the counter.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NOT_CLOSED_OR_REVIEWED, type BreakglassRecord } from '../../src/store/breakglass.ts';
import { freshStores, type StoreHarness } from './contract.ts';

const T = Date.parse('2026-12-03T12:00:00Z');
const HOUR = 3_600_000;

const grant = (n: number, extra: Partial<BreakglassRecord> = {}): BreakglassRecord => ({
  id: `bg-00000000000${n}`,
  user: 'ann',
  openedBy: 'ann',
  server: 'payments',
  tools: [],
  ticket: `INC-${n}`,
  reason: 'the database is down',
  openedAt: T + n * HOUR,
  expiresAt: T + n * HOUR + HOUR,
  ...NOT_CLOSED_OR_REVIEWED,
  ...extra,
});

const ids = (records: BreakglassRecord[]): string[] => records.map((r) => r.id);

export function runBreakglassContract(label: string, harness: StoreHarness): void {
  describe(`Break-glass store contract: ${label}`, () => {
    const { ready } = freshStores(harness);

    it('a grant round-trips whole; an id is taken once; list is newest first and bounded', async () => {
      const store = await ready();
      assert.equal(await store.breakglass.get('bg-000000000001'), null);
      const first = grant(1, { user: 'bob', tools: ['refund', 'charge'], ticket: 'INC-42 "quoted"', reason: 'ünïcode reason' });
      await store.breakglass.create(first);
      assert.deepEqual(await store.breakglass.get(first.id), first);
      await assert.rejects(store.breakglass.create(grant(1)), /already exists/);
      await store.breakglass.create(grant(3));
      await store.breakglass.create(grant(2));
      assert.deepEqual(ids(await store.breakglass.list()), [grant(3).id, grant(2).id, grant(1).id]);
      assert.deepEqual(ids(await store.breakglass.list(2)), [grant(3).id, grant(2).id]);
    });

    it('active: neither closed nor expired at the time asked, by openedAt; close happens once', async () => {
      const store = await ready();
      for (const n of [2, 1, 3]) await store.breakglass.create(grant(n));
      // Grant n runs from T+n h to T+(n+1) h.
      assert.deepEqual(ids(await store.breakglass.active(T + 2 * HOUR + 1)), [grant(2).id, grant(3).id], 'grant 1 ended at T+2h');
      assert.deepEqual(ids(await store.breakglass.active(T + 1)), [grant(1).id, grant(2).id, grant(3).id]);
      assert.deepEqual(ids(await store.breakglass.active(T + 2 * HOUR)), [grant(2).id, grant(3).id], 'expiresAt is exclusive');
      assert.equal(await store.breakglass.close(grant(2).id, 'bea', T + 5), true);
      assert.equal(await store.breakglass.close(grant(2).id, 'cid', T + 6), false, 'closed twice');
      assert.equal(await store.breakglass.close('bg-ffffffffffff', 'bea', T + 6), false, 'no such grant');
      assert.deepEqual(ids(await store.breakglass.active(T + 1)), [grant(1).id, grant(3).id]);
      const closed = await store.breakglass.get(grant(2).id);
      assert.deepEqual([closed?.closedAt, closed?.closedBy], [T + 5, 'bea']);
    });

    it('a review is compare-and-set; unreviewed lists the rest up to the cut, oldest first', async () => {
      const store = await ready();
      for (const n of [3, 1, 2]) await store.breakglass.create(grant(n));
      assert.deepEqual(ids(await store.breakglass.unreviewed(T + 2 * HOUR)), [grant(1).id, grant(2).id], 'opened at or before the cut');
      assert.equal(await store.breakglass.review(grant(1).id, 'sam', 'justified', 'outage confirmed', T + 9), true);
      assert.equal(await store.breakglass.review(grant(1).id, 'bea', 'unjustified', 'second look', T + 10), false, 'reviewed twice');
      assert.equal(await store.breakglass.review('bg-ffffffffffff', 'sam', 'justified', 'x', T + 10), false, 'no such grant');
      const reviewed = await store.breakglass.get(grant(1).id);
      assert.deepEqual([reviewed?.reviewedBy, reviewed?.reviewedAt, reviewed?.outcome, reviewed?.reviewReason], ['sam', T + 9, 'justified', 'outage confirmed']);
      assert.deepEqual(ids(await store.breakglass.unreviewed(T + 10 * HOUR)), [grant(2).id, grant(3).id]);
      // A review neither closes the grant nor takes it out of force.
      assert.deepEqual(ids(await store.breakglass.active(T + HOUR + 1)), [grant(1).id, grant(2).id, grant(3).id]);
    });

    it('the change counter starts at 0 and grows with every create, close and review, not with a refused one', async () => {
      const store = await ready();
      assert.equal(await store.breakglass.lastChange(), 0);
      await store.breakglass.create(grant(1));
      const created = await store.breakglass.lastChange();
      assert.ok(created > 0);
      await store.breakglass.close(grant(1).id, 'bea', T + 5);
      const closed = await store.breakglass.lastChange();
      assert.ok(closed > created);
      await store.breakglass.close(grant(1).id, 'bea', T + 6);
      await store.breakglass.review('bg-ffffffffffff', 'sam', 'justified', 'x', T + 7);
      await assert.rejects(store.breakglass.create(grant(1)));
      assert.equal(await store.breakglass.lastChange(), closed, 'a refused change moved the counter');
      await store.breakglass.review(grant(1).id, 'sam', 'unjustified', 'not an emergency', T + 8);
      assert.ok((await store.breakglass.lastChange()) > closed);
    });
  });
}
