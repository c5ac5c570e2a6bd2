/**
 * Picks the store from configuration. It does not migrate: callers run
 * `store.migrate()`, or check `store.schema()` (so a read-only tool, or a
 * least-privilege role, can open a store without changing it).
 */
import type { OpenStoreOptions, Store } from './types.ts';
import { isPostgresUrl } from './postgres/url.ts';

export async function openStore(options: OpenStoreOptions): Promise<Store> {
  const url = options.databaseUrl;
  if (url === undefined || url === '') {
    const { SqliteStore } = await import('./sqlite/store.ts');
    return new SqliteStore(options.dataDir, options.durability);
  }
  if (!isPostgresUrl(url)) {
    // Name the scheme only: the rest of the URL may hold a password.
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
    throw new Error(
      `unsupported database URL${scheme ? ` scheme "${scheme}:"` : ''}: use postgres://… or postgresql://…, ` +
        'or no database URL for the embedded SQLite store in the data directory',
    );
  }
  // Loaded on demand: a SQLite deployment never loads pg.
  const { PostgresStore } = await import('./postgres/store.ts');
  return new PostgresStore({
    databaseUrl: url,
    schema: options.schema,
    poolSize: options.poolSize,
    connectTimeoutMs: options.connectTimeoutMs,
    statementTimeoutMs: options.statementTimeoutMs,
  });
}
