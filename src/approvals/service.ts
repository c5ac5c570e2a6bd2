/**
 * Approvals of single calls: deciding a request (docs/approvals.md). The
 * gateway creates a request when a permit marked `@approval("GROUP")` would
 * allow a call, and uses an approval once when the same call is retried; the
 * CLI (`mandate approvals`) and the approval page decide through `decide`.
 *
 * Rules, each refusal an ApprovalError naming its rule:
 * - `reason`: a decision needs a reason, 1 to 1000 printable characters.
 * - `unknown`: the id names no request.
 * - `user`: the decider is an existing, enabled Mandate user.
 * - `self-approval`: the requester may not decide their own request.
 * - `group`: the decider is a member of one of the request's groups.
 * - `decided`, `expired`: only a pending request that has not expired is
 *   decided, once (a compare-and-set in the store, src/store/approvals.ts).
 *
 * A decision is one store write, then its event (`approval.approved` or
 * `approval.denied`). No event ever holds the call's arguments, only their
 * hash.
 */
import { RuleError } from '../admin/refusal.ts';
import type { AuditLog } from '../audit/log.ts';
import type { ApprovalListOptions, ApprovalRecord } from '../store/approvals.ts';
import type { Store } from '../store/types.ts';

/** An approval action was refused: the message names the rule (`self-approval`, `group`, `decided`, `expired`…). */
export class ApprovalError extends RuleError {
  override readonly name = 'ApprovalError';
}

export type Verdict = 'approved' | 'denied';

export const VERDICTS: readonly Verdict[] = ['approved', 'denied'];

/** How long a request's arguments are kept once it has ended (used, denied or expired): a day, for its decider to look back; then only their hash. */
export const ARGS_KEPT_MS = 24 * 3_600_000;

export interface ApprovalsDeps {
  store: Store;
  audit: AuditLog;
  now?: () => number;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** The decider's reason: 1 to 1000 printable characters, not only spaces. */
function reasonOf(value: string | undefined): string {
  if (value === undefined || value.trim() === '') throw new ApprovalError('reason', 'a reason is required: say why the call is approved or denied');
  if (value.length > 1000 || /[\p{Cc}\p{Cf}]/u.test(value)) throw new ApprovalError('reason', 'a reason takes 1 to 1000 printable characters');
  return value;
}

/** Refuses a request that is no longer pending (`decided`) or has expired at `at` (`expired`). */
function refuseClosed(request: ApprovalRecord, at: number): void {
  if (request.status !== 'pending') {
    const by = request.decidedBy === null ? '' : ` by ${request.decidedBy}${request.decidedAt === null ? '' : ` at ${iso(request.decidedAt)}`}`;
    const used = request.usedAt === null ? '' : `, and used at ${iso(request.usedAt)}`;
    const status = request.status === 'used' ? 'approved' : request.status;
    throw new ApprovalError('decided', `approval request ${request.id} is decided already: ${status}${by}${used}`);
  }
  if (request.expiresAt <= at) {
    throw new ApprovalError('expired', `approval request ${request.id} expired at ${iso(request.expiresAt)} undecided: the call needs a new request (retrying it asks again)`);
  }
}

export class Approvals {
  private readonly deps: ApprovalsDeps;

  constructor(deps: ApprovalsDeps) {
    this.deps = deps;
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** The request, or a refusal naming the rule `unknown`. */
  async get(id: string): Promise<ApprovalRecord> {
    const request = await this.deps.store.approvals.get(id);
    if (request === null) throw new ApprovalError('unknown', `unknown approval request "${id}"`);
    return request;
  }

  /** Forgets the arguments of requests that ended more than ARGS_KEPT_MS ago; how many. */
  async forgetArguments(): Promise<number> {
    return this.deps.store.approvals.forgetArgs(this.now() - ARGS_KEPT_MS);
  }

  /** Newest first; `status: 'pending'` lists only the requests that have not expired. */
  async list(options: Omit<ApprovalListOptions, 'now'> = {}): Promise<ApprovalRecord[]> {
    return this.deps.store.approvals.list({ ...options, now: this.now() });
  }

  /** Approves or denies a pending request as `actor`, a member of one of its groups other than its requester; records the event. */
  async decide(id: string, actor: string, verdict: Verdict, reason: string): Promise<ApprovalRecord> {
    if (!VERDICTS.includes(verdict)) throw new ApprovalError('verdict', `a request is ${VERDICTS.join(' or ')}, not "${String(verdict)}"`);
    const why = reasonOf(reason);
    const request = await this.get(id);
    await this.mayDecide(actor, request);
    const at = this.now();
    refuseClosed(request, at);
    if (!(await this.deps.store.approvals.decide(id, verdict, actor, why, at))) {
      refuseClosed(await this.get(id), at);
      throw new ApprovalError('decided', `approval request ${id} was decided meanwhile`);
    }
    const decided: ApprovalRecord = { ...request, status: verdict, decidedBy: actor, decidedAt: at, reason: why };
    // Never the arguments: only their hash.
    const data = { id, requester: request.requester, clientId: request.clientId, argsHash: request.argsHash, policies: request.policies, policySet: request.policySet, reason: why };
    try {
      await this.deps.audit.record({ type: `approval.${verdict}`, actor, server: request.server, tool: request.tool, outcome: 'success', data });
    } catch (error) {
      throw new Error(`approval request ${id} is ${verdict}, but its audit event could not be written: ${error instanceof Error ? error.message : String(error)}`);
    }
    return decided;
  }

  /** Refuses an actor who is unknown or disabled (`user`), the requester (`self-approval`), or in none of the request's groups (`group`). */
  async mayDecide(actor: string, request: ApprovalRecord): Promise<void> {
    const user = await this.deps.store.identity.getUser(actor);
    if (user === null) throw new ApprovalError('user', `no Mandate user "${actor}": act as a user that exists (mandate users add)`);
    if (user.disabled) throw new ApprovalError('user', `user "${actor}" is disabled`);
    if (actor === request.requester) {
      throw new ApprovalError('self-approval', `user "${actor}" requested approval request ${request.id} and may not decide it (self-approval): a call is approved or denied by someone other than its requester`);
    }
    if (!request.groups.some((group) => user.groups.includes(group))) {
      const groups = request.groups.length === 0 ? 'no group names a decider' : `that needs membership of the group ${request.groups.join(' or ')}`;
      throw new ApprovalError('group', `user "${actor}" may not decide approval request ${request.id}: ${groups} (the permit's @approval)`);
    }
  }
}
