/**
 * The PostgreSQL engine: a pg pool, every call bounded. Getting a connection
 * (a new one, or a free one from a full pool) waits at most `connectTimeoutMs`;
 * a statement runs at most `statementTimeoutMs` (the server cancels it, a lock
 * wait included) and the client stops waiting for an answer shortly after, so
 * a frozen network (no answer, no closed socket) fails a call in seconds too.
 * A connection that gave no answer is closed at once rather than returned to
 * the pool or ended politely (an end would wait for the server's goodbye), so
 * abandoned queries do not pile up on stalled sockets; the idle connections
 * are closed with it.
 */
import pg from 'pg';
import { SCHEMA_MIGRATIONS_DDL } from '../migrations.ts';
import {
  isCallerError,
  positional,
  unavailable,
  type Dialect,
  type Engine,
  type Lock,
  type Param,
  type Statements,
  type TransactionOptions,
} from '../sql/engine.ts';
import { parsePostgresUrl } from './url.ts';

export const DEFAULT_CONNECT_TIMEOUT_MS = 3000;
export const DEFAULT_STATEMENT_TIMEOUT_MS = 5000;
/** How much longer than the server's statement timeout the client waits, so a reachable server's own cancellation is what is reported. */
const ANSWER_GRACE_MS = 500;
/** The bound of a migration statement (`slow` transactions): DDL on a large table may take minutes. */
const MIGRATION_TIMEOUT_MS = 15 * 60_000;

/** Advisory lock keys: "mandate" in ASCII, then 1 = audit chain, 2 = migrations, 3 = revocations. Never change them: nodes of different versions share them. */
const LOCK_KEYS: Record<Lock, bigint> = {
  audit: 0x6d616e6461746501n,
  migrations: 0x6d616e6461746502n,
  revocations: 0x6d616e6461746503n,
};

export interface PostgresEngineOptions {
  databaseUrl: string;
  /** Lower-case SQL identifier; created on migrate; every connection's search_path. */
  schema?: string | undefined;
  poolSize?: number | undefined;
  connectTimeoutMs?: number | undefined;
  statementTimeoutMs?: number | undefined;
}

function postgresDialect(schema: string | null): Dialect {
  return {
    bool: (value) => value,
    list: (alias) => `unnest(CAST(? AS text[])) AS ${alias}(value)`,
    listParam: (values) => values,
    forUpdate: ' FOR UPDATE',
    tableExists: 'SELECT CAST(to_regclass(?) IS NOT NULL AS integer) AS n',
    async prepareMigrations(tx) {
      if (schema !== null && !(await tx.get('SELECT 1 AS found FROM pg_namespace WHERE nspname = ?', [schema]))) {
        await tx.script(`CREATE SCHEMA ${schema}`);
      }
      await tx.script(SCHEMA_MIGRATIONS_DDL.postgres);
    },
  };
}

export class PostgresEngine implements Engine {
  readonly kind = 'postgres' as const;
  readonly description: string;
  readonly dialect: Dialect;
  private readonly pool: pg.Pool;
  private readonly secrets: string[];
  private readonly texts = new Map<string, string>();
  /** Connections waiting in the pool. */
  private readonly idle = new Set<pg.PoolClient>();
  private closed = false;
  private trouble = false;

  constructor(options: PostgresEngineOptions) {
    const url = parsePostgresUrl(options.databaseUrl);
    const schema = options.schema ?? null;
    if (schema !== null && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
      throw new Error(`PostgreSQL schema must be a lower-case SQL identifier: ${schema}`);
    }
    this.dialect = postgresDialect(schema);
    this.secrets = url.secrets;
    this.description = url.description + (schema ? ` schema ${schema}` : '');
    const statementTimeout = options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
    const startup = [url.options, schema ? `-c search_path=${schema}` : null].filter((o) => o !== null);
    this.pool = new pg.Pool({
      connectionString: url.connectionString,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      // The server cancels slow statements (a lock wait included); the client gives up just after.
      statement_timeout: statementTimeout,
      query_timeout: statementTimeout + ANSWER_GRACE_MS,
      // A transaction left idle by a node that lost its connection ends (and frees its locks) as soon.
      idle_in_transaction_session_timeout: statementTimeout + ANSWER_GRACE_MS,
      keepAlive: true,
      application_name: 'mandate',
      ...(startup.length > 0 ? { options: startup.join(' ') } : {}),
    });
    // An idle client losing its connection must not crash the process; the next query reports it.
    // A lost connection (an idle client's error, or its removal) marks the store suspect, so the
    // next request is preceded by a ping instead of acting blind.
    this.pool.on('error', () => {
      this.trouble = true;
    });
    this.pool.on('remove', (client) => {
      this.idle.delete(client);
      this.trouble = true;
    });
    this.pool.on('release', (error, client) => {
      if (!error) this.idle.add(client);
    });
    this.pool.on('acquire', (client) => {
      this.idle.delete(client);
    });
  }

  get healthy(): boolean {
    return !this.trouble && !this.closed;
  }

  get open(): boolean {
    return !this.closed;
  }

  async all<R>(what: string, sql: string, params: readonly Param[] = []): Promise<R[]> {
    return this.on(what, null, (tx) => tx.all<R>(sql, params));
  }

  async get<R>(what: string, sql: string, params: readonly Param[] = []): Promise<R | undefined> {
    return this.on(what, null, (tx) => tx.get<R>(sql, params));
  }

  async run(what: string, sql: string, params: readonly Param[] = []): Promise<number> {
    return this.on(what, null, (tx) => tx.run(sql, params));
  }

  async transaction<T>(what: string, work: (tx: Statements) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    return this.on(what, options, async (tx, command) => {
      await command('BEGIN');
      if (options.slow) await command(`SET LOCAL statement_timeout = ${MIGRATION_TIMEOUT_MS}`);
      if (options.lock) await command(`SELECT pg_advisory_xact_lock(${LOCK_KEYS[options.lock]})`);
      const result = await work(tx);
      await command('COMMIT');
      return result;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }

  private async connect(what: string): Promise<pg.PoolClient> {
    try {
      return await this.pool.connect();
    } catch (error) {
      this.trouble = true;
      throw this.failure(what, error);
    }
  }

  /**
   * Runs `work` on a pooled connection (`transaction` null: a single
   * statement) and gives the connection back: to the pool if it answered
   * (after ROLLBACK, for a failed transaction), else closed. Marks the engine
   * healthy or not by the outcome.
   */
  private async on<T>(
    what: string,
    transaction: TransactionOptions | null,
    work: (tx: Statements, command: (text: string) => Promise<unknown>) => Promise<T>,
  ): Promise<T> {
    const client = await this.connect(what);
    // While checked out, a client whose connection drops between statements emits 'error' with nobody listening
    // (the pool listens only to idle ones): that would crash the process. The statement in hand reports it instead.
    const lost = (): void => {
      this.trouble = true;
    };
    client.on('error', lost);
    const bound = transaction?.slow ? { query_timeout: MIGRATION_TIMEOUT_MS } : {};
    let silent = false;
    const command = async <R extends pg.QueryResultRow>(text: string, params?: readonly Param[]): Promise<pg.QueryResult<R>> => {
      try {
        return await client.query<R>({ text, values: params as unknown[] | undefined, ...bound });
      } catch (error) {
        // No answer from the server (a timeout, a reset): the connection cannot be trusted again.
        if (!(error instanceof pg.DatabaseError) && !isCallerError(error)) silent = true;
        throw error;
      }
    };
    const tx: Statements = {
      all: async <R>(sql: string, params?: readonly Param[]) => (await command<R & pg.QueryResultRow>(this.text(sql), params)).rows as R[],
      get: async <R>(sql: string, params?: readonly Param[]) => (await command<R & pg.QueryResultRow>(this.text(sql), params)).rows[0] as R | undefined,
      run: async (sql: string, params?: readonly Param[]) => (await command(this.text(sql), params)).rowCount ?? 0,
      script: async (sql: string) => {
        await command(sql);
      },
    };
    try {
      const result = await work(tx, command);
      client.off('error', lost);
      client.release();
      this.trouble = false;
      return result;
    } catch (error) {
      if (silent) {
        // Closed for good: its listener stays, for whatever the dying connection still emits.
        discard(client, error);
        this.retireIdle();
      } else {
        await this.rollBack(client, transaction !== null, lost);
      }
      if (isCallerError(error)) throw error;
      this.trouble = true;
      throw this.failure(what, error);
    }
  }

  /** Ends a failed transaction on a connection that still answers, and returns it to the pool (or closes it if that fails too). */
  private async rollBack(client: pg.PoolClient, inTransaction: boolean, lost: () => void): Promise<void> {
    if (!inTransaction) {
      client.off('error', lost);
      client.release();
      return;
    }
    try {
      await client.query('ROLLBACK');
      client.off('error', lost);
      client.release();
    } catch (error) {
      discard(client, error);
    }
  }

  /**
   * Closes every idle connection. One connection that gave no answer means the
   * path to the server is stalled; the idle ones go the same way, so the next
   * call opens a new connection (bounded by the connect timeout) instead of
   * waiting out the statement bound on each stale one in turn.
   */
  private retireIdle(): void {
    for (const client of this.idle) client.connection.stream.destroy();
    this.idle.clear();
  }

  /** The statement text with `$n` placeholders, rewritten once per text. */
  private text(sql: string): string {
    let text = this.texts.get(sql);
    if (text === undefined) {
      text = positional(sql);
      this.texts.set(sql, text);
    }
    return text;
  }

  private failure(what: string, error: unknown): Error {
    return unavailable(this.description, what, error, this.secrets);
  }
}

/**
 * Takes a client out of the pool and closes its socket now. (The pool would
 * end it politely, waiting for a goodbye a frozen server never sends, and the
 * socket, with its unanswered query, would linger until the network thaws.)
 */
function discard(client: pg.PoolClient, error: unknown): void {
  client.release(error instanceof Error ? error : true);
  client.connection.stream.destroy();
}
