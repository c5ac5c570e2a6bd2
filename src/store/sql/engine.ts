/**
 * The thin layer the plane stores are written on: run a statement with `?`
 * placeholders, get rows or an affected-row count, run a transaction. One
 * implementation per database (src/store/sqlite/engine.ts,
 * src/store/postgres/engine.ts); what really differs between the two
 * dialects is a handful of small pieces (`Dialect`), not whole methods.
 *
 * Failures: a database failure becomes StoreUnavailableError naming what was
 * being done; a caller's TypeError or RangeError (an event that is not JSON,
 * a bad argument) passes through unchanged, since it is the caller's bug and
 * says nothing about the database.
 */
import { StoreUnavailableError, type StoreKind } from '../types.ts';

/**
 * A statement parameter, handed to the driver as it is. Booleans and lists
 * differ per dialect: make them with `Dialect.bool` and `Dialect.listParam`.
 */
export type Param = string | number | bigint | boolean | null | readonly (string | number | null)[];

/** Statements on one connection: what a transaction's body gets. Errors are raw; the transaction maps them. */
export interface Statements {
  /** Every row. */
  all<R>(sql: string, params?: readonly Param[]): Promise<R[]>;
  /** The first row, or undefined. */
  get<R>(sql: string, params?: readonly Param[]): Promise<R | undefined>;
  /** How many rows the statement inserted, changed or deleted. */
  run(sql: string, params?: readonly Param[]): Promise<number>;
  /** Several statements without parameters (migration scripts), as written: no placeholder rewriting. */
  script(sql: string): Promise<void>;
}

/**
 * Named locks, serialising one kind of work across every process and node on
 * the database. SQLite: every transaction already holds the write lock (BEGIN
 * IMMEDIATE), so the name changes nothing. PostgreSQL: a transaction-scoped
 * advisory lock, released by COMMIT or ROLLBACK (or by the server if the
 * connection dies).
 */
export type Lock = 'audit' | 'migrations' | 'revocations';

export interface TransactionOptions {
  lock?: Lock;
  /**
   * Schema migrations: not bounded by the statement timeout (DDL on a large
   * table may take minutes), only by a generous safety limit.
   */
  slow?: boolean;
}

/** The small pieces in which the two dialects really differ. */
export interface Dialect {
  /** A boolean column's value: SQLite stores 0/1, PostgreSQL a boolean. */
  bool(value: boolean): Param;
  /**
   * A table expression listing a list parameter's elements in one column
   * named `value`, under `alias` (SQLite `json_each(?)`, PostgreSQL
   * `unnest(?::text[])`); bind the list with `listParam`. The SQL text stays
   * the same whatever the list's length, so one cached statement serves all.
   */
  list(alias: string): string;
  listParam(values: readonly string[]): Param;
  /** Appended to a SELECT of a row the transaction will change: a row lock where one is needed. */
  readonly forUpdate: string;
  /** A query with one `?` (a table name) answering `n` = 1 if the table exists, 0 if not, without changing anything. */
  readonly tableExists: string;
  /** Runs inside the migration transaction before anything is read: creates what migrations are recorded in. */
  prepareMigrations(tx: Statements): Promise<void>;
}

/** One database: single statements (each guarded), transactions, health. */
export interface Engine {
  readonly kind: StoreKind;
  /** Human description for logs and errors, without credentials. */
  readonly description: string;
  readonly dialect: Dialect;
  /** False while the engine has seen a sign of trouble and no query has succeeded since. */
  readonly healthy: boolean;
  /** False once closed. */
  readonly open: boolean;
  all<R>(what: string, sql: string, params?: readonly Param[]): Promise<R[]>;
  get<R>(what: string, sql: string, params?: readonly Param[]): Promise<R | undefined>;
  run(what: string, sql: string, params?: readonly Param[]): Promise<number>;
  /**
   * Runs `work` in one transaction: committed if it resolves, rolled back if
   * it throws. Rejects with StoreUnavailableError naming `what` (a caller's
   * TypeError or RangeError passes through).
   */
  transaction<T>(what: string, work: (tx: Statements) => Promise<T>, options?: TransactionOptions): Promise<T>;
  close(): Promise<void>;
}

/**
 * A change a transaction refused on purpose (a compare-and-set that lost, a
 * row that is no longer in the state it needs): it says nothing about the
 * database, so it passes through a transaction unchanged.
 */
export class ConflictError extends Error {
  override readonly name: string = 'ConflictError';
}

/** A caller's bug (not JSON, a bad argument) or a refused change, passed through rather than reported as an outage. */
export function isCallerError(error: unknown): boolean {
  return error instanceof TypeError || error instanceof RangeError || error instanceof ConflictError;
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** `description: what failed: message`, with every secret (a database password) replaced by `***`. */
export function unavailable(description: string, what: string, error: unknown, secrets: readonly string[] = []): StoreUnavailableError {
  let message = `${description}: ${what} failed: ${messageOf(error)}`;
  for (const secret of secrets) message = message.split(secret).join('***');
  return new StoreUnavailableError(message, { cause: error });
}

/**
 * `?` placeholders rewritten to PostgreSQL's `$1`, `$2`, … in order. A `?`
 * inside a quoted string or identifier is left alone. Callers cache the result
 * per statement text.
 */
export function positional(sql: string): string {
  let out = '';
  let n = 0;
  let quote: string | null = null;
  for (const char of sql) {
    if (quote !== null) {
      if (char === quote) quote = null;
    } else if (char === "'" || char === '"') {
      quote = char;
    } else if (char === '?') {
      n += 1;
      out += `$${n}`;
      continue;
    }
    out += char;
  }
  return out;
}
