/**
 * The audit log's SQL and rows, shared by both databases and by the SQLite
 * writer thread: query normalisation, the statement texts, row mapping.
 */
import type { AuditRecord } from '../audit/events.ts';
import { AUDIT_LIST_MAX, type AuditQuery } from './types.ts';

export const AUDIT_COLUMNS = 'seq, time, type, server, outcome, body, prev_hash, hash';
/** The last record's seq and hash: what the next append chains on. */
export const AUDIT_HEAD_SQL = 'SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1';
/** One record (SQLite's appends insert row by row, in the writer thread). */
export const AUDIT_INSERT_SQL = `INSERT INTO audit_events (${AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`;

export interface HeadRow {
  /** SQLite gives a number, PostgreSQL a bigint as a string. */
  seq: number | string;
  hash: string;
}

export interface AuditFilter {
  afterSeq: number;
  /** Normalised to `Date#toISOString()` form, the form stored times use; null: no bound. */
  since: string | null;
  /** null: every type. */
  types: { exact: string[]; prefixes: string[] } | null;
  limit: number;
}

export function normalizeQuery(query: AuditQuery = {}): AuditFilter {
  const afterSeq = query.afterSeq ?? 0;
  if (!Number.isSafeInteger(afterSeq)) throw new RangeError('afterSeq must be an integer');
  let since: string | null = null;
  if (query.since !== undefined) {
    const time = new Date(query.since);
    if (Number.isNaN(time.getTime())) throw new RangeError(`since is not an ISO 8601 time: ${query.since}`);
    since = time.toISOString();
  }
  let types: AuditFilter['types'] = null;
  if (query.types !== undefined) {
    types = { exact: [], prefixes: [] };
    for (const entry of query.types) {
      if (entry.endsWith('.*')) types.prefixes.push(entry.slice(0, -1));
      else types.exact.push(entry);
    }
  }
  const wanted = query.limit ?? AUDIT_LIST_MAX;
  if (Number.isNaN(wanted)) throw new RangeError('limit must be a number');
  const limit = Math.max(0, Math.min(Math.trunc(wanted), AUDIT_LIST_MAX));
  return { afterSeq, since, types, limit };
}

/** True when the filter can match nothing (an empty `types` list, or limit 0). */
export function matchesNothing(filter: AuditFilter): boolean {
  if (filter.limit === 0) return true;
  return filter.types !== null && filter.types.exact.length === 0 && filter.types.prefixes.length === 0;
}

export interface AuditRow {
  seq: number | string | bigint;
  time: string;
  type: string;
  server: string | null;
  outcome: string;
  body: string;
  prev_hash: string;
  hash: string;
}

export function toRecord(row: AuditRow): AuditRecord {
  return {
    seq: Number(row.seq),
    time: row.time,
    type: row.type,
    server: row.server,
    outcome: row.outcome,
    body: row.body,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}
