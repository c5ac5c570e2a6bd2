/**
 * PostgreSQL store for several gateway nodes sharing one database: the plane
 * stores on a bounded pg pool (./engine.ts), appends in a locked transaction
 * (./append.ts).
 */
import { SqlStore } from '../store.ts';
import { postgresAppender } from './append.ts';
import { PostgresEngine, type PostgresEngineOptions } from './engine.ts';

export type PostgresStoreOptions = PostgresEngineOptions;

export class PostgresStore extends SqlStore {
  constructor(options: PostgresStoreOptions) {
    const engine = new PostgresEngine(options);
    super(engine, postgresAppender(engine));
  }
}
