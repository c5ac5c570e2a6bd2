/**
 * The one storage interface. Two implementations: embedded SQLite (node:sqlite,
 * the default) and PostgreSQL (several gateway nodes). One contract test suite
 * (test/store/contract.ts) runs against both.
 */
import type { AuditRecord, TimedEvent } from '../audit/events.ts';
import type { ChainHead } from '../audit/chain.ts';
import type { IdentityStore } from './identity-types.ts';
export type * from './identity-types.ts';

export type StoreKind = 'sqlite' | 'postgres';
export type Durability = 'process' | 'power';

export interface AuditQuery {
  /** Only records with seq greater than this. */
  afterSeq?: number;
  /** Only records at or after this ISO 8601 time. */
  since?: string;
  /** Only these types; an entry ending in `.*` matches a prefix (`session.*`). */
  types?: readonly string[];
  /** At most this many records (default and cap: 10,000). */
  limit?: number;
}

export interface MigrationState {
  version: number;
  name: string;
  appliedAt: string;
}

export interface Store extends IdentityStore {
  readonly kind: StoreKind;
  /** Human description for logs, without credentials (path, or host/db). */
  readonly description: string;

  /** Applies pending versioned migrations, in order, each in a transaction. Safe to run concurrently from several processes. */
  migrate(): Promise<MigrationState[]>;
  /** Migrations applied so far, in order. */
  migrations(): Promise<MigrationState[]>;
  /** Throws StoreUnavailableError if the store cannot answer now. */
  ping(): Promise<void>;
  /**
   * False once the store has seen a sign of trouble (a lost connection, a
   * failed query) and until a query succeeds again. Callers that must not act
   * without a durable record ping first while it is false.
   */
  readonly healthy: boolean;

  /**
   * Appends events to the audit chain atomically: reads the head, seals the
   * events after it (src/audit/chain.ts `seal`) and inserts them in one
   * transaction, serialised against every other writer (other processes
   * included). Resolves only once the records are durable; rejects with
   * StoreUnavailableError if they are not.
   */
  appendAudit(events: readonly TimedEvent[]): Promise<AuditRecord[]>;
  /**
   * The same append, resolving with nothing once the records are durable: the
   * audit log's path, which needs no sealed record back (for SQLite, the
   * writer thread then sends no copy of them to the main thread).
   */
  recordAudit(events: readonly TimedEvent[]): Promise<void>;
  /** Records in seq order. */
  listAudit(query?: AuditQuery): Promise<AuditRecord[]>;
  /** The last record's seq and hash, or null for an empty log. */
  auditHead(): Promise<ChainHead | null>;

  close(): Promise<void>;
}

/** The store cannot be reached or refused a write. Requests fail closed on it. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export const AUDIT_LIST_MAX = 10_000;

export interface OpenStoreOptions {
  /** `postgres://` or `postgresql://` selects PostgreSQL; absent selects SQLite in dataDir. */
  databaseUrl?: string;
  /** Directory for the SQLite file (`mandate.db`); created with mode 0700 if missing. */
  dataDir: string;
  /** PostgreSQL schema to use (created on migrate if missing); default: the server's search_path. */
  schema?: string;
  /** PostgreSQL pool size (default 10). */
  poolSize?: number;
  /**
   * SQLite only. `power` (default): a committed event survives an
   * operating-system crash or power loss (synchronous=FULL: fsync on every
   * commit). `process`: it survives a crash of the gateway process only
   * (WAL, synchronous=NORMAL), at a fraction of the cost per commit.
   */
  durability?: Durability;
}
