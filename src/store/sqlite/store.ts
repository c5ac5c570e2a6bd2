/**
 * Embedded store on node:sqlite: the main connection (src/store/sqlite/engine.ts)
 * for reads and the identity plane, and the writer thread (./writer.ts), with
 * its own connection, for audit appends.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import type { TimedEvent } from '../../audit/events.ts';
import type { AuditAppender } from '../audit.ts';
import { messageOf, unavailable } from '../sql/engine.ts';
import { SqlStore } from '../store.ts';
import { StoreUnavailableError, type Durability } from '../types.ts';
import { openDatabase } from './append.ts';
import { SqliteEngine } from './engine.ts';
import { SqliteWriter } from './writer.ts';

export const SQLITE_FILE = 'mandate.db';

export class SqliteStore extends SqlStore {
  private readonly writer: SqliteWriter;

  /** Opens (creating if needed) `${dataDir}/mandate.db`. Throws StoreUnavailableError. */
  constructor(dataDir: string, durability: Durability = 'power') {
    const file = join(dataDir, SQLITE_FILE);
    const description = `sqlite ${file}`;
    try {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new StoreUnavailableError(`cannot create data directory ${dataDir}: ${messageOf(error)}`, { cause: error });
    }
    let engine: SqliteEngine;
    try {
      // Create the file owner-only first: SQLite gives -wal and -shm the same mode.
      closeSync(openSync(file, 'a', 0o600));
      engine = new SqliteEngine(openDatabase(file, durability), description);
    } catch (error) {
      throw new StoreUnavailableError(`cannot open SQLite database ${file}: ${messageOf(error)}`, { cause: error });
    }
    const writer = new SqliteWriter(file, description, durability);
    /** The writer thread, unless the store is closed. */
    const open = (): SqliteWriter => {
      if (!engine.open) throw unavailable(description, 'append audit events', new Error('the store is closed'));
      return writer;
    };
    // Appends run in the writer thread (its own connection), so fsync never blocks this one.
    const appender: AuditAppender = {
      append: (events: readonly TimedEvent[]) => open().append(events),
      record: (events: readonly TimedEvent[]) => open().record(events),
    };
    super(engine, appender);
    this.writer = writer;
  }

  override async close(): Promise<void> {
    await this.writer.close();
    await super.close();
  }
}
