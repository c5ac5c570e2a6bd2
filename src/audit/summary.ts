/**
 * Counted summaries of repeated refusals. A flood of requests without a
 * valid token, or over a limit, must not fill the audit log one row each:
 * the first refusal of a kind (same event type, source and reason) in an
 * interval is recorded as it happens; the rest are counted, and at the end
 * of the interval one event of the same type says how many more there were
 * (`data.count`, with `data.summary: true` and the interval's bounds).
 */
import type { AuditLog } from './log.ts';
import type { IdentityEvent } from './events.ts';

/** Distinct kinds counted per interval at most; the rest share one overflow count. */
const MAX_KINDS = 1000;
const OVERFLOW = '\u0000overflow';

interface Tally {
  /** The last event of the kind, as the summary's pattern. */
  event: IdentityEvent;
  count: number;
}

export class RefusalSummaries {
  private tallies = new Map<string, Tally>();
  private since = new Date();
  private readonly audit: AuditLog;
  private timer: NodeJS.Timeout | null = null;
  private intervalMs = 60_000;

  constructor(audit: AuditLog, intervalMs: number) {
    this.audit = audit;
    this.interval = intervalMs;
  }

  /** The interval in force; a reload may change it (from the next interval on). */
  set interval(ms: number) {
    if (ms === this.intervalMs && this.timer) return;
    this.intervalMs = ms;
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => this.flush(), ms);
    this.timer.unref();
  }

  /** Records `event` now if it is the first of its kind in this interval; else counts it. */
  record(kind: string, event: IdentityEvent): void {
    const tally = this.tallies.get(kind);
    if (tally !== undefined) {
      tally.count += 1;
      tally.event = event;
      return;
    }
    if (this.tallies.size >= MAX_KINDS) {
      const overflow = this.tallies.get(OVERFLOW);
      if (overflow) overflow.count += 1;
      else this.tallies.set(OVERFLOW, { event: { ...event, data: { ...event.data, detail: 'more kinds of refusal than are counted one by one' } }, count: 1 });
      return;
    }
    this.tallies.set(kind, { event, count: 0 });
    this.audit.emit({ ...event, data: { ...event.data, count: 1 } });
  }

  /** Writes one summary event per kind that was refused more than once in the interval. */
  flush(): void {
    const until = new Date();
    const tallies = this.tallies;
    this.tallies = new Map();
    const since = this.since.toISOString();
    this.since = until;
    for (const { event, count } of tallies.values()) {
      if (count === 0) continue;
      this.audit.emit({ ...event, data: { ...event.data, count, summary: true, since, until: until.toISOString() } });
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.flush();
  }
}
