/**
 * The audit plane's store: the hash-chained log (migration 1, docs/storage.md).
 * Reads are written once on the engine. Appends go through an appender of
 * the database's own: SQLite's writer thread (src/store/sqlite/writer.ts),
 * so a commit's fsync never blocks the event loop, and PostgreSQL's locked
 * transaction (src/store/postgres/append.ts).
 */
import type { ChainHead } from '../audit/chain.ts';
import type { AuditRecord, TimedEvent } from '../audit/events.ts';
import { AUDIT_COLUMNS, AUDIT_HEAD_SQL, matchesNothing, normalizeQuery, toRecord, type AuditRow, type HeadRow } from './query.ts';
import type { Engine, Param } from './sql/engine.ts';
import type { AuditQuery } from './types.ts';

/** How a database appends: one transaction that reads the head, seals the events after it and inserts them. */
export interface AuditAppender {
  /** Resolves with the sealed records once they are durable. */
  append(events: readonly TimedEvent[]): Promise<AuditRecord[]>;
  /** Resolves once the records are durable, with nothing. */
  record(events: readonly TimedEvent[]): Promise<void>;
}

export class SqlAuditStore {
  private readonly engine: Engine;
  private readonly appender: AuditAppender;

  constructor(engine: Engine, appender: AuditAppender) {
    this.engine = engine;
    this.appender = appender;
  }

  /**
   * Appends events to the audit chain atomically: reads the head, seals the
   * events after it (src/audit/chain.ts `seal`) and inserts them in one
   * transaction, serialised against every other writer (other processes
   * included). Resolves only once the records are durable; rejects with
   * StoreUnavailableError if they are not.
   */
  async append(events: readonly TimedEvent[]): Promise<AuditRecord[]> {
    if (events.length === 0) return [];
    return this.appender.append(events);
  }

  /**
   * The same append, resolving with nothing once the records are durable: the
   * audit log's path, which needs no sealed record back (for SQLite, the
   * writer thread then sends no copy of them to the main thread).
   */
  async record(events: readonly TimedEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.appender.record(events);
  }

  /** Records in seq order (filters: docs/storage.md "Reading"). */
  async list(query?: AuditQuery): Promise<AuditRecord[]> {
    const filter = normalizeQuery(query);
    if (matchesNothing(filter)) return [];
    const where = ['seq > ?'];
    const params: Param[] = [filter.afterSeq];
    if (filter.since !== null) {
      where.push('time >= ?');
      params.push(filter.since);
    }
    if (filter.types) {
      // A list parameter keeps the SQL text fixed, so one cached statement serves every filter.
      // Qualify `type`: SQLite's json_each has a column of that name too.
      const { list, listParam } = this.engine.dialect;
      where.push(`(audit_events.type IN (SELECT value FROM ${list('t')})
        OR EXISTS (SELECT 1 FROM ${list('p')} WHERE substr(audit_events.type, 1, length(p.value)) = p.value))`);
      params.push(listParam(filter.types.exact), listParam(filter.types.prefixes));
    }
    params.push(filter.limit);
    const sql = `SELECT ${AUDIT_COLUMNS} FROM audit_events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`;
    return (await this.engine.all<AuditRow>('list audit events', sql, params)).map(toRecord);
  }

  /** The last record's seq and hash, or null for an empty log. */
  async head(): Promise<ChainHead | null> {
    const row = await this.engine.get<HeadRow>('read audit head', AUDIT_HEAD_SQL);
    return row ? { seq: Number(row.seq), hash: row.hash } : null;
  }
}
