/**
 * Reading a store's audit log in the test's own process, without running
 * `mandate audit list` or `audit verify`: the records as the CLI prints them,
 * and whether their hash chain verifies. `auditRecords` is the one place the
 * tests outside test/store read the store's audit records.
 */
import { ChainVerifier, type VerifyResult } from '../../src/audit/chain.ts';
import type { AuditRecord } from '../../src/audit/events.ts';
import type { Store } from '../../src/store/types.ts';

/** One audit event as `mandate audit list --json` prints it. */
export interface AuditEntry {
  seq: number;
  type: string;
  actor?: string | null;
  server: string | null;
  tool: string | null;
  outcome: string;
  reason: string | null;
  data: Record<string, unknown>;
  hash: string;
}

export interface AuditFilter {
  /** Event types; an entry ending in `.*` matches a prefix, as `--type` does. */
  types?: readonly string[];
  limit?: number;
}

/** The store's audit records, oldest first (at most 10,000 unless `limit` says otherwise). */
export function auditRecords(store: Store, filter: AuditFilter = {}): Promise<AuditRecord[]> {
  return store.audit.list({ types: filter.types, limit: filter.limit ?? 10_000 });
}

/** Records as `mandate audit list --json` prints them: the event body and its hash. */
export function auditEntries(records: readonly AuditRecord[]): AuditEntry[] {
  return records.map((record) => ({ ...(JSON.parse(record.body) as Omit<AuditEntry, 'hash'>), hash: record.hash }));
}

/** What `mandate audit verify` says of these records (the whole log, oldest first). */
export function verifyChain(records: readonly AuditRecord[]): VerifyResult {
  const verifier = new ChainVerifier();
  for (const record of records) if (!verifier.push(record)) break;
  return verifier.result();
}
