/** Counted refusals: the first of a kind per interval is recorded at once, the rest counted into one summary when the interval ends. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditLog } from '../../src/audit/log.ts';
import type { IdentityEvent } from '../../src/audit/events.ts';
import { RefusalSummaries } from '../../src/audit/summary.ts';

/** Stands in for the audit log: the store's part is not the subject here, what is emitted when is. */
function recorder(): { audit: AuditLog; events: IdentityEvent[] } {
  const events: IdentityEvent[] = [];
  return { audit: { emit: (event: IdentityEvent) => void events.push(event) } as unknown as AuditLog, events };
}

const refusal = (address: string): IdentityEvent => ({ type: 'auth.rejected', outcome: 'denied', reason: 'missing', data: { address } });

describe('RefusalSummaries', () => {
  it('writes the first of a kind at once and one summary per kind at the end of each interval', (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'] });
    const { audit, events } = recorder();
    const summaries = new RefusalSummaries(audit, 1000);
    for (let i = 0; i < 5; i += 1) summaries.record('a', refusal('10.0.0.1'));
    summaries.record('b', refusal('10.0.0.2'));
    assert.deepEqual(events.map((e) => e.data?.count), [1, 1], 'one row per kind so far');
    t.mock.timers.tick(1000);
    assert.equal(events.length, 3, 'kind b had no more: no summary for it');
    assert.equal(events[2]?.data?.count, 4);
    assert.equal(events[2]?.data?.summary, true);
    assert.equal(events[2]?.data?.address, '10.0.0.1');
    // A new interval: the first of a kind is recorded at once again.
    summaries.record('a', refusal('10.0.0.1'));
    assert.equal(events.length, 4);
    t.mock.timers.tick(1000);
    assert.equal(events.length, 4, 'nothing more to count');
    summaries.stop();
  });

  it('counts at most 1000 kinds one by one per interval; the rest share one overflow count', (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'] });
    const { audit, events } = recorder();
    const summaries = new RefusalSummaries(audit, 1000);
    for (let i = 0; i < 1500; i += 1) summaries.record(`kind-${i}`, refusal(`10.0.${i >> 8}.${i & 255}`));
    assert.equal(events.length, 1000);
    t.mock.timers.tick(1000);
    const overflow = events.slice(1000);
    assert.equal(overflow.length, 1);
    assert.equal(overflow[0]?.data?.count, 500);
    summaries.stop();
  });

  it('stop() writes the counts of the interval in progress', () => {
    const { audit, events } = recorder();
    const summaries = new RefusalSummaries(audit, 60_000);
    summaries.record('a', refusal('x'));
    summaries.record('a', refusal('x'));
    summaries.stop();
    assert.deepEqual(events.map((e) => e.data?.count), [1, 1]);
  });
});
