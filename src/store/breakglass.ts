/**
 * The break-glass plane (migration 6, docs/breakglass.md): emergency access
 * grants, one row each. A grant is in force while it is neither closed nor
 * expired; it is reviewed once (a compare-and-set on `reviewed_at IS NULL`,
 * so of two reviewers on any nodes exactly one wins). Every create, close
 * and review appends to `breakglass_changes` in the same transaction: its
 * highest seq tells a gateway node that the grants in force may have
 * changed. The rules (who may open, close, review) are the service's
 * (src/breakglass/service.ts); this file only keeps the records.
 */
import type { Int } from './identity-rows.ts';
import type { Engine, Statements } from './sql/engine.ts';

export type BreakglassOutcome = 'justified' | 'unjustified';

export interface BreakglassRecord {
  /** 'bg-' + 12 lowercase hex. */
  id: string;
  /** Whose calls it covers: the opener, or the user it was opened for. */
  user: string;
  openedBy: string;
  server: string;
  /** [] = every tool of the server. */
  tools: string[];
  ticket: string;
  reason: string;
  /** Epoch ms. */
  openedAt: number;
  /** Epoch ms. */
  expiresAt: number;
  closedAt: number | null;
  closedBy: string | null;
  reviewedBy: string | null;
  reviewedAt: number | null;
  outcome: BreakglassOutcome | null;
  reviewReason: string | null;
}

/** What a new grant holds until someone closes or reviews it. */
export const NOT_CLOSED_OR_REVIEWED = {
  closedAt: null,
  closedBy: null,
  reviewedBy: null,
  reviewedAt: null,
  outcome: null,
  reviewReason: null,
} as const satisfies Partial<BreakglassRecord>;

interface BreakglassRow {
  id: string;
  user_name: string;
  opened_by: string;
  server: string;
  tools: string;
  ticket: string;
  reason: string;
  opened_at: Int;
  expires_at: Int;
  closed_at: Int | null;
  closed_by: string | null;
  reviewed_by: string | null;
  reviewed_at: Int | null;
  outcome: string | null;
  review_reason: string | null;
}

const COLUMNS = 'id, user_name, opened_by, server, tools, ticket, reason, opened_at, expires_at, closed_at, closed_by, reviewed_by, reviewed_at, outcome, review_reason';
const SELECT = `SELECT ${COLUMNS} FROM breakglass`;
const num = (value: Int | null): number | null => (value === null ? null : Number(value));

function toRecord(row: BreakglassRow): BreakglassRecord {
  return {
    id: row.id,
    user: row.user_name,
    openedBy: row.opened_by,
    server: row.server,
    tools: JSON.parse(row.tools) as string[],
    ticket: row.ticket,
    reason: row.reason,
    openedAt: Number(row.opened_at),
    expiresAt: Number(row.expires_at),
    closedAt: num(row.closed_at),
    closedBy: row.closed_by,
    reviewedBy: row.reviewed_by,
    reviewedAt: num(row.reviewed_at),
    outcome: row.outcome as BreakglassOutcome | null,
    reviewReason: row.review_reason,
  };
}

/** Appends to the change counter in the caller's transaction. */
async function changed(tx: Statements, id: string, at: number): Promise<void> {
  await tx.run('INSERT INTO breakglass_changes (id, at) VALUES (?, ?)', [id, at]);
}

export class SqlBreakglassStore {
  private readonly engine: Engine;

  constructor(engine: Engine) {
    this.engine = engine;
  }

  /** A new grant; an id already taken is refused ("… already exists"). */
  async create(record: BreakglassRecord): Promise<void> {
    await this.engine.transaction('open break-glass grant', async (tx) => {
      const inserted = await tx.run(`INSERT INTO breakglass (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, [
        record.id,
        record.user,
        record.openedBy,
        record.server,
        JSON.stringify(record.tools),
        record.ticket,
        record.reason,
        record.openedAt,
        record.expiresAt,
        record.closedAt,
        record.closedBy,
        record.reviewedBy,
        record.reviewedAt,
        record.outcome,
        record.reviewReason,
      ]);
      if (inserted === 0) throw new Error(`break-glass grant ${record.id} already exists`);
      await changed(tx, record.id, record.openedAt);
    });
  }

  async get(id: string): Promise<BreakglassRecord | null> {
    const row = await this.engine.get<BreakglassRow>('read break-glass grant', `${SELECT} WHERE id = ?`, [id]);
    return row === undefined ? null : toRecord(row);
  }

  /** Grants in force at `now`: not closed, expiresAt > now; ordered by openedAt. */
  async active(now: number): Promise<BreakglassRecord[]> {
    const rows = await this.engine.all<BreakglassRow>('read break-glass grants', `${SELECT} WHERE closed_at IS NULL AND expires_at > ? ORDER BY opened_at, id`, [now]);
    return rows.map(toRecord);
  }

  /** Every grant, newest first, at most `limit` (default 1000). */
  async list(limit = 1000): Promise<BreakglassRecord[]> {
    const rows = await this.engine.all<BreakglassRow>('list break-glass grants', `${SELECT} ORDER BY opened_at DESC, id DESC LIMIT ?`, [Math.max(0, Math.floor(limit))]);
    return rows.map(toRecord);
  }

  /** Not reviewed and opened at or before `before`, oldest first. */
  async unreviewed(before: number): Promise<BreakglassRecord[]> {
    const rows = await this.engine.all<BreakglassRow>('read unreviewed break-glass grants', `${SELECT} WHERE reviewed_at IS NULL AND opened_at <= ? ORDER BY opened_at, id`, [before]);
    return rows.map(toRecord);
  }

  /** Ends a grant early; false if it was already closed or does not exist. */
  async close(id: string, by: string, at: number): Promise<boolean> {
    return this.engine.transaction('close break-glass grant', async (tx) => {
      if ((await tx.run('UPDATE breakglass SET closed_at = ?, closed_by = ? WHERE id = ? AND closed_at IS NULL', [at, by, id])) !== 1) return false;
      await changed(tx, id, at);
      return true;
    });
  }

  /** Records the review; false if it does not exist or was reviewed already (compare-and-set on reviewed_at IS NULL). */
  async review(id: string, by: string, outcome: BreakglassOutcome, reason: string, at: number): Promise<boolean> {
    return this.engine.transaction('review break-glass grant', async (tx) => {
      const updated = await tx.run('UPDATE breakglass SET reviewed_by = ?, reviewed_at = ?, outcome = ?, review_reason = ? WHERE id = ? AND reviewed_at IS NULL', [
        by,
        at,
        outcome,
        reason,
        id,
      ]);
      if (updated !== 1) return false;
      await changed(tx, id, at);
      return true;
    });
  }

  /** The newest change's seq (0 when nothing happened): gateway nodes poll it. */
  async lastChange(): Promise<number> {
    const row = await this.engine.get<{ n: Int | null }>('read break-glass change', 'SELECT max(seq) AS n FROM breakglass_changes');
    return Number(row?.n ?? 0);
  }
}
