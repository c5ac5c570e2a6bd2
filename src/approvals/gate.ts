/**
 * Approval of a single call at the gateway (docs/approvals.md). A
 * `tools/call` that policy allows through a permit marked
 * `@approval("GROUP")` goes on only with an approval of that very call:
 *
 * - The approval is bound to the caller (the user, or `client:ID` for a
 *   machine client), the client, the server, the tool, the SHA-256 of the
 *   call's arguments in RFC 8785 form, the policy set's hash and the tool's
 *   reviewed pin ('' when it has none): the SHA-256 of all of them together
 *   is the request's binding. Other arguments, another policy set or a
 *   changed pin find no approval and ask for a new one.
 * - No request yet: one is created (pending, for `approvals.ttlSeconds`),
 *   recorded (`approval.requested`), and the call is answered with a URL
 *   elicitation (`-32042`) whose link is the request's page,
 *   {issuer}/approvals/ID; the message names the link too.
 * - Pending: the same answer, with the same link. Denied: refused, with
 *   who denied it and why. Approved: used once (compare-and-set, so two
 *   retries cannot both pass), recorded (`approval.used`), and the call goes
 *   on, its record marked with the approval's id.
 *
 * Nothing is forwarded before the approval is used; an approval that
 * cannot be recorded is not used (fail closed).
 */
import { createHash, randomBytes } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { AuditLog } from '../audit/log.ts';
import { GatewayError } from '../gateway/errors.ts';
import type { IdentityEvent } from '../audit/events.ts';
import { MAX_APPROVAL_ARGS_BYTES as MAX_APPROVAL_ARGS, type ApprovalRecord } from '../store/approvals.ts';
import type { Store } from '../store/types.ts';


export interface ApprovalGateDeps {
  store: Store;
  audit: AuditLog;
  issuer: string;
  /** How long a request stays open, and an approval usable (approvals.ttlSeconds), ms; read at each request. */
  ttlMs: () => number;
  now?: () => number;
}

/** A call that needs approval. */
export interface ApprovalAsk {
  /** The user, or `client:ID` for a machine client. */
  requester: string;
  clientId: string;
  server: string;
  tool: string;
  args: Record<string, unknown>;
  /** Who may approve: members of any of these groups. */
  groups: readonly string[];
  /** The permits that asked for approval, and the set's hash. */
  policies: readonly string[];
  policySet: string;
  /** The tool's reviewed pin ('' when it has none). */
  pin: string;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** The link of a request: its page. */
export function approvalUrl(issuer: string, id: string): string {
  return `${issuer.replace(/\/$/, '')}/approvals/${id}`;
}

export class ApprovalGate {
  private readonly deps: ApprovalGateDeps;

  constructor(deps: ApprovalGateDeps) {
    this.deps = deps;
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** The id of the approval this call uses; otherwise a GatewayError: the URL elicitation of its request, or its denial. */
  async check(ask: ApprovalAsk): Promise<string> {
    const args = canonicalize(ask.args) ?? '{}';
    if (Buffer.byteLength(args) > MAX_APPROVAL_ARGS) {
      throw new GatewayError('policy_denied', `calling "${ask.tool}" needs a person's approval, and its arguments are longer than an approval can show (${MAX_APPROVAL_ARGS} bytes)`);
    }
    const argsHash = sha256(args);
    const binding = sha256(canonicalize({ requester: ask.requester, client: ask.clientId, server: ask.server, tool: ask.tool, args: argsHash, policySet: ask.policySet, pin: ask.pin }) ?? '');
    const now = this.now();
    const found = await this.deps.store.approvals.byBinding(binding, now);
    if (found?.status === 'approved') {
      if (await this.deps.store.approvals.consume(found.id, now)) {
        await this.record({ type: 'approval.used', actor: ask.requester, server: ask.server, tool: ask.tool, outcome: 'success', data: { id: found.id, clientId: ask.clientId, argsHash, decidedBy: found.decidedBy } });
        return found.id;
      }
      // Used by a retry running at the same moment: this one asks anew.
    } else if (found?.status === 'denied') {
      throw new GatewayError('policy_denied', `calling "${ask.tool}" with these arguments was denied by ${found.decidedBy ?? 'an approver'}: ${found.reason ?? 'no reason given'}`, { detail: `approval ${found.id} denied` });
    } else if (found?.status === 'pending') {
      throw this.required(found);
    }
    const record: ApprovalRecord = {
      id: `ap-${randomBytes(6).toString('hex')}`,
      binding,
      requester: ask.requester,
      clientId: ask.clientId,
      server: ask.server,
      tool: ask.tool,
      argsHash,
      args,
      groups: [...ask.groups],
      policies: [...ask.policies],
      policySet: ask.policySet,
      pin: ask.pin,
      status: 'pending',
      requestedAt: now,
      expiresAt: now + this.deps.ttlMs(),
      decidedBy: null,
      decidedAt: null,
      reason: null,
      usedAt: null,
    };
    await this.deps.store.approvals.create(record);
    await this.record({
      type: 'approval.requested',
      actor: ask.requester,
      server: ask.server,
      tool: ask.tool,
      outcome: 'success',
      data: { id: record.id, clientId: ask.clientId, argsHash, groups: record.groups, policies: record.policies, policySet: ask.policySet, pin: ask.pin, expiresAt: new Date(record.expiresAt).toISOString() },
    });
    throw this.required(record);
  }

  private async record(event: IdentityEvent): Promise<void> {
    try {
      await this.deps.audit.record(event);
    } catch (error) {
      throw new GatewayError('audit_unavailable', 'the audit log is unavailable: the request was refused', { detail: String(error), cause: error });
    }
  }

  /** The URL elicitation of a pending request: its page, in the error's data and in its message. */
  private required(record: ApprovalRecord): GatewayError {
    const url = approvalUrl(this.deps.issuer, record.id);
    const who = record.groups.map((group) => `"${group}"`).join(' or ');
    const message = `Calling "${record.tool}" on "${record.server}" needs the approval of a member of ${who}: open ${url}, then call again with the same arguments`;
    return new GatewayError('approval_required', message, {
      data: { elicitations: [{ mode: 'url', elicitationId: record.id, url, message: `Calling "${record.tool}" needs a person's approval` }] },
      detail: `approval ${record.id} pending`,
    });
  }
}
