/**
 * The ApprovalsStore contract (src/store/approvals.ts), on SQLite and
 * PostgreSQL: a request round-trips whole (arguments and lists included), an
 * id is taken once, `byBinding` finds the newest live request of a binding,
 * a decision and a use are each a compare-and-set that holds only while the
 * request has not expired, `list` is newest first, filtered and bounded, and
 * `forgetArgs` drops the arguments of requests that ended.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_APPROVAL_ARGS_BYTES, NOT_DECIDED, type ApprovalRecord } from '../../src/store/approvals.ts';
import { freshStores, type StoreHarness } from './contract.ts';

const T = Date.parse('2026-12-03T12:00:00Z');
const MINUTE = 60_000;
const HASH = 'a'.repeat(64);

/** Request n: asked at T + n min, open for 15 min. */
const request = (n: number, extra: Partial<ApprovalRecord> = {}): ApprovalRecord => ({
  id: `ap-00000000000${n}`,
  binding: 'b'.repeat(63) + String(n),
  requester: 'ann',
  clientId: 'client-1',
  server: 'payments',
  tool: 'refund',
  argsHash: HASH,
  args: `{"amount":${n}}`,
  groups: ['finance'],
  policies: ['refunds-need-approval'],
  policySet: 'c'.repeat(64),
  pin: '',
  requestedAt: T + n * MINUTE,
  expiresAt: T + n * MINUTE + 15 * MINUTE,
  ...NOT_DECIDED,
  ...extra,
});

const ids = (records: ApprovalRecord[]): string[] => records.map((r) => r.id);

export function runApprovalsContract(label: string, harness: StoreHarness): void {
  describe(`Approvals store contract: ${label}`, () => {
    const { ready } = freshStores(harness);

    it('a request round-trips whole; an id is taken once; arguments over 16 KiB are refused', async () => {
      const store = await ready();
      assert.equal(await store.approvals.get(request(1).id), null);
      const first = request(1, {
        args: '{"memo":"ünïcode \\"quoted\\"","n":[1,2]}',
        groups: ['finance', 'cfo-office'],
        policies: ['a', 'b'],
        pin: 'd'.repeat(64),
      });
      await store.approvals.create(first);
      assert.deepEqual(await store.approvals.get(first.id), first);
      await assert.rejects(store.approvals.create(request(1)), /already exists/);
      const decided = request(2, { status: 'used', decidedBy: 'bea', decidedAt: T + 3 * MINUTE, reason: 'ok', usedAt: T + 4 * MINUTE });
      await store.approvals.create(decided);
      assert.deepEqual(await store.approvals.get(decided.id), decided);
      const big = request(3, { args: JSON.stringify({ x: 'é'.repeat(MAX_APPROVAL_ARGS_BYTES / 2) }) });
      await assert.rejects(store.approvals.create(big), RangeError);
      const fits = request(4, { args: JSON.stringify({ x: 'y'.repeat(MAX_APPROVAL_ARGS_BYTES - 8) }) });
      assert.equal(Buffer.byteLength(fits.args), MAX_APPROVAL_ARGS_BYTES);
      await store.approvals.create(fits);
      assert.equal((await store.approvals.get(fits.id))?.args, fits.args);
      assert.equal(await store.approvals.get(big.id), null);
    });

    it('decide: pending → approved or denied once, only while unexpired; anything else is false and changes nothing', async () => {
      const store = await ready();
      for (const n of [1, 2, 3]) await store.approvals.create(request(n));
      const expiry = request(1).expiresAt;
      assert.equal(await store.approvals.decide(request(1).id, 'approved', 'bea', 'looks right', expiry), false, 'decided at its expiry (expiresAt is exclusive)');
      assert.deepEqual(await store.approvals.get(request(1).id), request(1), 'a refused decision changed the request');
      assert.equal(await store.approvals.decide(request(1).id, 'approved', 'bea', 'looks right', expiry - 1), true);
      assert.equal(await store.approvals.decide(request(1).id, 'denied', 'cid', 'second thoughts', expiry - 1), false, 'decided twice');
      assert.equal(await store.approvals.decide('ap-ffffffffffff', 'approved', 'bea', 'x', T), false, 'no such request');
      const approved = await store.approvals.get(request(1).id);
      assert.deepEqual([approved?.status, approved?.decidedBy, approved?.decidedAt, approved?.reason, approved?.usedAt], ['approved', 'bea', expiry - 1, 'looks right', null]);
      assert.equal(await store.approvals.decide(request(2).id, 'denied', 'cid', 'not today', T), true);
      assert.equal((await store.approvals.get(request(2).id))?.status, 'denied');
      assert.equal(await store.approvals.consume(request(2).id, T), false, 'a denied request was used');
      assert.equal((await store.approvals.get(request(3).id))?.status, 'pending', 'a decision touched another request');
    });

    it('consume: approved → used once, only while unexpired; a pending request is not used', async () => {
      const store = await ready();
      for (const n of [1, 2]) await store.approvals.create(request(n));
      assert.equal(await store.approvals.consume(request(1).id, T), false, 'a pending request was used');
      await store.approvals.decide(request(1).id, 'approved', 'bea', 'fine', T + 2 * MINUTE);
      await store.approvals.decide(request(2).id, 'approved', 'bea', 'fine', T + 2 * MINUTE);
      assert.equal(await store.approvals.consume(request(2).id, request(2).expiresAt), false, 'used at its expiry');
      assert.equal((await store.approvals.get(request(2).id))?.status, 'approved');
      assert.equal(await store.approvals.consume(request(1).id, T + 3 * MINUTE), true);
      assert.equal(await store.approvals.consume(request(1).id, T + 3 * MINUTE), false, 'used twice');
      assert.equal(await store.approvals.consume('ap-ffffffffffff', T), false, 'no such request');
      const used = await store.approvals.get(request(1).id);
      assert.deepEqual([used?.status, used?.usedAt, used?.decidedBy], ['used', T + 3 * MINUTE, 'bea']);
    });

    it('byBinding: the newest live request of the binding, neither used nor expired', async () => {
      const store = await ready();
      const binding = 'e'.repeat(64);
      assert.equal(await store.approvals.byBinding(binding, T), null);
      await store.approvals.create(request(1, { binding }));
      await store.approvals.create(request(2, { binding }));
      await store.approvals.create(request(3));
      assert.equal((await store.approvals.byBinding(binding, T + 3 * MINUTE))?.id, request(2).id, 'not the newest');
      await store.approvals.decide(request(2).id, 'denied', 'bea', 'no', T + 3 * MINUTE);
      assert.equal((await store.approvals.byBinding(binding, T + 3 * MINUTE))?.status, 'denied', 'a denied request is found');
      // Request 1 expires at T+16 min, request 2 at T+17 min.
      assert.equal((await store.approvals.byBinding(binding, T + 16 * MINUTE + 30_000))?.id, request(2).id);
      assert.equal(await store.approvals.byBinding(binding, T + 17 * MINUTE), null, 'an expired request was found');
      const other = 'f'.repeat(64);
      await store.approvals.create(request(4, { binding: other }));
      await store.approvals.decide(request(4).id, 'approved', 'bea', 'ok', T + 5 * MINUTE);
      assert.equal((await store.approvals.byBinding(other, T + 5 * MINUTE))?.status, 'approved');
      await store.approvals.consume(request(4).id, T + 6 * MINUTE);
      assert.equal(await store.approvals.byBinding(other, T + 6 * MINUTE), null, 'a used request was found');
    });

    it('forgetArgs: a request that ended before the cut (used, denied, expired) loses its arguments, not their hash; one that may still be decided or used keeps them', async () => {
      const store = await ready();
      for (const n of [1, 2, 3, 4, 5, 6]) await store.approvals.create(request(n));
      await store.approvals.decide(request(2).id, 'denied', 'bea', 'no', T + 3 * MINUTE);
      await store.approvals.decide(request(3).id, 'approved', 'bea', 'ok', T + 4 * MINUTE);
      await store.approvals.consume(request(3).id, T + 5 * MINUTE);
      await store.approvals.decide(request(4).id, 'approved', 'bea', 'ok', T + 5 * MINUTE);
      await store.approvals.decide(request(6).id, 'denied', 'bea', 'no', T + 10 * MINUTE);
      // At T+8 min: 2 was denied (T+3) and 3 used (T+5) before it; 1 is pending until T+16, 4 approved and unused until T+19, 5 pending, 6 denied after it.
      assert.equal(await store.approvals.forgetArgs(T + 8 * MINUTE), 2);
      const args = async (n: number) => (await store.approvals.get(request(n).id))?.args;
      assert.deepEqual(await Promise.all([1, 2, 3, 4, 5, 6].map(args)), [request(1).args, '', '', request(4).args, request(5).args, request(6).args]);
      assert.equal((await store.approvals.get(request(2).id))?.argsHash, HASH, 'the hash stays');
      // At T+19 min requests 1 to 4 have expired (the last at T+19), 6 was denied; 5 is open until T+20.
      assert.equal(await store.approvals.forgetArgs(T + 19 * MINUTE), 3);
      assert.deepEqual(await Promise.all([1, 2, 3, 4, 5, 6].map(args)), ['', '', '', '', request(5).args, '']);
      assert.equal(await store.approvals.forgetArgs(T + 19 * MINUTE), 0, 'forgotten once');
    });

    it('list: newest first, filtered by status, pending with now only the unexpired, bounded', async () => {
      const store = await ready();
      for (const n of [2, 4, 1, 3, 5]) await store.approvals.create(request(n));
      await store.approvals.decide(request(3).id, 'approved', 'bea', 'ok', T + 4 * MINUTE);
      await store.approvals.decide(request(4).id, 'denied', 'bea', 'no', T + 4 * MINUTE);
      await store.approvals.decide(request(5).id, 'approved', 'bea', 'ok', T + 6 * MINUTE);
      await store.approvals.consume(request(5).id, T + 6 * MINUTE);
      assert.deepEqual(ids(await store.approvals.list()), [5, 4, 3, 2, 1].map((n) => request(n).id));
      assert.deepEqual(ids(await store.approvals.list({ limit: 2 })), [request(5).id, request(4).id]);
      assert.deepEqual(ids(await store.approvals.list({ status: 'pending' })), [request(2).id, request(1).id]);
      // Request 1 expires at T+16 min.
      assert.deepEqual(ids(await store.approvals.list({ status: 'pending', now: T + 16 * MINUTE })), [request(2).id]);
      assert.deepEqual(ids(await store.approvals.list({ status: 'approved' })), [request(3).id]);
      assert.deepEqual(ids(await store.approvals.list({ status: 'denied' })), [request(4).id]);
      assert.deepEqual(ids(await store.approvals.list({ status: 'used' })), [request(5).id]);
    });
  });
}
