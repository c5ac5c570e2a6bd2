/**
 * The one Store: the plane stores on one engine, and what concerns the whole
 * database (migrations, health, closing), written once for both dialects.
 * SqliteStore and PostgresStore only open their engine and appender.
 */
import { SqlApprovalsStore } from './approvals.ts';
import { SqlAuditStore, type AuditAppender } from './audit.ts';
import { SqlBreakglassStore } from './breakglass.ts';
import { SqlCatalogStore } from './catalog.ts';
import { SqlConnectionsStore } from './connections.ts';
import { SqlCredentialsStore } from './credentials.ts';
import { SqlIdentityStore } from './identity.ts';
import { SqlTasksStore } from './tasks.ts';
import type { Int } from './identity-rows.ts';
import { MIGRATIONS, compareSchema, refuseNewer } from './migrations.ts';
import type { Engine } from './sql/engine.ts';
import type { ApprovalsStore, AuditStore, BreakglassStore, CatalogStore, ConnectionsStore, CredentialsStore, IdentityStore, MigrationState, SchemaState, Store, StoreKind, TasksStore } from './types.ts';

interface MigrationRow {
  version: Int;
  name: string;
  applied_at: string;
}

export class SqlStore implements Store {
  readonly audit: AuditStore;
  readonly identity: IdentityStore;
  readonly catalog: CatalogStore;
  readonly credentials: CredentialsStore;
  readonly connections: ConnectionsStore;
  readonly breakglass: BreakglassStore;
  readonly approvals: ApprovalsStore;
  readonly tasks: TasksStore;
  protected readonly engine: Engine;
  private pinging: Promise<void> | null = null;

  constructor(engine: Engine, appender: AuditAppender) {
    this.engine = engine;
    this.audit = new SqlAuditStore(engine, appender);
    this.identity = new SqlIdentityStore(engine);
    this.catalog = new SqlCatalogStore(engine);
    this.credentials = new SqlCredentialsStore(engine);
    this.connections = new SqlConnectionsStore(engine);
    this.breakglass = new SqlBreakglassStore(engine);
    this.approvals = new SqlApprovalsStore(engine);
    this.tasks = new SqlTasksStore(engine);
  }

  get kind(): StoreKind {
    return this.engine.kind;
  }

  get description(): string {
    return this.engine.description;
  }

  get healthy(): boolean {
    return this.engine.healthy;
  }

  async migrate(): Promise<MigrationState[]> {
    // Read first: a current schema needs no lock and no DDL (a least-privilege role may run this).
    const state = await this.schema();
    refuseNewer(state, this.description);
    if (state.pending.length === 0) return state.applied;
    const { dialect } = this.engine;
    for (const { version } of state.pending) {
      const migration = MIGRATIONS.find((m) => m.version === version);
      if (!migration) continue;
      await this.engine.transaction(
        'migrate',
        async (tx) => {
          // Checked again inside the lock: another process may have applied it meanwhile.
          await dialect.prepareMigrations(tx);
          if (await tx.get('SELECT 1 AS found FROM schema_migrations WHERE version = ?', [version])) return;
          await tx.script(migration[this.engine.kind]);
          await tx.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [version, migration.name, new Date().toISOString()]);
        },
        { lock: 'migrations', slow: true },
      );
    }
    return this.migrations();
  }

  async migrations(): Promise<MigrationState[]> {
    const table = await this.engine.get<{ n: Int }>('read migrations', this.engine.dialect.tableExists, ['schema_migrations']);
    if (Number(table?.n ?? 0) === 0) return [];
    const rows = await this.engine.all<MigrationRow>('read migrations', 'SELECT version, name, applied_at FROM schema_migrations ORDER BY version');
    return rows.map((r) => ({ version: Number(r.version), name: r.name, appliedAt: r.applied_at }));
  }

  async schema(): Promise<SchemaState> {
    return compareSchema(await this.migrations());
  }

  ping(): Promise<void> {
    this.pinging ??= this.engine.get('ping', 'SELECT 1').then(
      () => {
        this.pinging = null;
      },
      (error: unknown) => {
        this.pinging = null;
        throw error;
      },
    );
    return this.pinging;
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}
