/**
 * The task plane (migration 8, docs/tasks.md): one row per task, a bounded
 * piece of work a user opens for themselves, scoped to one server (and some
 * of its tools) and, optionally, one client. A task is `open` until it is
 * closed, revoked or expires; each of those is a compare-and-set on
 * `status = 'open'`, so of concurrent callers on any nodes exactly one wins.
 * Ending a task (closed or revoked) also writes a `task` revocation in the
 * same transaction, so every node's revocation list ends the task's tokens.
 * Every create and end appends to `task_changes`: its highest seq tells a
 * gateway node that the open tasks may have changed. The rules (who may open,
 * close, revoke) are the service's (src/tasks/service.ts); this file only
 * keeps the records.
 */
import type { Int } from './identity-rows.ts';
import type { Engine, Statements } from './sql/engine.ts';

export type TaskStatus = 'open' | 'closed' | 'expired' | 'revoked';

export const TASK_STATUSES: readonly TaskStatus[] = ['open', 'closed', 'expired', 'revoked'];

export interface TaskRecord {
  /** 'tk-' + 12 lowercase hex. */
  id: string;
  /** Who opened it, for themselves. */
  user: string;
  /** The one client its tokens may be issued to; null: any client of the user. */
  clientId: string | null;
  /** Free text, 1 to 1000 characters. */
  purpose: string;
  /** A ticket reference, 1 to 200 characters, or null. */
  ticket: string | null;
  server: string;
  /** [] = every tool of the server. */
  tools: string[];
  status: TaskStatus;
  /** Epoch ms. */
  openedAt: number;
  /** Epoch ms. */
  expiresAt: number;
  /** When it was closed, revoked or marked expired; null while open. */
  endedAt: number | null;
  /** Who closed or revoked it (`system` for an expiry); null while open. */
  endedBy: string | null;
}

/** Who `expire` names as having ended a task. */
export const EXPIRED_BY = 'system';

interface TaskRow {
  id: string;
  user_name: string;
  client_id: string | null;
  purpose: string;
  ticket: string | null;
  server: string;
  tools: string;
  status: string;
  opened_at: Int;
  expires_at: Int;
  ended_at: Int | null;
  ended_by: string | null;
}

const COLUMNS = 'id, user_name, client_id, purpose, ticket, server, tools, status, opened_at, expires_at, ended_at, ended_by';
const SELECT = `SELECT ${COLUMNS} FROM tasks`;
const num = (value: Int | null): number | null => (value === null ? null : Number(value));

function toRecord(row: TaskRow): TaskRecord {
  return {
    id: row.id,
    user: row.user_name,
    clientId: row.client_id,
    purpose: row.purpose,
    ticket: row.ticket,
    server: row.server,
    tools: JSON.parse(row.tools) as string[],
    status: row.status as TaskStatus,
    openedAt: Number(row.opened_at),
    expiresAt: Number(row.expires_at),
    endedAt: num(row.ended_at),
    endedBy: row.ended_by,
  };
}

/** Appends to the change counter in the caller's transaction. */
async function changed(tx: Statements, id: string, at: number): Promise<void> {
  await tx.run('INSERT INTO task_changes (id, at) VALUES (?, ?)', [id, at]);
}

export class SqlTasksStore {
  private readonly engine: Engine;

  constructor(engine: Engine) {
    this.engine = engine;
  }

  /** A new task; an id already taken is refused ("… already exists"). */
  async create(record: TaskRecord): Promise<void> {
    await this.engine.transaction('open task', async (tx) => {
      const inserted = await tx.run(`INSERT INTO tasks (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, [
        record.id,
        record.user,
        record.clientId,
        record.purpose,
        record.ticket,
        record.server,
        JSON.stringify(record.tools),
        record.status,
        record.openedAt,
        record.expiresAt,
        record.endedAt,
        record.endedBy,
      ]);
      if (inserted === 0) throw new Error(`task ${record.id} already exists`);
      await changed(tx, record.id, record.openedAt);
    });
  }

  async get(id: string): Promise<TaskRecord | null> {
    const row = await this.engine.get<TaskRow>('read task', `${SELECT} WHERE id = ?`, [id]);
    return row === undefined ? null : toRecord(row);
  }

  /** Tasks, newest first (by openedAt), of one user and/or in one status, at most `limit` (default 1000). */
  async list(options: { user?: string; status?: TaskStatus; limit?: number } = {}): Promise<TaskRecord[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (options.user !== undefined) {
      where.push('user_name = ?');
      params.push(options.user);
    }
    if (options.status !== undefined) {
      where.push('status = ?');
      params.push(options.status);
    }
    const filter = where.length === 0 ? '' : ` WHERE ${where.join(' AND ')}`;
    params.push(Math.max(0, Math.floor(options.limit ?? 1000)));
    const rows = await this.engine.all<TaskRow>('list tasks', `${SELECT}${filter} ORDER BY opened_at DESC, id DESC LIMIT ?`, params);
    return rows.map(toRecord);
  }

  /**
   * open → closed|revoked (compare-and-set); also writes a `task` revocation
   * (value = id, revokedAt = at, expiresAt = the task's expiresAt) in the same
   * transaction, so every node's revocation list ends its tokens; false if
   * not open (or no such task).
   */
  async end(id: string, status: 'closed' | 'revoked', by: string, at: number): Promise<boolean> {
    // Under the revocations lock, as every revocation is written (src/store/identity.ts, addRevocation):
    // seqs then become visible in order.
    return this.engine.transaction(
      `${status === 'closed' ? 'close' : 'revoke'} task`,
      async (tx) => {
        const row = await tx.get<{ expires_at: Int }>(`SELECT expires_at FROM tasks WHERE id = ? AND status = 'open'${this.engine.dialect.forUpdate}`, [id]);
        if (row === undefined) return false;
        if ((await tx.run(`UPDATE tasks SET status = ?, ended_at = ?, ended_by = ? WHERE id = ? AND status = 'open'`, [status, at, by, id])) !== 1) return false;
        await tx.run('INSERT INTO revocations (kind, value, revoked_at, expires_at) VALUES (?, ?, ?, ?)', ['task', id, at, Number(row.expires_at)]);
        await changed(tx, id, at);
        return true;
      },
      { lock: 'revocations' },
    );
  }

  /** Marks open tasks past their expiry (expiresAt <= now) as expired, ended by `system` at their expiry; returns how many. */
  async expire(now: number): Promise<number> {
    return this.engine.transaction('expire tasks', async (tx) => {
      const rows = await tx.all<{ id: string }>(`UPDATE tasks SET status = 'expired', ended_at = expires_at, ended_by = ? WHERE status = 'open' AND expires_at <= ? RETURNING id`, [EXPIRED_BY, now]);
      for (const { id } of rows) await changed(tx, id, now);
      return rows.length;
    });
  }

  /** The newest change's seq (0 when nothing happened): gateway nodes poll it. */
  async lastChange(): Promise<number> {
    const row = await this.engine.get<{ n: Int | null }>('read task change', 'SELECT max(seq) AS n FROM task_changes');
    return Number(row?.n ?? 0);
  }
}
