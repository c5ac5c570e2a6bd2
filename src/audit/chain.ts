/**
 * The hash chain: pure functions, no I/O. A store seals drafts inside its own
 * transaction (it alone knows the current head), and verification walks the
 * records in order.
 */
import { hash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { AuditRecord, TimedEvent } from './events.ts';

export const GENESIS_HASH = '0'.repeat(64);
export const BODY_VERSION = 1;

export interface ChainHead {
  seq: number;
  hash: string;
}

export function hashRecord(prevHash: string, body: string): string {
  return hash('sha256', `${prevHash}\n${body}`, 'hex');
}

function canonical(value: unknown): string {
  const text = canonicalize(value);
  if (text === undefined) throw new TypeError('audit event is not serialisable as JSON');
  return text;
}

/** Seal events after `head` (null for an empty log), in order. */
export function seal(head: ChainHead | null, events: readonly TimedEvent[]): AuditRecord[] {
  let seq = head?.seq ?? 0;
  let prevHash = head?.hash ?? GENESIS_HASH;
  const records: AuditRecord[] = [];
  for (const event of events) {
    seq += 1;
    const body = canonical({
      v: BODY_VERSION,
      seq,
      time: event.time,
      type: event.type,
      actor: event.actor ?? null,
      server: event.server ?? null,
      tool: event.tool ?? null,
      outcome: event.outcome,
      reason: event.reason ?? null,
      data: event.data ?? {},
    });
    const hash = hashRecord(prevHash, body);
    records.push({
      seq,
      time: event.time,
      type: event.type,
      server: event.server ?? null,
      outcome: event.outcome,
      body,
      prevHash,
      hash,
    });
    prevHash = hash;
  }
  return records;
}

export type VerifyResult =
  | { ok: true; count: number; head: ChainHead | null }
  | { ok: false; count: number; seq: number; reason: string };

/**
 * Checks records in seq order, page by page. Feed it every record from the
 * first; it reports the first record that breaks the chain.
 */
export class ChainVerifier {
  private expectedSeq = 1;
  private prevHash = GENESIS_HASH;
  private failure: { seq: number; reason: string } | null = null;
  private count = 0;

  /** Returns false once the chain is broken; further input is ignored. */
  push(record: AuditRecord): boolean {
    if (this.failure) return false;
    const problem = this.check(record);
    if (problem) {
      this.failure = { seq: Math.min(record.seq, this.expectedSeq), reason: problem };
      return false;
    }
    this.count += 1;
    this.expectedSeq = record.seq + 1;
    this.prevHash = record.hash;
    return true;
  }

  result(): VerifyResult {
    if (this.failure) return { ok: false, count: this.count, ...this.failure };
    const head = this.count === 0 ? null : { seq: this.expectedSeq - 1, hash: this.prevHash };
    return { ok: true, count: this.count, head };
  }

  private check(record: AuditRecord): string | null {
    if (record.seq !== this.expectedSeq) {
      return record.seq > this.expectedSeq
        ? `event ${this.expectedSeq} is missing (next stored event is ${record.seq})`
        : `event ${record.seq} is out of order`;
    }
    if (record.prevHash !== this.prevHash) return 'previous-hash link does not match the preceding event';
    if (hashRecord(record.prevHash, record.body) !== record.hash) return 'hash does not match the event body';
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(record.body) as Record<string, unknown>;
    } catch {
      return 'event body is not valid JSON';
    }
    if (canonical(parsed) !== record.body) return 'event body is not in canonical form';
    if (parsed.seq !== record.seq) return `event body names position ${String(parsed.seq)}`;
    if (parsed.type !== record.type || parsed.time !== record.time) return 'indexed columns differ from the event body';
    if ((parsed.server ?? null) !== record.server || parsed.outcome !== record.outcome) {
      return 'indexed columns differ from the event body';
    }
    return null;
  }
}
