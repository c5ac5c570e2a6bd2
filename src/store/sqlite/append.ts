/**
 * Appending audit events to SQLite: one BEGIN IMMEDIATE transaction that
 * reads the head, seals the events after it and inserts them. Runs in the
 * writer thread (writer.ts), so a commit's fsync never blocks the event loop.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { seal } from '../../audit/chain.ts';
import type { AuditRecord, TimedEvent } from '../../audit/events.ts';
import { AUDIT_HEAD_SQL, AUDIT_INSERT_SQL } from '../query.ts';
import type { Durability } from '../types.ts';

export const BUSY_TIMEOUT_MS = 5000;

/**
 * WAL pages after which a commit runs a checkpoint itself. The checkpoint
 * thread (checkpoint-thread.ts) keeps the WAL far below this; SQLite's
 * default (1000 pages) would put a checkpoint inside a commit several times a
 * second under load. About 40 MB with 4 KiB pages.
 */
export const CHECKPOINT_BACKSTOP_PAGES = 10_000;

/** Opens a connection with the durability settings every connection uses. */
export function openDatabase(file: string, durability: Durability = 'power'): DatabaseSync {
  const db = new DatabaseSync(file, { timeout: BUSY_TIMEOUT_MS, enableForeignKeyConstraints: true });
  try {
    // WAL: a COMMIT is in the WAL file (the operating system has it) before it
    // returns, so it survives the process; FULL also fsyncs every commit.
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.exec('PRAGMA journal_mode = WAL');
    db.exec(`PRAGMA synchronous = ${durability === 'power' ? 'FULL' : 'NORMAL'}`);
    db.exec('PRAGMA foreign_keys = ON');
    db.exec(`PRAGMA wal_autocheckpoint = ${CHECKPOINT_BACKSTOP_PAGES}`);
  } catch (error) {
    db.close();
    throw error;
  }
  return db;
}

export class Appender {
  private readonly db: DatabaseSync;
  private readonly begin: StatementSync;
  private readonly commit: StatementSync;
  private readonly head: StatementSync;
  private readonly insert: StatementSync;

  constructor(db: DatabaseSync) {
    this.db = db;
    this.begin = db.prepare('BEGIN IMMEDIATE');
    this.commit = db.prepare('COMMIT');
    // The same statement texts as the main connection's reads (../query.ts).
    this.head = db.prepare(AUDIT_HEAD_SQL);
    this.insert = db.prepare(AUDIT_INSERT_SQL);
  }

  append(events: readonly TimedEvent[]): AuditRecord[] {
    this.begin.run();
    try {
      const row = this.head.get() as { seq: number; hash: string } | undefined;
      const records = seal(row ? { seq: row.seq, hash: row.hash } : null, events);
      for (const r of records) this.insert.run(r.seq, r.time, r.type, r.server, r.outcome, r.body, r.prevHash, r.hash);
      this.commit.run();
      return records;
    } catch (error) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw error;
    }
  }
}
