/**
 * PostgreSQL store for several gateway nodes sharing one database. Appends
 * take a transaction-scoped advisory lock, so the head read, seal and insert
 * are serial across every node; the lock is released by COMMIT or ROLLBACK
 * (or by the server if the connection dies).
 */
import pg from 'pg';
import { seal } from '../../audit/chain.ts';
import type { ChainHead } from '../../audit/chain.ts';
import type { AuditRecord, TimedEvent } from '../../audit/events.ts';
import type { IdentityStore } from '../identity-types.ts';
import { MIGRATIONS, SCHEMA_MIGRATIONS_DDL } from '../migrations.ts';
import { AUDIT_COLUMNS, matchesNothing, normalizeQuery, toRecord, type AuditRow } from '../query.ts';
import { StoreUnavailableError, type AuditQuery, type MigrationState, type Store } from '../types.ts';
import { PostgresIdentity } from './identity.ts';
import { parsePostgresUrl, redact } from './url.ts';

// Advisory lock keys: "mandate" in ASCII, then 1 = audit chain, 2 = migrations.
const AUDIT_LOCK = 0x6d616e6461746501n;
const MIGRATION_LOCK = 0x6d616e6461746502n;
const UNDEFINED_TABLE = '42P01';

export interface PostgresStoreOptions {
  databaseUrl: string;
  /** Lower-case SQL identifier; created on migrate; every connection's search_path. */
  schema?: string;
  poolSize?: number;
  connectionTimeoutMs?: number;
  statementTimeoutMs?: number;
}

interface MigrationRow {
  version: number;
  name: string;
  applied_at: string;
}

export class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  readonly description: string;
  private readonly pool: pg.Pool;
  private readonly schema: string | null;
  private readonly secrets: string[];
  private closed = false;
  private trouble = false;
  private readonly identity = new PostgresIdentity({ query: this.query.bind(this), transaction: this.transaction.bind(this) });

  constructor(options: PostgresStoreOptions) {
    const url = parsePostgresUrl(options.databaseUrl);
    const schema = options.schema ?? null;
    if (schema !== null && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
      throw new Error(`PostgreSQL schema must be a lower-case SQL identifier: ${schema}`);
    }
    this.schema = schema;
    this.secrets = url.secrets;
    this.description = url.description + (schema ? ` schema ${schema}` : '');
    const statementTimeout = options.statementTimeoutMs ?? 10_000;
    const startup = [url.options, schema ? `-c search_path=${schema}` : null].filter((o) => o !== null);
    this.pool = new pg.Pool({
      connectionString: url.connectionString,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: options.connectionTimeoutMs ?? 5000,
      // The server cancels slow statements (a lock wait included); the client gives up a bit later.
      statement_timeout: statementTimeout,
      query_timeout: statementTimeout + 5000,
      idle_in_transaction_session_timeout: 60_000,
      keepAlive: true,
      application_name: 'mandate',
      ...(startup.length > 0 ? { options: startup.join(' ') } : {}),
    });
    // An idle client losing its connection must not crash the process; the next query reports it.
    // A lost connection (an idle client's error, or its removal) marks the store
    // suspect, so the next request is preceded by a ping instead of acting blind.
    this.pool.on('error', () => {
      this.trouble = true;
    });
    this.pool.on('remove', () => {
      this.trouble = true;
    });
  }

  async migrate(): Promise<MigrationState[]> {
    for (const migration of MIGRATIONS) {
      await this.transaction('migrate', async (client) => {
        await client.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
        if (this.schema) {
          const found = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [this.schema]);
          if (found.rowCount === 0) await client.query(`CREATE SCHEMA ${this.schema}`);
        }
        await client.query(SCHEMA_MIGRATIONS_DDL.postgres);
        const done = await client.query('SELECT 1 FROM schema_migrations WHERE version = $1', [migration.version]);
        if (done.rowCount !== 0) return;
        await client.query(migration.postgres);
        await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
          migration.version,
          migration.name,
          new Date().toISOString(),
        ]);
      });
    }
    return this.migrations();
  }

  async migrations(): Promise<MigrationState[]> {
    try {
      const result = await this.pool.query<MigrationRow>(
        'SELECT version, name, applied_at FROM schema_migrations ORDER BY version',
      );
      return result.rows.map((r) => ({ version: r.version, name: r.name, appliedAt: r.applied_at }));
    } catch (error) {
      if (codeOf(error) === UNDEFINED_TABLE) return [];
      throw this.unavailable('read migrations', error);
    }
  }

  get healthy(): boolean {
    return !this.trouble && !this.closed;
  }

  async ping(): Promise<void> {
    await this.query('ping', 'SELECT 1');
  }

  async recordAudit(events: readonly TimedEvent[]): Promise<void> {
    await this.appendAudit(events);
  }

  async appendAudit(events: readonly TimedEvent[]): Promise<AuditRecord[]> {
    if (events.length === 0) return [];
    return this.transaction('append audit events', async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(${AUDIT_LOCK})`);
      const head = await client.query<{ seq: string; hash: string }>(
        'SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1',
      );
      const last = head.rows[0];
      const records = seal(last ? { seq: Number(last.seq), hash: last.hash } : null, events);
      // One statement for the whole batch, whatever its size (no parameter limit).
      await client.query(
        `INSERT INTO audit_events (${AUDIT_COLUMNS})
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])`,
        [
          records.map((r) => r.seq),
          records.map((r) => r.time),
          records.map((r) => r.type),
          records.map((r) => r.server),
          records.map((r) => r.outcome),
          records.map((r) => r.body),
          records.map((r) => r.prevHash),
          records.map((r) => r.hash),
        ],
      );
      return records;
    });
  }

  async listAudit(query?: AuditQuery): Promise<AuditRecord[]> {
    const filter = normalizeQuery(query);
    if (matchesNothing(filter)) return [];
    const params: unknown[] = [filter.afterSeq];
    const where = ['seq > $1'];
    if (filter.since !== null) {
      params.push(filter.since);
      where.push(`time >= $${params.length}`);
    }
    if (filter.types) {
      params.push(filter.types.exact, filter.types.prefixes);
      const exact = params.length - 1;
      const prefixes = params.length;
      where.push(`(type = ANY($${exact}::text[])
        OR EXISTS (SELECT 1 FROM unnest($${prefixes}::text[]) AS p(prefix) WHERE starts_with(type, p.prefix)))`);
    }
    params.push(filter.limit);
    const sql = `SELECT ${AUDIT_COLUMNS} FROM audit_events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${params.length}`;
    const rows = await this.query<AuditRow>('list audit events', sql, params);
    return rows.map(toRecord);
  }

  async auditHead(): Promise<ChainHead | null> {
    const rows = await this.query<{ seq: string; hash: string }>(
      'read audit head',
      'SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1',
    );
    const last = rows[0];
    return last ? { seq: Number(last.seq), hash: last.hash } : null;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
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

  private async query<R extends pg.QueryResultRow>(what: string, sql: string, params?: unknown[]): Promise<R[]> {
    try {
      const rows = (await this.pool.query<R>(sql, params)).rows;
      this.trouble = false;
      return rows;
    } catch (error) {
      this.trouble = true;
      throw this.unavailable(what, error);
    }
  }

  /** BEGIN … COMMIT on one pooled client; ROLLBACK on failure (the client is discarded if that fails too). */
  private async transaction<T>(what: string, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      this.trouble = true;
      throw this.unavailable(what, error);
    }
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      client.release();
      this.trouble = false;
      return result;
    } catch (error) {
      try {
        await client.query('ROLLBACK');
        client.release();
      } catch {
        client.release(true);
      }
      // Caller errors (seal's TypeError for an unserialisable event) pass through as they are.
      if (error instanceof TypeError || error instanceof RangeError) throw error;
      this.trouble = true;
      throw this.unavailable(what, error);
    }
  }

  private unavailable(what: string, error: unknown): StoreUnavailableError {
    const message = error instanceof Error ? error.message : String(error);
    return new StoreUnavailableError(redact(`${this.description}: ${what} failed: ${message}`, this.secrets), {
      cause: error,
    });
  }
}

type Args<K extends keyof IdentityStore> = Parameters<IdentityStore[K]>;

function codeOf(error: unknown): unknown {
  return typeof error === 'object' && error !== null && 'code' in error ? error.code : undefined;
}
