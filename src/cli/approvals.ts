/**
 * `mandate approvals list | approve | deny` (docs/approvals.md). Each reads
 * mandate.yaml (`--config`) for the store it names and acts through the
 * approvals service, which holds every rule; `approve` and `deny` act as a
 * named Mandate user (`--as`). A missing or malformed flag exits 2 naming the
 * flag; a refusal by a rule exits 1 naming the rule. `list --json` prints the
 * call's arguments (a decider needs to see them); nothing here puts them in
 * the audit log.
 */
import { Approvals, type Verdict } from '../approvals/service.ts';
import { AuditLog } from '../audit/log.ts';
import { APPROVAL_STATUSES, type ApprovalRecord, type ApprovalStatus } from '../store/approvals.ts';
import { iso, parseText, when } from './clients.ts';
import { required, UsageError, withConfiguredStore } from './common.ts';
import { printJson, printLine, printTable } from './output.ts';
import type { ServerFlags } from './servers.ts';

/** As every `breakglass` command: --config, the store, --json, --as, --reason. */
export type ApprovalsFlags = ServerFlags;

/** Loads mandate.yaml and opens the store it names, for one approvals action. */
function withApprovals<T>(flags: ApprovalsFlags, body: (service: Approvals) => Promise<T>): Promise<T> {
  return withConfiguredStore(flags, (store) => body(new Approvals({ store, audit: new AuditLog(store) })));
}

/** Whether a request can still be decided (pending) or used (approved) at `now`. */
const expired = (request: ApprovalRecord, now: number): boolean => (request.status === 'pending' || request.status === 'approved') && request.expiresAt <= now;

/** A request as `--json` prints it: times in ISO 8601, the arguments included, and whether it has expired. */
function view(request: ApprovalRecord, now = Date.now()) {
  return {
    ...request,
    requestedAt: iso(request.requestedAt),
    expiresAt: iso(request.expiresAt),
    decidedAt: iso(request.decidedAt),
    usedAt: iso(request.usedAt),
    expired: expired(request, now),
  };
}

function parseStatus(value: string | undefined): ApprovalStatus | undefined {
  if (value === undefined || (APPROVAL_STATUSES as readonly string[]).includes(value)) return value as ApprovalStatus | undefined;
  throw new UsageError(`--status takes ${APPROVAL_STATUSES.join(', ')}`);
}

export async function list(flags: ApprovalsFlags & { status?: string }): Promise<void> {
  const status = parseStatus(flags.status);
  await withApprovals(flags, async (service) => {
    const requests = await service.list({ status });
    const now = Date.now();
    if (flags.json) return printJson(requests.map((request) => view(request, now)));
    printTable(
      ['ID', 'REQUESTER', 'SERVER/TOOL', 'STATUS', 'REQUESTED', 'EXPIRES', 'GROUPS'],
      requests.map((r) => [r.id, r.requester, `${r.server}/${r.tool}`, expired(r, now) ? `${r.status} (expired)` : r.status, when(r.requestedAt), when(r.expiresAt), r.groups.join(', ')]),
      status === undefined ? 'no approval requests' : `no ${status} approval requests`,
    );
  });
}

/** `approve` or `deny`: needs --reason and --as. */
export async function decide(verdict: Verdict, id: string, flags: ApprovalsFlags): Promise<void> {
  const reason = required('--reason TEXT', flags.reason, `say why the call is ${verdict}`);
  const as = parseText('--as', required('--as USER', flags.as, 'a call is approved or denied by a named Mandate user'), 128);
  await withApprovals(flags, async (service) => {
    const request = await service.decide(id, as, verdict, reason);
    if (flags.json) return printJson(view(request));
    const call = `${request.requester}'s call of ${request.server}/${request.tool}`;
    printLine(verdict === 'approved' ? `approved ${request.id} (${call}): it may be used once, until ${when(request.expiresAt)}` : `denied ${request.id} (${call})`);
  });
}
