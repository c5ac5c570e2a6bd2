/**
 * Embedded store on node:sqlite. Every call is synchronous underneath, so
 * calls in one process never interleave; BEGIN IMMEDIATE (with a busy
 * timeout) serialises writers in other processes.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import type { ChainHead } from '../../audit/chain.ts';
import type { AuditRecord, TimedEvent } from '../../audit/events.ts';
import type { IdentityStore } from '../identity-types.ts';
import { MIGRATIONS, SCHEMA_MIGRATIONS_DDL } from '../migrations.ts';
import { AUDIT_COLUMNS, matchesNothing, normalizeQuery, toRecord, type AuditRow } from '../query.ts';
import { openDatabase } from './append.ts';
import { SqliteIdentity } from './identity.ts';
import { SqliteWriter } from './writer.ts';
import { StoreUnavailableError, type Durability, type AuditQuery, type MigrationState, type Store } from '../types.ts';

export const SQLITE_FILE = 'mandate.db';

interface MigrationRow {
  version: number;
  name: string;
  applied_at: string;
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  /** A local file: trouble shows as a failed write, which the audit log tracks. */
  readonly healthy = true;
  readonly description: string;
  private readonly db: DatabaseSync;
  private readonly statements = new Map<string, StatementSync>();
  private readonly writer: SqliteWriter;
  private readonly identity: SqliteIdentity;

  /** Opens (creating if needed) `${dataDir}/mandate.db`. Throws StoreUnavailableError. */
  constructor(dataDir: string, durability: Durability = 'power') {
    const file = join(dataDir, SQLITE_FILE);
    this.description = `sqlite ${file}`;
    try {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new StoreUnavailableError(`cannot create data directory ${dataDir}: ${messageOf(error)}`, { cause: error });
    }
    try {
      // Create the file owner-only first: SQLite gives -wal and -shm the same mode.
      closeSync(openSync(file, 'a', 0o600));
      this.db = openDatabase(file, durability);
    } catch (error) {
      throw new StoreUnavailableError(`cannot open SQLite database ${file}: ${messageOf(error)}`, { cause: error });
    }
    this.writer = new SqliteWriter(file, this.description, durability);
    this.identity = new SqliteIdentity({
      stmt: this.stmt.bind(this),
      guard: this.guard.bind(this),
      transaction: this.transaction.bind(this),
    });
  }

  async migrate(): Promise<MigrationState[]> {
    for (const migration of MIGRATIONS) {
      this.transaction('migrate', () => {
        this.db.exec(SCHEMA_MIGRATIONS_DDL.sqlite);
        if (this.stmt('SELECT 1 FROM schema_migrations WHERE version = ?').get(migration.version)) return;
        this.db.exec(migration.sqlite);
        this.stmt('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)')
          .run(migration.version, migration.name, new Date().toISOString());
      });
    }
    return this.migrations();
  }

  async migrations(): Promise<MigrationState[]> {
    return this.guard('read migrations', () => {
      const exists = this.stmt("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get();
      if (!exists) return [];
      const rows = this.stmt('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all();
      return (rows as unknown as MigrationRow[]).map((r) => ({ version: r.version, name: r.name, appliedAt: r.applied_at }));
    });
  }

  async ping(): Promise<void> {
    this.guard('ping', () => this.stmt('SELECT 1').get());
  }

  /** Appends run in the writer thread (its own connection), so fsync never blocks this one. */
  async appendAudit(events: readonly TimedEvent[]): Promise<AuditRecord[]> {
    if (events.length === 0) return [];
    return this.openWriter().append(events);
  }

  async recordAudit(events: readonly TimedEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.openWriter().record(events);
  }

  /** The writer thread, unless the store is closed. */
  private openWriter(): SqliteWriter {
    if (!this.db.isOpen) throw this.unavailable('append audit events', new Error('the store is closed'));
    return this.writer;
  }

  async listAudit(query?: AuditQuery): Promise<AuditRecord[]> {
    const filter = normalizeQuery(query);
    if (matchesNothing(filter)) return [];
    const where = ['seq > ?'];
    const params: SQLInputValue[] = [filter.afterSeq];
    if (filter.since !== null) {
      where.push('time >= ?');
      params.push(filter.since);
    }
    if (filter.types) {
      // json_each keeps the SQL text fixed, so the statement cache stays small.
      // Qualify `type`: json_each has a column of that name too.
      where.push(`(audit_events.type IN (SELECT value FROM json_each(?))
        OR EXISTS (SELECT 1 FROM json_each(?) AS p
                   WHERE substr(audit_events.type, 1, length(p.value)) = p.value))`);
      params.push(JSON.stringify(filter.types.exact), JSON.stringify(filter.types.prefixes));
    }
    params.push(filter.limit);
    const sql = `SELECT ${AUDIT_COLUMNS} FROM audit_events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`;
    return this.guard('list audit events', () => (this.stmt(sql).all(...params) as unknown as AuditRow[]).map(toRecord));
  }

  async auditHead(): Promise<ChainHead | null> {
    return this.guard('read audit head', () => this.head());
  }

  async close(): Promise<void> {
    await this.writer.close();
    if (this.db.isOpen) this.db.close();
    this.statements.clear();
  }

  // --- IdentityStore: delegated to ./identity.ts ---
  oidcUpsert(...a: Args<'oidcUpsert'>) { return this.identity.oidcUpsert(...a); }
  oidcFind(...a: Args<'oidcFind'>) { return this.identity.oidcFind(...a); }
  oidcFindByUid(...a: Args<'oidcFindByUid'>) { return this.identity.oidcFindByUid(...a); }
  oidcFindByUserCode(...a: Args<'oidcFindByUserCode'>) { return this.identity.oidcFindByUserCode(...a); }
  oidcConsume(...a: Args<'oidcConsume'>) { return this.identity.oidcConsume(...a); }
  oidcDestroy(...a: Args<'oidcDestroy'>) { return this.identity.oidcDestroy(...a); }
  oidcRevokeByGrant(...a: Args<'oidcRevokeByGrant'>) { return this.identity.oidcRevokeByGrant(...a); }
  createClient(...a: Args<'createClient'>) { return this.identity.createClient(...a); }
  updateClientMetadata(...a: Args<'updateClientMetadata'>) { return this.identity.updateClientMetadata(...a); }
  getClient(...a: Args<'getClient'>) { return this.identity.getClient(...a); }
  listClients(...a: Args<'listClients'>) { return this.identity.listClients(...a); }
  transitionClient(...a: Args<'transitionClient'>) { return this.identity.transitionClient(...a); }
  countClientsFrom(...a: Args<'countClientsFrom'>) { return this.identity.countClientsFrom(...a); }
  touchClient(...a: Args<'touchClient'>) { return this.identity.touchClient(...a); }
  expireUnusedClients(...a: Args<'expireUnusedClients'>) { return this.identity.expireUnusedClients(...a); }
  createRegistrationToken(...a: Args<'createRegistrationToken'>) { return this.identity.createRegistrationToken(...a); }
  useRegistrationToken(...a: Args<'useRegistrationToken'>) { return this.identity.useRegistrationToken(...a); }
  createUser(...a: Args<'createUser'>) { return this.identity.createUser(...a); }
  getUser(...a: Args<'getUser'>) { return this.identity.getUser(...a); }
  listUsers(...a: Args<'listUsers'>) { return this.identity.listUsers(...a); }
  setUserDisabled(...a: Args<'setUserDisabled'>) { return this.identity.setUserDisabled(...a); }
  setUserGroups(...a: Args<'setUserGroups'>) { return this.identity.setUserGroups(...a); }
  putConsent(...a: Args<'putConsent'>) { return this.identity.putConsent(...a); }
  getConsent(...a: Args<'getConsent'>) { return this.identity.getConsent(...a); }
  listConsents(...a: Args<'listConsents'>) { return this.identity.listConsents(...a); }
  deleteConsents(...a: Args<'deleteConsents'>) { return this.identity.deleteConsents(...a); }
  putKey(...a: Args<'putKey'>) { return this.identity.putKey(...a); }
  listKeys(...a: Args<'listKeys'>) { return this.identity.listKeys(...a); }
  retireKey(...a: Args<'retireKey'>) { return this.identity.retireKey(...a); }
  addRevocation(...a: Args<'addRevocation'>) { return this.identity.addRevocation(...a); }
  listRevocations(...a: Args<'listRevocations'>) { return this.identity.listRevocations(...a); }
  purgeExpired(...a: Args<'purgeExpired'>) { return this.identity.purgeExpired(...a); }

  private head(): ChainHead | null {
    const row = this.stmt('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1').get() as
      | { seq: number; hash: string }
      | undefined;
    return row ? { seq: row.seq, hash: row.hash } : null;
  }

  private stmt(sql: string): StatementSync {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  /** Runs `work` in BEGIN IMMEDIATE … COMMIT; rolls back on any failure. */
  private transaction<T>(what: string, work: () => T): T {
    return this.guard(what, () => {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const result = work();
        this.db.exec('COMMIT');
        return result;
      } catch (error) {
        if (this.db.isTransaction) this.db.exec('ROLLBACK');
        throw error;
      }
    });
  }

  /** Database failures become StoreUnavailableError; caller errors (seal's TypeError) pass through. */
  private guard<T>(what: string, work: () => T): T {
    try {
      return work();
    } catch (error) {
      if (error instanceof TypeError || error instanceof RangeError) throw error;
      throw this.unavailable(what, error);
    }
  }

  private unavailable(what: string, error: unknown): StoreUnavailableError {
    return new StoreUnavailableError(`${this.description}: ${what} failed: ${messageOf(error)}`, { cause: error });
  }
}

type Args<K extends keyof IdentityStore> = Parameters<IdentityStore[K]>;

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
