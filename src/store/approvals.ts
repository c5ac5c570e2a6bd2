/**
 * The approvals plane (migration 7, docs/approvals.md): requests for a
 * human's approval of one tool call, one row each. A request is bound to one
 * call (`binding`, computed by the gateway) and open until `expiresAt`. Its
 * decision (pending → approved or denied) and its use (approved → used) are
 * each one compare-and-set on `status`, taken only while the request has not
 * expired: of two deciders, or two retried calls, on any nodes exactly one
 * wins. The rules (who may decide) are the service's
 * (src/approvals/service.ts); this file only keeps the records.
 */
import type { Int } from './identity-rows.ts';
import type { Engine } from './sql/engine.ts';

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'used';

export const APPROVAL_STATUSES: readonly ApprovalStatus[] = ['pending', 'approved', 'denied', 'used'];

/** The most `args` may hold: 16 KiB of UTF-8. */
export const MAX_APPROVAL_ARGS_BYTES = 16 * 1024;

export interface ApprovalRecord {
  /** 'ap-' + 12 lowercase hex. */
  id: string;
  /** SHA-256 hex of what the approval is bound to (computed by the gateway). */
  binding: string;
  /** The user whose call it is. */
  requester: string;
  clientId: string;
  server: string;
  tool: string;
  /** SHA-256 hex of the RFC 8785 canonical arguments. */
  argsHash: string;
  /** The canonical arguments (JSON text, at most 16 KiB), shown to deciders; never put in the audit log; '' once forgotten (forgetArgs). */
  args: string;
  /** Members of any of these groups may decide. */
  groups: string[];
  /** The permits that asked for approval. */
  policies: string[];
  /** The policy set's hash. */
  policySet: string;
  /** The tool's pinned hash, '' when it has none. */
  pin: string;
  status: ApprovalStatus;
  /** Epoch ms. */
  requestedAt: number;
  /** Epoch ms. */
  expiresAt: number;
  decidedBy: string | null;
  decidedAt: number | null;
  /** The decider's reason. */
  reason: string | null;
  usedAt: number | null;
}

/** What a new request holds until it is decided and used. */
export const NOT_DECIDED = {
  status: 'pending',
  decidedBy: null,
  decidedAt: null,
  reason: null,
  usedAt: null,
} as const satisfies Partial<ApprovalRecord>;

export interface ApprovalListOptions {
  status?: ApprovalStatus;
  /** With status `pending`: only the requests unexpired at this time (epoch ms). */
  now?: number;
  /** At most this many (default 1000). */
  limit?: number;
}

interface ApprovalRow {
  id: string;
  binding: string;
  requester: string;
  client_id: string;
  server: string;
  tool: string;
  args_hash: string;
  args: string;
  group_names: string;
  policy_ids: string;
  policy_set: string;
  pin: string;
  status: string;
  requested_at: Int;
  expires_at: Int;
  decided_by: string | null;
  decided_at: Int | null;
  reason: string | null;
  used_at: Int | null;
}

const COLUMNS =
  'id, binding, requester, client_id, server, tool, args_hash, args, group_names, policy_ids, policy_set, pin, status, requested_at, expires_at, decided_by, decided_at, reason, used_at';
const SELECT = `SELECT ${COLUMNS} FROM approvals`;
const NEWEST_FIRST = 'ORDER BY requested_at DESC, id DESC';
const num = (value: Int | null): number | null => (value === null ? null : Number(value));

function toRecord(row: ApprovalRow): ApprovalRecord {
  return {
    id: row.id,
    binding: row.binding,
    requester: row.requester,
    clientId: row.client_id,
    server: row.server,
    tool: row.tool,
    argsHash: row.args_hash,
    args: row.args,
    groups: JSON.parse(row.group_names) as string[],
    policies: JSON.parse(row.policy_ids) as string[],
    policySet: row.policy_set,
    pin: row.pin,
    status: row.status as ApprovalStatus,
    requestedAt: Number(row.requested_at),
    expiresAt: Number(row.expires_at),
    decidedBy: row.decided_by,
    decidedAt: num(row.decided_at),
    reason: row.reason,
    usedAt: num(row.used_at),
  };
}

/** A record the table could not hold is the caller's bug (a RangeError, passed through), not an outage. */
function checked(record: ApprovalRecord): ApprovalRecord {
  if (!APPROVAL_STATUSES.includes(record.status)) throw new RangeError(`approval request ${record.id}: status "${String(record.status)}" is none of ${APPROVAL_STATUSES.join(', ')}`);
  if (!(record.expiresAt > record.requestedAt)) throw new RangeError(`approval request ${record.id}: it must expire after it was requested`);
  const bytes = Buffer.byteLength(record.args, 'utf8');
  if (bytes > MAX_APPROVAL_ARGS_BYTES) throw new RangeError(`approval request ${record.id}: its arguments are ${bytes} bytes, more than ${MAX_APPROVAL_ARGS_BYTES}`);
  return record;
}

export class SqlApprovalsStore {
  private readonly engine: Engine;

  constructor(engine: Engine) {
    this.engine = engine;
  }

  /** A new request; an id already taken is refused ("… already exists"). */
  async create(record: ApprovalRecord): Promise<void> {
    const r = checked(record);
    const inserted = await this.engine.run('create approval request', `INSERT INTO approvals (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, [
      r.id,
      r.binding,
      r.requester,
      r.clientId,
      r.server,
      r.tool,
      r.argsHash,
      r.args,
      JSON.stringify(r.groups),
      JSON.stringify(r.policies),
      r.policySet,
      r.pin,
      r.status,
      r.requestedAt,
      r.expiresAt,
      r.decidedBy,
      r.decidedAt,
      r.reason,
      r.usedAt,
    ]);
    if (inserted === 0) throw new Error(`approval request ${r.id} already exists`);
  }

  async get(id: string): Promise<ApprovalRecord | null> {
    const row = await this.engine.get<ApprovalRow>('read approval request', `${SELECT} WHERE id = ?`, [id]);
    return row === undefined ? null : toRecord(row);
  }

  /** The newest request with this binding that has not expired at `now` and is pending, approved or denied (not used); null if none. */
  async byBinding(binding: string, now: number): Promise<ApprovalRecord | null> {
    const row = await this.engine.get<ApprovalRow>(
      'read approval request',
      `${SELECT} WHERE binding = ? AND expires_at > ? AND status IN ('pending', 'approved', 'denied') ${NEWEST_FIRST} LIMIT 1`,
      [binding, now],
    );
    return row === undefined ? null : toRecord(row);
  }

  /** pending → approved|denied, only while unexpired at `at` (compare-and-set); false otherwise. */
  async decide(id: string, status: 'approved' | 'denied', by: string, reason: string, at: number): Promise<boolean> {
    if (status !== 'approved' && status !== 'denied') throw new RangeError(`an approval request is decided approved or denied, not "${String(status)}"`);
    const updated = await this.engine.run(
      'decide approval request',
      "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, reason = ? WHERE id = ? AND status = 'pending' AND expires_at > ?",
      [status, by, at, reason, id, at],
    );
    return updated === 1;
  }

  /** approved → used, only while unexpired at `at` (compare-and-set; single use); false otherwise. */
  async consume(id: string, at: number): Promise<boolean> {
    const updated = await this.engine.run('use approval', "UPDATE approvals SET status = 'used', used_at = ? WHERE id = ? AND status = 'approved' AND expires_at > ?", [at, id, at]);
    return updated === 1;
  }

  /**
   * Forgets the arguments (`args` becomes '') of every request that ended
   * before `endedBefore`: used, denied, or expired by then. A request that may
   * still be decided or used keeps them; `argsHash` always stays. Returns how
   * many were forgotten.
   */
  async forgetArgs(endedBefore: number): Promise<number> {
    return this.engine.run(
      'forget the arguments of ended approval requests',
      "UPDATE approvals SET args = '' WHERE args <> '' AND (expires_at <= ? OR (status = 'used' AND used_at <= ?) OR (status = 'denied' AND decided_at <= ?))",
      [endedBefore, endedBefore, endedBefore],
    );
  }

  /** Newest first; `status` filters; at most `limit` (default 1000). `pending` with `now` lists only unexpired ones. */
  async list(options: ApprovalListOptions = {}): Promise<ApprovalRecord[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (options.status !== undefined) {
      where.push('status = ?');
      params.push(options.status);
      if (options.status === 'pending' && options.now !== undefined) {
        where.push('expires_at > ?');
        params.push(options.now);
      }
    }
    const filter = where.length === 0 ? '' : ` WHERE ${where.join(' AND ')}`;
    const rows = await this.engine.all<ApprovalRow>('list approval requests', `${SELECT}${filter} ${NEWEST_FIRST} LIMIT ?`, [...params, Math.max(0, Math.floor(options.limit ?? 1000))]);
    return rows.map(toRecord);
  }
}
