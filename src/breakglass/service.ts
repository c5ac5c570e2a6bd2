/**
 * Break-glass: emergency access that policy can see (docs/breakglass.md).
 *
 * Rules, each refusal a BreakglassError naming its rule:
 * - `open` and `close` need the role `admin`; `review`, `list` and `overdue`
 *   as a named user need `admin` or `auditor` (`admin.roles`). The acting
 *   user must exist and be enabled.
 * - `open` needs a ticket (1 to 200 printable characters), a reason (1 to
 *   1000), a server name, optional tool names (each 1 to 200), and a ttl in
 *   (0, breakglass.maxTtlSeconds]. It covers the opener, or an existing,
 *   enabled user it is opened for.
 * - `review` is taken once, by someone other than the opener and other than
 *   the user the grant covered (the two-person rule).
 *
 * Every change is one store write (src/store/breakglass.ts), then its event:
 * `breakglass.opened` (severity high, and whether the webhook was told),
 * `breakglass.closed`, `breakglass.reviewed`. The webhook is best effort: a
 * grant opens whether or not it answered.
 */
import { randomBytes } from 'node:crypto';
import { grantInputs, RuleError } from '../admin/refusal.ts';
import { rolesHeld } from '../admin/roles.ts';
import type { EventType, JsonValue } from '../audit/events.ts';
import type { AuditLog } from '../audit/log.ts';
import type { AdminConfig, AdminRole } from '../config/catalog-schema.ts';
import type { BreakglassConfig } from '../config/schema.ts';
import { NOT_CLOSED_OR_REVIEWED, type BreakglassOutcome, type BreakglassRecord } from '../store/breakglass.ts';
import type { Store } from '../store/types.ts';
import { sendNotice, type WebhookNotice } from './webhook.ts';

const DAY = 86_400_000;

/** A break-glass action was refused: the message names the rule (`roles`, `ticket`, `breakglass.maxTtlSeconds`, `two-person`…). */
export class BreakglassError extends RuleError {
  override readonly name = 'BreakglassError';
}

export type BreakglassAction = 'open' | 'close' | 'review' | 'read';

/** The roles that may take each action. */
export const BREAKGLASS_ROLES: Readonly<Record<BreakglassAction, readonly AdminRole[]>> = {
  open: ['admin'],
  close: ['admin'],
  review: ['admin', 'auditor'],
  read: ['admin', 'auditor'],
};

export const OUTCOMES: readonly BreakglassOutcome[] = ['justified', 'unjustified'];

export interface OpenInput {
  ticket: string;
  reason: string;
  server: string;
  /** Absent or []: every tool of the server. */
  tools?: readonly string[];
  ttlSeconds: number;
  /** Whose calls it covers; default the opener. */
  user?: string;
}

export interface Opened {
  grant: BreakglassRecord;
  /** `sent`, `failed: CODE` or `none` (no webhook configured). */
  webhook: string;
}

export interface BreakglassDeps {
  store: Store;
  audit: AuditLog;
  /** Read at each action, so a reload's settings apply at once. */
  settings: () => { admin: AdminConfig; breakglass: BreakglassConfig };
  now?: () => number;
  /** Posts the notice to the webhook; the answer is `sent` or `failed: CODE` (default: src/breakglass/webhook.ts). */
  notify?: (url: string, notice: WebhookNotice) => Promise<string>;
}

const { text, server, tools, ttl } = grantInputs((rule, message) => new BreakglassError(rule, message), {
  needs: 'break-glass access needs one',
  lasts: 'a break-glass grant',
  ttlRule: 'breakglass.maxTtlSeconds',
});

const newId = (): string => `bg-${randomBytes(6).toString('hex')}`;
const iso = (ms: number): string => new Date(ms).toISOString();

export class Breakglass {
  private readonly deps: BreakglassDeps;

  constructor(deps: BreakglassDeps) {
    this.deps = deps;
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** An existing, enabled user: the actor (rule `roles`) or the user a grant covers (rule `user`). */
  private async enabledUser(name: string, rule: 'roles' | 'user') {
    const user = await this.deps.store.identity.getUser(name);
    const who = rule === 'roles' ? `user "${name}"` : `the user to cover, "${name}",`;
    if (user === null) throw new BreakglassError(rule, rule === 'roles' ? `no Mandate user "${name}": act as a user that exists (mandate users add)` : `no Mandate user "${name}" to open break-glass access for (mandate users add)`);
    if (user.disabled) throw new BreakglassError(rule, `${who} is disabled`);
    return user;
  }

  /** The acting user's roles; refuses an unknown or disabled user, and one without a role `action` needs. */
  async authorize(actor: string, action: BreakglassAction): Promise<AdminRole[]> {
    const held = rolesHeld(this.deps.settings().admin, await this.enabledUser(actor, 'roles'));
    const needed = BREAKGLASS_ROLES[action];
    if (!held.some((role) => needed.includes(role))) {
      const what = action === 'read' ? 'read break-glass grants' : `${action} break-glass access`;
      throw new BreakglassError('roles', `user "${actor}" may not ${what}: that needs the role ${needed.join(' or ')} (admin.roles in mandate.yaml)`);
    }
    return held;
  }

  /** Opens a grant, tells the webhook, records `breakglass.opened`. */
  async open(actor: string, input: OpenInput): Promise<Opened> {
    await this.authorize(actor, 'open');
    const settings = this.deps.settings().breakglass;
    const ticket = text('ticket', 'a ticket', input.ticket, 200);
    const reason = text('reason', 'a reason', input.reason, 1000);
    const seconds = ttl(input.ttlSeconds, settings.maxTtlSeconds);
    const user = input.user === undefined || input.user === actor ? actor : (await this.enabledUser(input.user, 'user')).name;
    const openedAt = this.now();
    const grant: BreakglassRecord = {
      id: newId(),
      user,
      openedBy: actor,
      server: server(input.server),
      tools: tools(input.tools),
      ticket,
      reason,
      openedAt,
      expiresAt: openedAt + seconds * 1000,
      ...NOT_CLOSED_OR_REVIEWED,
    };
    await this.deps.store.breakglass.create(grant);
    const webhook = settings.webhook === undefined ? 'none' : await (this.deps.notify ?? sendNotice)(settings.webhook, noticeOf(grant));
    const data = { id: grant.id, user, tools: grant.tools, ticket, reason, expiresAt: iso(grant.expiresAt), severity: 'high', webhook };
    await this.recorded('breakglass.opened', actor, grant, data, `break-glass grant ${grant.id} is open`);
    return { grant, webhook };
  }

  /** Ends a grant before it expires. */
  async close(actor: string, id: string, reason?: string): Promise<BreakglassRecord> {
    await this.authorize(actor, 'close');
    const why = reason === undefined ? null : text('reason', 'a reason', reason, 1000);
    const grant = await this.get(id);
    const at = this.now();
    if (grant.closedAt !== null) throw new BreakglassError('closed', `break-glass grant ${id} was closed already, by ${grant.closedBy ?? '?'} at ${iso(grant.closedAt)}`);
    if (grant.expiresAt <= at) throw new BreakglassError('closed', `break-glass grant ${id} expired at ${iso(grant.expiresAt)}: there is nothing to close`);
    if (!(await this.deps.store.breakglass.close(id, actor, at))) throw new BreakglassError('closed', `break-glass grant ${id} was closed meanwhile`);
    const closed = { ...grant, closedAt: at, closedBy: actor };
    await this.recorded('breakglass.closed', actor, closed, { id, user: grant.user, reason: why }, `break-glass grant ${id} is closed`);
    return closed;
  }

  /** Records the after-the-fact review, once, by someone other than the opener and the user it covered. */
  async review(actor: string, id: string, outcome: string, reason: string): Promise<BreakglassRecord> {
    await this.authorize(actor, 'review');
    if (!(OUTCOMES as readonly string[]).includes(outcome)) throw new BreakglassError('outcome', `the outcome is ${OUTCOMES.join(' or ')}, not "${outcome}"`);
    const why = text('reason', 'a reason', reason, 1000);
    const grant = await this.get(id);
    if (actor === grant.openedBy || actor === grant.user) {
      const role = actor === grant.openedBy ? 'opened' : 'was covered by';
      throw new BreakglassError('two-person', `user "${actor}" ${role} break-glass grant ${id} and may not review it: the two-person rule needs a reviewer other than its opener and its user`);
    }
    if (grant.reviewedAt !== null) throw reviewedAlready(grant);
    const at = this.now();
    if (!(await this.deps.store.breakglass.review(id, actor, outcome as BreakglassOutcome, why, at))) throw reviewedAlready(await this.get(id));
    const reviewed = { ...grant, reviewedBy: actor, reviewedAt: at, outcome: outcome as BreakglassOutcome, reviewReason: why };
    await this.recorded('breakglass.reviewed', actor, reviewed, { id, outcome, reason: why, openedBy: grant.openedBy, user: grant.user }, `break-glass grant ${id} is reviewed`);
    return reviewed;
  }

  /** Grants not reviewed within breakglass.reviewDays of being opened, oldest first. */
  async overdue(now = this.now()): Promise<BreakglassRecord[]> {
    return this.deps.store.breakglass.unreviewed(now - this.deps.settings().breakglass.reviewDays * DAY);
  }

  /** Every grant, newest first. */
  async list(limit?: number): Promise<BreakglassRecord[]> {
    return this.deps.store.breakglass.list(limit);
  }

  async get(id: string): Promise<BreakglassRecord> {
    const grant = await this.deps.store.breakglass.get(id);
    if (grant === null) throw new BreakglassError('unknown', `no break-glass grant "${id}"`);
    return grant;
  }

  /** Records the change's event; if it cannot be written, says that the change itself was made. */
  private async recorded(type: EventType, actor: string, grant: BreakglassRecord, data: { [key: string]: JsonValue }, done: string): Promise<void> {
    try {
      await this.deps.audit.record({ type, actor, server: grant.server, outcome: 'success', data });
    } catch (error) {
      throw new Error(`${done}, but its audit event could not be written: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}

function reviewedAlready(grant: BreakglassRecord): BreakglassError {
  const at = grant.reviewedAt === null ? '' : ` at ${iso(grant.reviewedAt)}`;
  return new BreakglassError('reviewed', `break-glass grant ${grant.id} was reviewed already, by ${grant.reviewedBy ?? '?'}${at} (${grant.outcome ?? '?'})`);
}

/** What the webhook is told of a new grant: no secret, times in ISO 8601. */
export function noticeOf(grant: BreakglassRecord): WebhookNotice {
  return {
    type: 'breakglass.opened',
    id: grant.id,
    user: grant.user,
    openedBy: grant.openedBy,
    server: grant.server,
    tools: grant.tools,
    ticket: grant.ticket,
    reason: grant.reason,
    openedAt: iso(grant.openedAt),
    expiresAt: iso(grant.expiresAt),
  };
}
