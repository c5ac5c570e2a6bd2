/**
 * The credentials plane's store (migration 4, docs/credentials.md): upstream
 * secrets, one row per version, sealed by the caller (src/credentials/
 * secrets.ts): nothing here ever holds a value in the clear. A rotation adds
 * a version and gives the one it replaces a retirement time (the grace
 * period) in one transaction; every change appends to `secret_changes`,
 * whose highest seq tells a gateway node that its cache is stale.
 */
import type { Int } from './identity-rows.ts';
import type { Engine } from './sql/engine.ts';

/** Where a secret applies: an environment and a tenant, '' for any. */
export interface SecretScope {
  name: string;
  environment: string;
  tenant: string;
}

export interface SecretVersion extends SecretScope {
  version: number;
  /** The data key, sealed under the deployment secret. */
  sealedKey: string;
  /** The value, sealed under the data key. */
  sealedValue: string;
  createdAt: number;
  createdBy: string;
  /** Null for the current version; for a replaced one, when it stops being used. */
  retiresAt: number | null;
  lastUsedAt: number | null;
}

interface SecretRow {
  name: string;
  environment: string;
  tenant: string;
  version: Int;
  sealed_key: string;
  sealed_value: string;
  created_at: Int;
  created_by: string;
  retires_at: Int | null;
  last_used_at: Int | null;
}

const COLUMNS = 'name, environment, tenant, version, sealed_key, sealed_value, created_at, created_by, retires_at, last_used_at';

function toVersion(row: SecretRow): SecretVersion {
  return {
    name: row.name,
    environment: row.environment,
    tenant: row.tenant,
    version: Number(row.version),
    sealedKey: row.sealed_key,
    sealedValue: row.sealed_value,
    createdAt: Number(row.created_at),
    createdBy: row.created_by,
    retiresAt: row.retires_at === null ? null : Number(row.retires_at),
    lastUsedAt: row.last_used_at === null ? null : Number(row.last_used_at),
  };
}

export class SqlCredentialsStore {
  private readonly engine: Engine;

  constructor(engine: Engine) {
    this.engine = engine;
  }

  /** The version number the next `addVersion` of this scope will get. */
  async nextVersion(scope: SecretScope): Promise<number> {
    const row = await this.engine.get<{ n: Int | null }>('read secret version', 'SELECT max(version) AS n FROM secrets WHERE name = ? AND environment = ? AND tenant = ?', [
      scope.name,
      scope.environment,
      scope.tenant,
    ]);
    return Number(row?.n ?? 0) + 1;
  }

  /**
   * Adds a version as the current one. The version it replaces (if any) is
   * used until `retireAt`; older ones retire at once. Refuses (Error) when
   * another version was added meanwhile (the version number is taken).
   */
  async addVersion(version: SecretVersion, retireAt: number): Promise<void> {
    await this.engine.transaction('set secret', async (tx) => {
      const scope = [version.name, version.environment, version.tenant];
      // A version still in its grace period retires now; the current one gets the grace period.
      await tx.run('UPDATE secrets SET retires_at = ? WHERE name = ? AND environment = ? AND tenant = ? AND retires_at > ?', [version.createdAt, ...scope, version.createdAt]);
      await tx.run('UPDATE secrets SET retires_at = ? WHERE name = ? AND environment = ? AND tenant = ? AND retires_at IS NULL', [retireAt, ...scope]);
      const inserted = await tx.run(`INSERT INTO secrets (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL) ON CONFLICT DO NOTHING`, [
        ...scope,
        version.version,
        version.sealedKey,
        version.sealedValue,
        version.createdAt,
        version.createdBy,
      ]);
      if (inserted !== 1) throw new Error(`secret ${version.name} changed meanwhile; try again`);
      await tx.run('INSERT INTO secret_changes (name, at) VALUES (?, ?)', [version.name, version.createdAt]);
    });
  }

  /** Every version still in use (current, or retiring after `now`), of one name or of all. */
  async usable(now: number, name?: string): Promise<SecretVersion[]> {
    const rows =
      name === undefined
        ? await this.engine.all<SecretRow>('read secrets', `SELECT ${COLUMNS} FROM secrets WHERE retires_at IS NULL OR retires_at > ? ORDER BY name, environment, tenant, version`, [now])
        : await this.engine.all<SecretRow>('read secrets', `SELECT ${COLUMNS} FROM secrets WHERE name = ? AND (retires_at IS NULL OR retires_at > ?) ORDER BY environment, tenant, version`, [name, now]);
    return rows.map(toVersion);
  }

  /** Every version kept, retired ones too (for `mandate secrets list`). */
  async all(): Promise<SecretVersion[]> {
    return (await this.engine.all<SecretRow>('list secrets', `SELECT ${COLUMNS} FROM secrets ORDER BY name, environment, tenant, version`)).map(toVersion);
  }

  /** Deletes a secret (every version) in one scope, or in every scope when only the name is given. How many versions went. */
  async delete(name: string, scope?: { environment: string; tenant: string }, at = Date.now()): Promise<number> {
    return this.engine.transaction('delete secret', async (tx) => {
      const gone =
        scope === undefined
          ? await tx.run('DELETE FROM secrets WHERE name = ?', [name])
          : await tx.run('DELETE FROM secrets WHERE name = ? AND environment = ? AND tenant = ?', [name, scope.environment, scope.tenant]);
      if (gone > 0) await tx.run('INSERT INTO secret_changes (name, at) VALUES (?, ?)', [name, at]);
      return gone;
    });
  }

  /** Drops versions whose grace period ended. */
  async purgeRetired(now: number): Promise<number> {
    return this.engine.run('purge retired secrets', 'DELETE FROM secrets WHERE retires_at IS NOT NULL AND retires_at <= ?', [now]);
  }

  /** Notes that a version was used (at most once a minute per version is enough: callers throttle). */
  async markUsed(scope: SecretScope, version: number, at: number): Promise<void> {
    await this.engine.run('mark secret used', 'UPDATE secrets SET last_used_at = ? WHERE name = ? AND environment = ? AND tenant = ? AND version = ?', [
      at,
      scope.name,
      scope.environment,
      scope.tenant,
      version,
    ]);
  }

  /** The newest change's seq (0 when nothing was ever set): a node polls it to learn of changes made elsewhere. */
  async lastChange(): Promise<number> {
    const row = await this.engine.get<{ n: Int | null }>('read secret change', 'SELECT max(seq) AS n FROM secret_changes');
    return Number(row?.n ?? 0);
  }
}
