/**
 * `mandate clients list | show | approve | reject | revoke | token create`,
 * and what every admin command shares (users, tokens, consents import it):
 * the acting admin, the store with its audit log, and reading times and typed
 * values. Output never carries a secret and goes through output.ts, so that it
 * cannot drive the terminal (client metadata comes from whoever registered it).
 */
import { AuditLog } from '../audit/log.ts';
import type { IdentityEvent } from '../audit/events.ts';
import { KEEP_MS } from '../identity/revocations.ts';
import { hashSecret, randomToken } from '../identity/secrets.ts';
import type { ClientRecord, ClientStatus, Store } from '../store/types.ts';
import { openAdminStore, UsageError, type StoreFlags } from './common.ts';
import { clean, printFields, printJson, printLine, printNote, printTable } from './output.ts';

// ---------------------------------------------------------------- shared

export interface AdminFlags extends StoreFlags {
  json?: boolean;
  actor?: string;
}

export interface Admin {
  store: Store;
  actor: string;
  /** The audit log these commands write to (the one `record` uses). */
  audit: AuditLog;
  /** Records one event as this admin (outcome success); throws if it could not be written. */
  record(type: IdentityEvent['type'], data: NonNullable<IdentityEvent['data']>, done: string): Promise<void>;
  /** Records several events in one write. */
  recordAll(events: { type: IdentityEvent['type']; data: NonNullable<IdentityEvent['data']> }[], done: string): Promise<void>;
}

const ACTOR = /^[^\p{Cc}\p{Cf}\s][^\p{Cc}\p{Cf}]{0,127}$/u;

/** The admin named in audit events: `--actor`, else $USER, else `admin`. */
export function actorOf(flags: { actor?: string }, env = process.env): string {
  if (flags.actor !== undefined) {
    const actor = flags.actor.trim();
    if (!ACTOR.test(actor)) throw new UsageError('--actor takes a name of 1 to 128 printable characters');
    return actor;
  }
  const user = env.USER?.trim();
  return user && ACTOR.test(user) ? user : 'admin';
}

/** Opens the store (as `up` would find it) and its audit log for one admin action; closes it afterwards. */
export async function withAdmin<T>(flags: AdminFlags, body: (admin: Admin) => Promise<T>): Promise<T> {
  const actor = actorOf(flags);
  const store = await openAdminStore(flags);
  try {
    const audit = new AuditLog(store);
    const recordAll: Admin['recordAll'] = async (events, done) => {
      try {
        await Promise.all(events.map((event) => audit.record({ ...event, actor, outcome: 'success' })));
      } catch (error) {
        // The change is made: say so, so the admin knows the log lacks it.
        throw new Error(`${done}, but its audit event could not be written: ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    return await body({ store, actor, audit, recordAll, record: (type, data, done) => recordAll([{ type, data }], done) });
  } finally {
    await store.close();
  }
}

export function iso(ms: number): string;
export function iso(ms: number | null): string | null;
export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** A time for people: ISO 8601 to the second. */
export function when(ms: number | null, none = '-'): string {
  return ms === null ? none : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DAY = 86_400_000;

/** `30m`, `24h`, `7d`… in milliseconds. */
export function parseDuration(flag: string, value: string, min: number, max: number, range: string): number {
  const match = /^(\d{1,7})([smhd])$/.exec(value.trim());
  const ms = match ? Number(match[1]) * (UNITS[match[2] ?? 's'] ?? 1000) : Number.NaN;
  if (!(ms >= min && ms <= max)) throw new UsageError(`${flag} takes a duration from ${range} (such as 30m, 24h, 7d), not "${clean(value)}"`);
  return ms;
}

/** A value an admin typed to name something (an id, a label): printable, bounded. */
export function parseText(flag: string, value: string, max: number): string {
  if (value.length === 0 || value.length > max || /[\p{Cc}\p{Cf}]/u.test(value)) {
    throw new UsageError(`${flag} takes 1 to ${max} printable characters`);
  }
  return value;
}

// ---------------------------------------------------------------- clients

/** Metadata keys that would carry a credential: never shown, even if a record somehow holds one. */
const SECRET_METADATA = new Set(['client_secret', 'registration_access_token']);

function publicMetadata(metadata: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(metadata).filter(([key]) => !SECRET_METADATA.has(key)));
}

function clientName(client: ClientRecord): string | null {
  const name = client.metadata.client_name;
  return typeof name === 'string' ? name : null;
}

/** A client as shown: whether it has a secret, never the secret or its hash. */
export function clientView(client: ClientRecord) {
  return {
    id: client.id,
    name: clientName(client),
    status: client.status,
    class: client.class,
    source: client.source,
    owner: client.owner,
    hasSecret: client.secretHash !== null,
    registeredFrom: client.registeredFrom,
    createdAt: iso(client.createdAt),
    updatedAt: iso(client.updatedAt),
    lastUsedAt: iso(client.lastUsedAt),
    decidedBy: client.decidedBy,
    metadata: publicMetadata(client.metadata),
  };
}

const STATUSES: readonly ClientStatus[] = ['pending', 'active', 'rejected', 'revoked'];

function metadataList(value: unknown): string {
  if (Array.isArray(value)) return value.length ? value.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(', ') : '-';
  if (value === undefined || value === null) return '-';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function printClient(client: ClientRecord): void {
  const m = client.metadata;
  printFields([
    ['id', client.id],
    ['name', clientName(client) ?? '-'],
    ['status', client.status],
    ['class', client.class],
    ['source', client.source],
    ['owner', client.owner ?? '-'],
    ['secret', client.secretHash !== null ? 'yes (confidential client; the secret is not shown)' : 'no (public client)'],
    ['redirect_uris', metadataList(m.redirect_uris)],
    ['grant_types', metadataList(m.grant_types)],
    ['auth_method', metadataList(m.token_endpoint_auth_method)],
    ['client_uri', metadataList(m.client_uri)],
    ['software', [m.software_id, m.software_version].filter((v) => typeof v === 'string').join(' ') || '-'],
    ['registered_from', client.registeredFrom ?? '-'],
    ['created', when(client.createdAt)],
    ['updated', when(client.updatedAt)],
    ['last_used', when(client.lastUsedAt, 'never')],
    ['decided_by', client.decidedBy ?? '-'],
  ]);
}

export function listClients(flags: AdminFlags & { status?: string }): Promise<number> {
  const status = flags.status;
  if (status !== undefined && !(STATUSES as readonly string[]).includes(status)) {
    throw new UsageError(`--status takes one of ${STATUSES.join(', ')}`);
  }
  return withAdmin(flags, async ({ store }) => {
    const clients = await store.identity.listClients(status === undefined ? undefined : { status: status as ClientStatus });
    if (flags.json) printJson(clients.map(clientView));
    else {
      printTable(
        ['ID', 'STATUS', 'CLASS', 'SOURCE', 'OWNER', 'NAME', 'CREATED', 'LAST USED'],
        clients.map((c) => [c.id, c.status, c.class, c.source, c.owner ?? '-', clientName(c) ?? '-', when(c.createdAt), when(c.lastUsedAt, 'never')]),
        status === undefined ? 'no clients' : `no ${status} clients`,
      );
    }
    return 0;
  });
}

async function requireClient(store: Store, id: string): Promise<ClientRecord> {
  const client = await store.identity.getClient(id);
  if (!client) throw new UsageError(`no client with id "${clean(id)}" (see \`mandate clients list\`)`);
  return client;
}

export function showClient(id: string, flags: AdminFlags): Promise<number> {
  return withAdmin(flags, async ({ store }) => {
    const client = await requireClient(store, id);
    if (flags.json) printJson(clientView(client));
    else printClient(client);
    return 0;
  });
}

interface Transition {
  verb: string;
  from: readonly ClientStatus[];
  to: ClientStatus;
  event: 'client.approved' | 'client.rejected' | 'client.revoked';
}

const TRANSITIONS = {
  approve: { verb: 'approved', from: ['pending'], to: 'active', event: 'client.approved' },
  reject: { verb: 'rejected', from: ['pending'], to: 'rejected', event: 'client.rejected' },
  revoke: { verb: 'revoked', from: ['pending', 'active'], to: 'revoked', event: 'client.revoked' },
} as const satisfies Record<string, Transition>;

export type ClientAction = keyof typeof TRANSITIONS;

export function decideClient(action: ClientAction, id: string, flags: AdminFlags): Promise<number> {
  const step: Transition = TRANSITIONS[action];
  return withAdmin(flags, async ({ store, actor, record }) => {
    const now = Date.now();
    // Approving makes the approving admin the owner of a client nobody owns yet.
    const moved = await store.identity.transitionClient(id, step.from, step.to, actor, now, action === 'approve' ? actor : undefined);
    if (!moved) {
      const client = await requireClient(store, id);
      const which = step.from.length === 1 ? `a ${step.from[0]} client` : `a ${step.from.join(' or ')} client`;
      throw new UsageError(`client "${clean(id)}" is ${client.status}: only ${which} can be ${step.verb}`);
    }
    let revocation = null;
    if (action === 'revoke') {
      revocation = await store
        .identity.addRevocation({ kind: 'client', value: id, revokedAt: now, expiresAt: now + KEEP_MS.client })
        .catch((error: unknown) => {
          throw new Error(`client "${clean(id)}" is revoked, but its tokens could not be (run \`mandate tokens revoke --client ID\`): ${error instanceof Error ? error.message : String(error)}`);
        });
    }
    await record(step.event, { client_id: id }, `client "${clean(id)}" was ${step.verb}`);
    const client = await requireClient(store, id);
    if (flags.json) {
      printJson(revocation ? { ...clientView(client), revocation: { kind: revocation.kind, value: revocation.value, revokedAt: iso(revocation.revokedAt), expiresAt: iso(revocation.expiresAt) } } : clientView(client));
    } else {
      const name = clientName(client);
      const label = `client ${id}${name ? ` (${name})` : ''}`;
      if (action === 'revoke') printLine(`revoked ${label}: it can obtain no more tokens, and every token issued to it is refused`);
      else printLine(`${step.verb} ${label}: now ${client.status}${action === 'approve' ? `, owner ${client.owner ?? '-'}` : ''}`);
    }
    return 0;
  });
}

export interface TokenCreateFlags extends AdminFlags {
  uses?: string;
  expiresIn?: string;
  label?: string;
}

export const MAX_USES = 1000;

/** `mandate clients token create`: an initial access token for dynamic registration, shown once, kept as a hash. */
export function createRegistrationToken(flags: TokenCreateFlags): Promise<number> {
  const usesText = flags.uses ?? '1';
  const uses = Number(usesText);
  if (!/^\d{1,4}$/.test(usesText) || uses < 1 || uses > MAX_USES) throw new UsageError(`--uses takes a whole number from 1 to ${MAX_USES}`);
  const lifetime = parseDuration('--expires-in', flags.expiresIn ?? '24h', 60_000, 30 * DAY, '1m to 30d');
  const label = flags.label === undefined ? null : parseText('--label', flags.label, 200);
  return withAdmin(flags, async ({ store, actor, record }) => {
    const now = Date.now();
    const token = randomToken(32);
    const expiresAt = now + lifetime;
    await store.identity.createRegistrationToken({ hash: hashSecret(token), label, createdBy: actor, createdAt: now, expiresAt, usesLeft: uses });
    await record('token.issued', { kind: 'registration', uses, expiresAt: iso(expiresAt), label }, 'the registration token was created');
    if (flags.json) printJson({ token, uses, expiresAt: iso(expiresAt), label, createdBy: actor });
    else {
      printFields([
        ['token', token],
        ['uses', String(uses)],
        ['expires', when(expiresAt)],
        ['label', label ?? '-'],
      ]);
      printNote('This token is shown once: Mandate keeps only its hash. A client registers with it as `Authorization: Bearer <token>`.');
    }
    return 0;
  });
}
