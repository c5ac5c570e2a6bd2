/**
 * The storage interface: one store per plane (`audit`, `identity`, `catalog`,
 * `credentials`, `connections`, `breakglass`, `approvals`, `tasks`), each written once on a thin per-database
 * engine (src/store/sql/engine.ts), with two databases: embedded SQLite
 * (node:sqlite, the default) and PostgreSQL (several gateway nodes). One
 * contract suite per plane (test/store/contract.ts, identity-contract.ts)
 * runs against both. How to add a plane: docs/storage.md.
 */
import type { SqlApprovalsStore } from './approvals.ts';
import type { SqlAuditStore } from './audit.ts';
import type { SqlBreakglassStore } from './breakglass.ts';
import type { SqlCatalogStore } from './catalog.ts';
import type { SqlConnectionsStore } from './connections.ts';
import type { SqlCredentialsStore } from './credentials.ts';
import type { SqlIdentityStore } from './identity.ts';
import type { SqlTasksStore } from './tasks.ts';
export type * from './identity-types.ts';

/** A plane store's interface: the public methods of its one implementation, so a method is added in one place. */
type PlaneOf<T> = { [K in keyof T]: T[K] };

/** The hash-chained audit log: append, record, list, head (src/store/audit.ts). */
export type AuditStore = PlaneOf<SqlAuditStore>;
/** What the authorization server keeps (src/store/identity.ts). */
export type IdentityStore = PlaneOf<SqlIdentityStore>;
/** The server catalog: entries, versions, proposals, drift, history (src/store/catalog.ts). */
export type CatalogStore = PlaneOf<SqlCatalogStore>;
/** Upstream secrets, sealed (src/store/credentials.ts). */
export type CredentialsStore = PlaneOf<SqlCredentialsStore>;
/** Per-user upstream connections, sealed (src/store/connections.ts). */
export type ConnectionsStore = PlaneOf<SqlConnectionsStore>;
/** Emergency access grants and their reviews (src/store/breakglass.ts). */
export type BreakglassStore = PlaneOf<SqlBreakglassStore>;
/** Requests for a human's approval of one call, and their decisions (src/store/approvals.ts). */
export type ApprovalsStore = PlaneOf<SqlApprovalsStore>;
/** Tasks: bounded pieces of work a user's tokens are bound to (src/store/tasks.ts). */
export type TasksStore = PlaneOf<SqlTasksStore>;

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

export interface Store {
  readonly kind: StoreKind;
  /** Human description for logs, without credentials (path, or host/db). */
  readonly description: string;
  /**
   * False once the store has seen a sign of trouble (a lost connection, a
   * failed query) and until a query succeeds again. Callers that must not act
   * without a durable record ping first while it is false.
   */
  readonly healthy: boolean;

  readonly audit: AuditStore;
  readonly identity: IdentityStore;
  readonly catalog: CatalogStore;
  readonly credentials: CredentialsStore;
  readonly connections: ConnectionsStore;
  readonly breakglass: BreakglassStore;
  readonly approvals: ApprovalsStore;
  readonly tasks: TasksStore;

  /**
   * Applies pending versioned migrations, in order, each in a transaction;
   * returns every applied migration. Safe to run concurrently from several
   * processes. Changes nothing (no DDL at all) when the schema is current;
   * refuses (SchemaError) a schema newer than this build.
   */
  migrate(): Promise<MigrationState[]>;
  /** Migrations applied so far, in order. */
  migrations(): Promise<MigrationState[]>;
  /** How the database's schema compares with this build's migrations; changes nothing. */
  schema(): Promise<SchemaState>;
  /** Throws StoreUnavailableError if the store cannot answer now. Concurrent pings share one round trip. */
  ping(): Promise<void>;

  close(): Promise<void>;
}

export interface SchemaState {
  /** Migrations recorded in the database, in order. */
  applied: MigrationState[];
  /** This build's migrations the database has not had yet, in order. */
  pending: { version: number; name: string }[];
  /** Recorded migrations this build does not know: a newer build migrated the database. */
  unknown: MigrationState[];
}

/** The database's schema does not match this build: behind (run `mandate migrate`) or newer. Nothing was changed. */
export class SchemaError extends Error {
  override readonly name = 'SchemaError';
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
  /** PostgreSQL: the longest wait for a connection, ms (default 3000; `store.connectTimeoutMs`). */
  connectTimeoutMs?: number;
  /** PostgreSQL: the longest one statement may run, ms (default 5000; `store.statementTimeoutMs`). */
  statementTimeoutMs?: number;
  /**
   * SQLite only. `power` (default): a committed event survives an
   * operating-system crash or power loss (synchronous=FULL: fsync on every
   * commit). `process`: it survives a crash of the gateway process only
   * (WAL, synchronous=NORMAL), at a fraction of the cost per commit.
   */
  durability?: Durability;
}
