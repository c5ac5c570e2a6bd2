/**
 * The SQLite engine: node:sqlite's main connection (appends have their own,
 * in the writer thread). node:sqlite is synchronous, so a single statement
 * runs at once, in the caller's turn, as fast as a direct call. A
 * transaction's body is async, though: while one is open, every other call
 * waits behind it (they are queued in order), so nothing interleaves with it.
 * BEGIN IMMEDIATE takes the write lock before anything is read; other
 * processes, and the writer thread, wait on it up to the busy timeout.
 *
 * The queue is shared by every main-thread connection of the process, not
 * kept per connection: with two stores on one file (tools, tests), a second
 * connection's write would otherwise wait in SQLite's busy handler, blocking
 * the thread, while the transaction holding the lock could not go on.
 */
import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { SCHEMA_MIGRATIONS_DDL } from '../migrations.ts';
import { isCallerError, unavailable, type Dialect, type Engine, type Param, type Statements, type TransactionOptions } from '../sql/engine.ts';

export const SQLITE_DIALECT: Dialect = {
  bool: (value) => (value ? 1 : 0),
  // json_each's column is `value`; it also has one named `type`, so qualify columns next to it.
  list: (alias) => `json_each(?) AS ${alias}`,
  listParam: (values) => JSON.stringify(values),
  // BEGIN IMMEDIATE already holds the database's write lock.
  forUpdate: '',
  tableExists: "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?",
  async prepareMigrations(tx) {
    await tx.script(SCHEMA_MIGRATIONS_DDL.sqlite);
  },
};

/** The process's main-thread queue: settles when the last queued transaction (or call queued behind one) is done; null when none is. */
const queue: { tail: Promise<void> | null } = { tail: null };

export class SqliteEngine implements Engine {
  readonly kind = 'sqlite' as const;
  readonly dialect = SQLITE_DIALECT;
  /** A local file: trouble shows as a failed call, which the audit log tracks. */
  readonly healthy = true;
  readonly description: string;
  private readonly db: DatabaseSync;
  private readonly statements = new Map<string, StatementSync>();
  /**
   * Statements for a transaction's body: straight on the connection, which the
   * transaction has to itself. (A body must use these, not the engine's own
   * methods, which would queue behind the transaction.)
   */
  private readonly direct: Statements;

  constructor(db: DatabaseSync, description: string) {
    this.db = db;
    this.description = description;
    this.direct = {
      all: async <R>(sql: string, params: readonly Param[] = []) => this.stmt(sql).all(...(params as SQLInputValue[])) as R[],
      get: async <R>(sql: string, params: readonly Param[] = []) => this.stmt(sql).get(...(params as SQLInputValue[])) as R | undefined,
      run: async (sql: string, params: readonly Param[] = []) => Number(this.stmt(sql).run(...(params as SQLInputValue[])).changes),
      script: async (sql: string) => this.db.exec(sql),
    };
  }

  get open(): boolean {
    return this.db.isOpen;
  }

  all<R>(what: string, sql: string, params: readonly Param[] = []): Promise<R[]> {
    return this.now(what, () => this.stmt(sql).all(...(params as SQLInputValue[])) as R[]);
  }

  get<R>(what: string, sql: string, params: readonly Param[] = []): Promise<R | undefined> {
    return this.now(what, () => this.stmt(sql).get(...(params as SQLInputValue[])) as R | undefined);
  }

  run(what: string, sql: string, params: readonly Param[] = []): Promise<number> {
    return this.now(what, () => Number(this.stmt(sql).run(...(params as SQLInputValue[])).changes));
  }

  transaction<T>(what: string, work: (tx: Statements) => Promise<T>, _options?: TransactionOptions): Promise<T> {
    return this.serial(async () => {
      try {
        this.stmt('BEGIN IMMEDIATE').run();
      } catch (error) {
        throw this.failure(what, error);
      }
      try {
        const result = await work(this.direct);
        this.stmt('COMMIT').run();
        return result;
      } catch (error) {
        try {
          if (this.db.isOpen && this.db.isTransaction) this.db.exec('ROLLBACK');
        } catch {
          // The connection is gone; so is the transaction.
        }
        throw this.failure(what, error);
      }
    });
  }

  async close(): Promise<void> {
    // After any transaction in progress, never in the middle of one.
    await this.serial(() => {
      if (this.db.isOpen) this.db.close();
      this.statements.clear();
    });
  }

  /** Runs a single statement at once, unless a transaction is open: then after it. */
  private now<T>(what: string, work: () => T): Promise<T> {
    if (queue.tail !== null) return this.serial(() => this.guarded(what, work));
    return this.guarded(what, work);
  }

  private guarded<T>(what: string, work: () => T): Promise<T> {
    try {
      return Promise.resolve(work());
    } catch (error) {
      return Promise.reject(this.failure(what, error));
    }
  }

  /** Queues `work` behind everything already queued. */
  private serial<T>(work: () => T | Promise<T>): Promise<T> {
    const result = (queue.tail ?? Promise.resolve()).then(work);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    queue.tail = tail;
    void tail.then(() => {
      if (queue.tail === tail) queue.tail = null;
    });
    return result;
  }

  private stmt(sql: string): StatementSync {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  /** Database failures become StoreUnavailableError; caller errors pass through. */
  private failure(what: string, error: unknown): unknown {
    return isCallerError(error) ? error : unavailable(this.description, what, error);
  }
}
