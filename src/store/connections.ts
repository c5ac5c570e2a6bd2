/**
 * Per-user upstream connections (migration 5, docs/credentials.md): the
 * tokens a user's upstream account granted Mandate (the `oauth` kind), one
 * row per user, server and tenant, sealed by the caller (src/credentials/
 * vault.ts): nothing here holds a token in the clear. A refresh replaces the
 * sealed tokens only if the row is still at the revision it read (two nodes
 * refreshing at once: one wins, the other reads the winner's). Every change
 * appends to secret_changes, the credentials plane's change counter, so each
 * node drops what it held within its poll.
 */
import type { Int } from './identity-rows.ts';
import type { Engine } from './sql/engine.ts';

export interface ConnectionKey {
  user: string;
  server: string;
  tenant: string;
}

export interface ConnectionRecord extends ConnectionKey {
  revision: number;
  /** The data key, sealed under the deployment secret. */
  sealedKey: string;
  /** The tokens (JSON), sealed under the data key. */
  sealedTokens: string;
  /** The scopes the upstream granted (space-separated; '' when it did not say). */
  scope: string;
  /** When the access token expires (null: the upstream did not say). */
  expiresAt: number | null;
  createdAt: number;
  refreshedAt: number | null;
  lastUsedAt: number | null;
}

interface ConnectionRow {
  user_name: string;
  server: string;
  tenant: string;
  revision: Int;
  sealed_key: string;
  sealed_tokens: string;
  scope: string;
  expires_at: Int | null;
  created_at: Int;
  refreshed_at: Int | null;
  last_used_at: Int | null;
}

const COLUMNS = 'user_name, server, tenant, revision, sealed_key, sealed_tokens, scope, expires_at, created_at, refreshed_at, last_used_at';
const KEY = 'user_name = ? AND server = ? AND tenant = ?';
const keyOf = (key: ConnectionKey): string[] => [key.user, key.server, key.tenant];
const num = (value: Int | null): number | null => (value === null ? null : Number(value));

function toRecord(row: ConnectionRow): ConnectionRecord {
  return {
    user: row.user_name,
    server: row.server,
    tenant: row.tenant,
    revision: Number(row.revision),
    sealedKey: row.sealed_key,
    sealedTokens: row.sealed_tokens,
    scope: row.scope,
    expiresAt: num(row.expires_at),
    createdAt: Number(row.created_at),
    refreshedAt: num(row.refreshed_at),
    lastUsedAt: num(row.last_used_at),
  };
}

export class SqlConnectionsStore {
  private readonly engine: Engine;

  constructor(engine: Engine) {
    this.engine = engine;
  }

  async get(key: ConnectionKey): Promise<ConnectionRecord | null> {
    const row = await this.engine.get<ConnectionRow>('read connection', `SELECT ${COLUMNS} FROM connections WHERE ${KEY}`, keyOf(key));
    return row === undefined ? null : toRecord(row);
  }

  /** Connections, of one user or of all, ordered by user, server and tenant. */
  async list(user?: string): Promise<ConnectionRecord[]> {
    const rows =
      user === undefined
        ? await this.engine.all<ConnectionRow>('list connections', `SELECT ${COLUMNS} FROM connections ORDER BY user_name, server, tenant`)
        : await this.engine.all<ConnectionRow>('list connections', `SELECT ${COLUMNS} FROM connections WHERE user_name = ? ORDER BY server, tenant`, [user]);
    return rows.map(toRecord);
  }

  /** A new connection (or a reconnection, replacing the old one whole): revision 1, or the old one's + 1. */
  async put(record: Omit<ConnectionRecord, 'revision' | 'refreshedAt' | 'lastUsedAt'>): Promise<number> {
    return this.engine.transaction('save connection', async (tx) => {
      const old = await tx.get<{ revision: Int }>(`SELECT revision FROM connections WHERE ${KEY}`, keyOf(record));
      const revision = old === undefined ? 1 : Number(old.revision) + 1;
      await tx.run(`DELETE FROM connections WHERE ${KEY}`, keyOf(record));
      await tx.run(`INSERT INTO connections (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)`, [
        ...keyOf(record),
        revision,
        record.sealedKey,
        record.sealedTokens,
        record.scope,
        record.expiresAt,
        record.createdAt,
      ]);
      await tx.run('INSERT INTO secret_changes (name, at) VALUES (?, ?)', [`connection:${record.server}`, record.createdAt]);
      return revision;
    });
  }

  /**
   * Replaces the tokens after a refresh, if the row is still at `revision`.
   * False when another node refreshed (or the user disconnected) meanwhile.
   */
  async refreshed(key: ConnectionKey, revision: number, next: { sealedKey: string; sealedTokens: string; scope: string; expiresAt: number | null }, at: number): Promise<boolean> {
    return this.engine.transaction('refresh connection', async (tx) => {
      const changed = await tx.run(
        `UPDATE connections SET revision = revision + 1, sealed_key = ?, sealed_tokens = ?, scope = ?, expires_at = ?, refreshed_at = ? WHERE ${KEY} AND revision = ?`,
        [next.sealedKey, next.sealedTokens, next.scope, next.expiresAt, at, ...keyOf(key), revision],
      );
      if (changed !== 1) return false;
      await tx.run('INSERT INTO secret_changes (name, at) VALUES (?, ?)', [`connection:${key.server}`, at]);
      return true;
    });
  }

  /** Ends a connection; the record it held (to revoke its tokens upstream), or null if there was none. */
  async delete(key: ConnectionKey, at: number): Promise<ConnectionRecord | null> {
    return this.engine.transaction('delete connection', async (tx) => {
      const row = await tx.get<ConnectionRow>(`SELECT ${COLUMNS} FROM connections WHERE ${KEY}`, keyOf(key));
      if (row === undefined) return null;
      await tx.run(`DELETE FROM connections WHERE ${KEY}`, keyOf(key));
      await tx.run('INSERT INTO secret_changes (name, at) VALUES (?, ?)', [`connection:${key.server}`, at]);
      return toRecord(row);
    });
  }

  /** Notes a use (callers throttle: at most once a minute per connection is enough). */
  async markUsed(key: ConnectionKey, at: number): Promise<void> {
    await this.engine.run('mark connection used', `UPDATE connections SET last_used_at = ? WHERE ${KEY}`, [at, ...keyOf(key)]);
  }
}
