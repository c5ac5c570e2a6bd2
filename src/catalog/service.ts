/**
 * The catalog's rules: who may do what (admin roles), what an entry must meet
 * to be admitted (catalog.admission), and how a change becomes a proposal
 * that someone approves. Every change is one atomic store write
 * (src/store/catalog.ts) followed by its audit event; the CLI and the admin
 * API both act through this class, as a named user.
 */
import { authTransportProblem, upstreamAuthSchema, type UpstreamAuth } from '../config/schema.ts';
import { randomBytes } from 'node:crypto';
import canonicalize from 'canonicalize';
import { RuleError } from '../admin/refusal.ts';
import { rolesHeld } from '../admin/roles.ts';
import type { AuditLog } from '../audit/log.ts';
import type { EventType, JsonValue } from '../audit/events.ts';
import type { AdminConfig, AdminRole, CatalogConfig } from '../config/catalog-schema.ts';
import { SERVER_NAME } from '../config/schema.ts';
import { wonRace, type CatalogChange, type HistoryRecord, type ProposalRecord } from '../store/catalog.ts';
import type { Store } from '../store/types.ts';
import { approvePin } from './pins.ts';
import type { Sealer } from './seal.ts';
import { upstreamOf } from './server-json.ts';
import { RISK_CLASSES, type CatalogEntry, type EntrySignature, type ExpectedIdentity, type Governance, type RiskClass, type ServerJson } from './types.ts';

const DAY = 86_400_000;

/** A catalog action was refused: the message names the rule (`admission.requireOwner`, `twoPersonRisk`, `roles`…). */
export class CatalogError extends RuleError {
  override readonly name = 'CatalogError';
}

export type CatalogAction = 'propose' | 'approve' | 'reject' | 'suspend' | 'retire' | 'renew' | 'pins' | 'read';

/** The roles that may take each action. `admin` may take every one. */
export const ACTION_ROLES: Readonly<Record<CatalogAction, readonly AdminRole[]>> = {
  propose: ['publisher', 'admin'],
  approve: ['approver', 'admin'],
  reject: ['approver', 'admin'],
  suspend: ['approver', 'admin'],
  retire: ['approver', 'admin'],
  renew: ['approver', 'admin'],
  pins: ['approver', 'admin'],
  read: ['auditor', 'publisher', 'approver', 'admin'],
};

/** What a proposal asks for; the CLI and the admin API build it from their input. */
export interface ProposalInput {
  serverJson: ServerJson;
  route: string;
  owner?: string;
  team?: string;
  contact?: string;
  tenant?: string;
  environment?: string;
  risk: RiskClass;
  classification?: string;
  expiresAt: Date;
  /** A detached JWS over the server.json, by a configured publisher. */
  signature?: string;
  expectedIdentity?: ExpectedIdentity;
  /** What the gateway presents to the upstream, as in mandate.yaml's `servers[].auth` (checked here). */
  auth?: unknown;
}

export interface CatalogDeps {
  store: Store;
  audit: AuditLog;
  /** Read at each action, so a reload's rules apply at once. */
  settings: () => { catalog: CatalogConfig; admin: AdminConfig };
  /** Checks a publisher's detached JWS over the server.json; throws (with a message) when it does not verify. */
  verifySignature?: (serverJson: ServerJson, jws: string) => Promise<EntrySignature>;
  /** Seals every entry written (src/catalog/seal.ts); without it entries carry no seal and the gateway serves none of them. */
  sealer?: Sealer;
  now?: () => Date;
}

/** The fields of a governance record a proposal sets (status and source are the catalog's). */
const PROPOSED_FIELDS = ['owner', 'team', 'contact', 'tenant', 'environment', 'risk', 'classification', 'expiresAt', 'expectedIdentity', 'auth'] as const;

/** A proposal's `auth`, checked as mandate.yaml's `servers[].auth` is, against the entry's transport. */
function authOf(value: unknown, serverJson: ServerJson): UpstreamAuth {
  const parsed = upstreamAuthSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? `auth.${issue.path.join('.')}` : 'auth';
    throw new CatalogError('auth', `${where}: ${issue?.message ?? 'is not valid'} (the same as servers[].auth in mandate.yaml, docs/credentials.md)`);
  }
  let transport: 'http' | 'stdio' | null = null;
  try {
    transport = upstreamOf(serverJson).transport;
  } catch {
    // Not servable as it is: refused at routing anyway; the transport check waits until it is.
  }
  const problem = transport === null ? null : authTransportProblem(parsed.data, transport);
  if (problem !== null) throw new CatalogError('auth', `auth${problem.path.length > 0 ? `.${problem.path.join('.')}` : ''}: ${problem.message}`);
  return parsed.data;
}

function same(a: unknown, b: unknown): boolean {
  return canonicalize(a ?? null) === canonicalize(b ?? null);
}

/** What a proposal changes against the entry in force, in words a reviewer reads. */
export function changesOf(current: CatalogEntry, next: { serverJson: ServerJson; governance: Governance; signature: EntrySignature | null }): string[] {
  const changes: string[] = [];
  const a = current.serverJson;
  const b = next.serverJson;
  if (a.version !== b.version) changes.push(`version ${a.version} → ${b.version}`);
  if (!same(a.remotes, b.remotes)) changes.push('remotes (URL)');
  if (!same(a.packages, b.packages)) changes.push('packages (command, package or environment)');
  const other = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of ['version', 'remotes', 'packages']) other.delete(key);
  for (const key of [...other].sort()) if (!same(a[key], b[key])) changes.push(`server.json ${key}`);
  for (const field of PROPOSED_FIELDS) {
    if (!same(current.governance[field], next.governance[field])) changes.push(field === 'expectedIdentity' ? 'expected identity' : field);
  }
  if (!same(current.signature?.jws ?? null, next.signature?.jws ?? null)) changes.push('signature');
  return changes;
}

export class Catalog {
  private readonly deps: CatalogDeps;

  constructor(deps: CatalogDeps) {
    this.deps = deps;
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  private get store() {
    return this.deps.store.catalog;
  }

  /**
   * The acting user's roles, from `admin.roles`; refuses an unknown or
   * disabled user, and one that holds none of the roles `action` needs.
   */
  async authorize(actor: string, action: CatalogAction): Promise<AdminRole[]> {
    const user = await this.deps.store.identity.getUser(actor);
    if (user === null) throw new CatalogError('roles', `no Mandate user "${actor}": act as a user that exists (mandate users add)`);
    if (user.disabled) throw new CatalogError('roles', `user "${actor}" is disabled`);
    const held = rolesHeld(this.deps.settings().admin, user);
    const needed = ACTION_ROLES[action];
    if (!held.some((role) => needed.includes(role))) {
      throw new CatalogError('roles', `user "${actor}" may not ${action === 'read' ? 'read the catalog' : action}: that needs the role ${needed.join(' or ')} (admin.roles in mandate.yaml)`);
    }
    return held;
  }

  async get(route: string): Promise<CatalogEntry> {
    const entry = await this.store.getEntry(route);
    if (entry === null) throw new CatalogError('unknown', `no server "${route}" in the catalog`);
    return entry;
  }

  /** Checks the admission rules for a governance record that would be in force from `now`. */
  private async admit(governance: Governance, serverJson: ServerJson, signature: string | undefined, now: Date): Promise<EntrySignature | null> {
    const { admission } = this.deps.settings().catalog;
    if (governance.owner === '') {
      if (admission.requireOwner) throw new CatalogError('admission.requireOwner', 'catalog.admission.requireOwner: an entry must name an owner (--owner USER)');
    } else {
      const owner = await this.deps.store.identity.getUser(governance.owner);
      if (owner === null || owner.disabled) throw new CatalogError('admission.requireOwner', `catalog.admission.requireOwner: the owner "${governance.owner}" is not an active Mandate user`);
    }
    if (!admission.environments.includes(governance.environment)) {
      throw new CatalogError('admission.environments', `catalog.admission.environments: "${governance.environment}" is not an allowed environment (${admission.environments.join(', ')})`);
    }
    if (governance.expiresAt === null) throw new CatalogError('admission.maxLifetimeDays', 'catalog.admission.maxLifetimeDays: an entry must have an expiry (--ttl or --expires)');
    const expires = Date.parse(governance.expiresAt);
    if (!(expires > now.getTime())) throw new CatalogError('admission.maxLifetimeDays', `the expiry ${governance.expiresAt} is not in the future`);
    if (expires - now.getTime() > admission.maxLifetimeDays * DAY) {
      throw new CatalogError(
        'admission.maxLifetimeDays',
        `catalog.admission.maxLifetimeDays: ${governance.expiresAt} is more than ${admission.maxLifetimeDays} days away; no entry is admitted or renewed for longer`,
      );
    }
    const signed = admission.requireSignatures.includes(governance.environment);
    if (signature === undefined) {
      if (signed) throw new CatalogError('admission.requireSignatures', `catalog.admission.requireSignatures: entries for "${governance.environment}" must be signed by an approved publisher (--signature FILE)`);
      return null;
    }
    if (this.deps.verifySignature === undefined || this.deps.settings().catalog.publishers.length === 0) {
      throw new CatalogError('signature', 'the entry carries a signature but no publishers are configured to verify it (catalog.publishers)');
    }
    try {
      return await this.deps.verifySignature(serverJson, signature);
    } catch (error) {
      throw new CatalogError('signature', `the signature does not verify: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /** A new entry, or a change to one, as a proposal; a new entry shows as `pending` until approved. */
  async propose(input: ProposalInput, actor: string, reason: string): Promise<ProposalRecord> {
    await this.authorize(actor, 'propose');
    if (!SERVER_NAME.test(input.route)) throw new CatalogError('route', `route "${input.route}" must be lowercase letters, digits and hyphens ([a-z0-9-]+, at most 63)`);
    if (!RISK_CLASSES.includes(input.risk)) throw new CatalogError('risk', `risk must be one of ${RISK_CLASSES.join(', ')}`);
    const now = this.now();
    const at = now.toISOString();
    const current = await this.store.getEntry(input.route);
    if (current?.governance.source === 'config-managed') {
      throw new CatalogError('route', `"${input.route}" is defined in mandate.yaml (config-managed); change it there, or choose another route`);
    }
    const open = await this.store.openProposal(input.route);
    if (open !== null) throw new CatalogError('proposal', `proposal ${open.id} for "${input.route}" is still open: approve or reject it first`);
    const governance: Governance = {
      route: input.route,
      owner: input.owner ?? '',
      ...(input.team !== undefined ? { team: input.team } : {}),
      ...(input.contact !== undefined ? { contact: input.contact } : {}),
      ...(input.tenant !== undefined ? { tenant: input.tenant } : {}),
      environment: input.environment ?? 'prod',
      risk: input.risk,
      ...(input.classification !== undefined ? { classification: input.classification } : {}),
      expiresAt: input.expiresAt.toISOString(),
      status: current?.governance.status ?? 'pending',
      ...(input.expectedIdentity !== undefined ? { expectedIdentity: input.expectedIdentity } : {}),
      ...(input.auth !== undefined ? { auth: authOf(input.auth, input.serverJson) } : {}),
      source: 'catalog',
    };
    const signature = await this.admit(governance, input.serverJson, input.signature, now);
    const content = { serverJson: input.serverJson, governance, signature, changes: [] as string[] };
    if (current !== null) {
      content.changes = changesOf(current, content);
      if (content.changes.length === 0) throw new CatalogError('unchanged', `the proposal changes nothing in "${input.route}"`);
    }
    const proposal: ProposalRecord = {
      id: `p-${randomBytes(6).toString('hex')}`,
      route: input.route,
      kind: current === null ? 'new' : 'change',
      status: 'open',
      content,
      proposedBy: actor,
      proposedAt: at,
      reason,
      decidedBy: null,
      decidedAt: null,
      decisionReason: null,
    };
    const entry: CatalogEntry | null =
      current === null
        ? { serverJson: input.serverJson, governance: { ...governance, status: 'pending' }, signature, pins: [], revision: 1, createdAt: at, updatedAt: at, approvedBy: null, approvedAt: null }
        : null;
    const history = this.historyItem(input.route, at, actor, 'proposed', reason, { proposal: proposal.id, kind: proposal.kind, changes: content.changes });
    await this.write({ entry, expectRevision: null, propose: proposal, history: [history] }, {
      type: 'server.proposed',
      route: input.route,
      actor,
      reason,
      data: { ...this.summary(input.serverJson, governance), proposal: proposal.id, kind: proposal.kind, changes: content.changes },
    });
    return proposal;
  }

  /**
   * Approves the route's open proposal, or reinstates a suspended entry. For
   * a risk class in `twoPersonRisk` the approver must not be the proposer.
   */
  async approve(route: string, actor: string, reason: string): Promise<CatalogEntry> {
    await this.authorize(actor, 'approve');
    const current = await this.get(route);
    const proposal = await this.store.openProposal(route);
    const now = this.now();
    const at = now.toISOString();
    if (proposal === null) {
      if (current.governance.status !== 'suspended') throw new CatalogError('proposal', `"${route}" has no open proposal to approve`);
      return this.transition(current, 'approved', actor, reason, 'server.approved', 'reinstated');
    }
    const { content } = proposal;
    if (this.deps.settings().catalog.admission.twoPersonRisk.includes(content.governance.risk) && proposal.proposedBy === actor) {
      throw new CatalogError(
        'twoPersonRisk',
        `catalog.admission.twoPersonRisk: "${route}" is ${content.governance.risk} risk; its approver must be someone other than its proposer (${actor})`,
      );
    }
    // The rules in force now, and the time now: an expiry that has passed since the proposal is refused.
    await this.admit(content.governance, content.serverJson, content.signature?.jws, now);
    const keepStatus = current.governance.status === 'suspended' || current.governance.status === 'retired';
    const entry: CatalogEntry = {
      serverJson: content.serverJson,
      governance: { ...content.governance, status: keepStatus ? current.governance.status : 'approved' },
      signature: content.signature,
      pins: current.pins,
      revision: current.revision + 1,
      createdAt: current.createdAt,
      updatedAt: at,
      approvedBy: actor,
      approvedAt: at,
    };
    await this.write(
      {
        entry,
        expectRevision: current.revision,
        decide: { id: proposal.id, status: 'approved', by: actor, at, reason },
        version: { route, name: content.serverJson.name, version: content.serverJson.version, serverJson: content.serverJson, approvedBy: actor, approvedAt: at },
        history: [this.historyItem(route, at, actor, 'approved', reason, { proposal: proposal.id, proposedBy: proposal.proposedBy, changes: content.changes })],
      },
      {
        type: 'server.approved',
        route,
        actor,
        reason,
        data: { ...this.summary(entry.serverJson, entry.governance), proposal: proposal.id, proposedBy: proposal.proposedBy, changes: content.changes },
      },
    );
    return entry;
  }

  /** Rejects the route's open proposal; a rejected new entry leaves the catalog (its history stays). */
  async reject(route: string, actor: string, reason: string): Promise<ProposalRecord> {
    await this.authorize(actor, 'reject');
    const current = await this.get(route);
    const proposal = await this.store.openProposal(route);
    if (proposal === null) throw new CatalogError('proposal', `"${route}" has no open proposal to reject`);
    const at = this.now().toISOString();
    const removing = proposal.kind === 'new' && current.governance.status === 'pending';
    await this.write(
      {
        entry: removing ? { ...current, governance: { ...current.governance, status: 'retired' }, revision: current.revision + 1, updatedAt: at } : null,
        expectRevision: current.revision,
        decide: { id: proposal.id, status: 'rejected', by: actor, at, reason },
        history: [this.historyItem(route, at, actor, 'rejected', reason, { proposal: proposal.id, proposedBy: proposal.proposedBy })],
      },
      { type: 'server.rejected', route, actor, reason, data: { name: proposal.content.serverJson.name, proposal: proposal.id, proposedBy: proposal.proposedBy } },
    );
    return { ...proposal, status: 'rejected', decidedBy: actor, decidedAt: at, decisionReason: reason };
  }

  async suspend(route: string, actor: string, reason: string): Promise<CatalogEntry> {
    await this.authorize(actor, 'suspend');
    const current = await this.get(route);
    if (current.governance.source === 'config-managed') throw new CatalogError('route', `"${route}" is defined in mandate.yaml (config-managed); remove it there`);
    if (current.governance.status !== 'approved' && current.governance.status !== 'expired') {
      throw new CatalogError('status', `"${route}" is ${current.governance.status}; only an approved or expired entry can be suspended`);
    }
    return this.transition(current, 'suspended', actor, reason, 'server.suspended', 'suspended');
  }

  async retire(route: string, actor: string, reason: string): Promise<CatalogEntry> {
    await this.authorize(actor, 'retire');
    const current = await this.get(route);
    if (current.governance.source === 'config-managed') throw new CatalogError('route', `"${route}" is defined in mandate.yaml (config-managed); remove it there`);
    if (current.governance.status === 'retired') throw new CatalogError('status', `"${route}" is already retired`);
    return this.transition(current, 'retired', actor, reason, 'server.retired', 'retired');
  }

  /** A new expiry for an approved or expired entry (within the maximum lifetime); an expired one is routable again at once. */
  async renew(route: string, expiresAt: Date, actor: string, reason: string): Promise<CatalogEntry> {
    await this.authorize(actor, 'renew');
    const current = await this.get(route);
    if (current.governance.source === 'config-managed') throw new CatalogError('route', `"${route}" is defined in mandate.yaml (config-managed): it does not expire`);
    if (current.governance.status !== 'approved' && current.governance.status !== 'expired') {
      throw new CatalogError('status', `"${route}" is ${current.governance.status}; only an approved or expired entry can be renewed`);
    }
    const now = this.now();
    const governance: Governance = { ...current.governance, expiresAt: expiresAt.toISOString(), status: 'approved' };
    await this.admit(governance, current.serverJson, current.signature?.jws, now);
    const at = now.toISOString();
    const entry: CatalogEntry = { ...current, governance, revision: current.revision + 1, updatedAt: at };
    await this.write(
      {
        entry,
        expectRevision: current.revision,
        history: [this.historyItem(route, at, actor, 'renewed', reason, { from: current.governance.expiresAt, to: governance.expiresAt, was: current.governance.status })],
      },
      { type: 'server.renewed', route, actor, reason, data: { ...this.summary(entry.serverJson, governance), previousExpiry: current.governance.expiresAt, previousStatus: current.governance.status } },
    );
    return entry;
  }

  /**
   * Marks an approved entry expired (the gateway calls this when the time
   * passes). False when another node did it first or it was renewed meanwhile.
   */
  async expire(route: string): Promise<boolean> {
    const current = await this.store.getEntry(route);
    const now = this.now();
    if (current === null || current.governance.status !== 'approved' || current.governance.expiresAt === null) return false;
    if (Date.parse(current.governance.expiresAt) > now.getTime()) return false;
    return wonRace(this.transition(current, 'expired', 'mandate', `expired at ${current.governance.expiresAt}`, 'server.expired', 'expired'));
  }

  /**
   * Pins a quarantined tool's live definition, if `hash` is the hash of the
   * definition the gateway saw last: if it changed again since the review,
   * the approval is refused.
   */
  async approvePin(route: string, tool: string, hash: string, actor: string, reason: string): Promise<CatalogEntry> {
    await this.authorize(actor, 'pins');
    const current = await this.get(route);
    const drift = (await this.store.listDrift(route)).find((item) => item.tool === tool);
    if (drift === undefined) throw new CatalogError('pins', `"${route}" has no quarantined tool "${tool}" (mandate servers drift ${route})`);
    if (drift.hash !== hash) {
      throw new CatalogError('pins', `the live definition of "${tool}" is ${drift.hash.slice(0, 16)}…, not the reviewed ${hash.slice(0, 16)}…: it changed since the review; review it again (mandate servers drift ${route})`);
    }
    let pins;
    try {
      pins = approvePin(current.pins, drift.definition, hash);
    } catch (error) {
      throw new CatalogError('pins', error instanceof Error ? error.message : String(error));
    }
    const at = this.now().toISOString();
    const entry: CatalogEntry = { ...current, pins, revision: current.revision + 1, updatedAt: at };
    const previous = current.pins.find((pin) => pin.name === tool)?.hash ?? null;
    await this.write(
      { entry, expectRevision: current.revision, settleDrift: [tool], history: [this.historyItem(route, at, actor, 'pin_approved', reason, { tool, hash, previous })] },
      { type: 'server.drift_approved', route, actor, reason, data: { name: current.serverJson.name, tool, hash, previous, kind: drift.kind } },
    );
    return entry;
  }

  /**
   * The upstream did not present the identity the entry was approved with:
   * the entry is suspended by Mandate itself (every node stops routing to it,
   * and a restart does not undo it) until an approver reinstates it.
   */
  async identityMismatch(route: string, detail: { check: string; expected: string; actual: string }): Promise<boolean> {
    const current = await this.store.getEntry(route);
    if (current === null || current.governance.source !== 'catalog' || current.governance.status !== 'approved') return false;
    const reason = `the upstream's identity did not match: ${detail.check} check expected ${detail.expected}, got ${detail.actual}`;
    return wonRace(this.transition(current, 'suspended', 'mandate', reason, 'server.identity_mismatch', 'identity_mismatch', { ...detail }));
  }

  async history(route: string): Promise<HistoryRecord[]> {
    return this.store.history(route);
  }

  /** A change of status only, with its history line and event; `detail` goes into both. */
  private async transition(current: CatalogEntry, status: Governance['status'], actor: string, reason: string, type: EventType, action: string, detail: { [key: string]: JsonValue } = {}): Promise<CatalogEntry> {
    const at = this.now().toISOString();
    const entry: CatalogEntry = { ...current, governance: { ...current.governance, status }, revision: current.revision + 1, updatedAt: at };
    const route = current.governance.route;
    await this.write(
      { entry, expectRevision: current.revision, history: [this.historyItem(route, at, actor, action, reason, { from: current.governance.status, to: status, ...detail })] },
      { type, route, actor, reason, data: { ...this.summary(entry.serverJson, entry.governance), ...detail, previousStatus: current.governance.status } },
    );
    return entry;
  }

  private summary(serverJson: ServerJson, governance: Governance): { [key: string]: JsonValue } {
    return {
      name: serverJson.name,
      version: serverJson.version,
      owner: governance.owner,
      environment: governance.environment,
      risk: governance.risk,
      status: governance.status,
      expiresAt: governance.expiresAt,
    };
  }

  private historyItem(route: string, at: string, actor: string, action: string, reason: string, data: { [key: string]: JsonValue }): Omit<HistoryRecord, 'seq'> {
    return { route, at, actor, action, reason, data };
  }

  /** The change, then its audit event. A change is never made without its record: if the event cannot be written the caller is told. */
  private async write(change: CatalogChange, event: { type: EventType; route: string; actor: string; reason: string; data: { [key: string]: JsonValue } }): Promise<void> {
    const sealer = this.deps.sealer;
    await this.store.apply(change.entry === null ? change : { ...change, entry: { ...change.entry, seal: sealer === undefined ? null : sealer.seal(change.entry) } });
    try {
      await this.deps.audit.record({ type: event.type, actor: event.actor, server: event.route, outcome: 'success', reason: event.reason, data: event.data });
    } catch (error) {
      throw new Error(`the catalog changed (${event.type} ${event.route}), but its audit event could not be written: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}
