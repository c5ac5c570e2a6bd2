/**
 * The identity tables' column lists, the rows they read back (as either
 * database returns them) and the conversions between rows and records, and
 * the pure helpers around them; the statements are in ../identity.ts.
 */
import type {
  ClientRecord,
  ConsentRecord,
  KeyPurpose,
  KeyRecord,
  OidcRecord,
  RegistrationTokenRecord,
  RevocationRecord,
  UserRecord,
} from './identity-types.ts';

/** An integer column: SQLite gives numbers, PostgreSQL gives bigint columns as strings. */
export type Int = string | number;

export interface OidcRow {
  key: string;
  payload: string;
  consumed_at: Int | null;
  expires_at: Int | null;
}

export interface ClientRow {
  id: string;
  status: ClientRecord['status'];
  class: ClientRecord['class'];
  source: ClientRecord['source'];
  owner: string | null;
  metadata: string;
  secret_hash: string | null;
  registered_from: string | null;
  created_at: Int;
  updated_at: Int;
  last_used_at: Int | null;
  decided_by: string | null;
}

export interface UserRow {
  name: string;
  password_hash: string | null;
  groups: string;
  /** SQLite stores 0 or 1; PostgreSQL a boolean. */
  disabled: number | boolean;
  created_at: Int;
  updated_at: Int;
}

export interface ConsentRow {
  user_name: string;
  client_id: string;
  resource: string;
  scopes: string;
  granted_at: Int;
}

export interface KeyRow {
  kid: string;
  purpose: KeyPurpose;
  alg: string;
  sealed: string;
  created_at: Int;
  retired_at: Int | null;
  expires_at: Int | null;
}

export interface RevocationRow {
  seq: Int;
  kind: RevocationRecord['kind'];
  value: string;
  revoked_at: Int;
  expires_at: Int;
}

export const OIDC_COLUMNS = 'key, payload, consumed_at, expires_at';
export const CLIENT_COLUMNS =
  'id, status, class, source, owner, metadata, secret_hash, registered_from, created_at, updated_at, last_used_at, decided_by';
export const USER_COLUMNS = 'name, password_hash, groups, disabled, created_at, updated_at';
export const CONSENT_COLUMNS = 'user_name, client_id, resource, scopes, granted_at';
export const KEY_COLUMNS = 'kid, purpose, alg, sealed, created_at, retired_at, expires_at';
export const REVOCATION_COLUMNS = 'seq, kind, value, revoked_at, expires_at';
export const REGISTRATION_TOKEN_COLUMNS = 'hash, label, created_by, created_at, expires_at, uses_left';

function int(value: Int): number {
  return Number(value);
}

function intOrNull(value: Int | null): number | null {
  return value === null ? null : Number(value);
}

// --- rows to records ---

export function toOidc(row: OidcRow): OidcRecord & { key: string } {
  return {
    key: row.key,
    payload: JSON.parse(row.payload) as Record<string, unknown>,
    consumedAt: intOrNull(row.consumed_at),
    expiresAt: intOrNull(row.expires_at),
  };
}

/** The artifact without its key (what `oidcFind` returns). */
export function toOidcWithoutKey(row: OidcRow): OidcRecord {
  const { key: _key, ...record } = toOidc(row);
  return record;
}

export function toClient(row: ClientRow): ClientRecord {
  return {
    id: row.id,
    status: row.status,
    class: row.class,
    source: row.source,
    owner: row.owner,
    metadata: JSON.parse(row.metadata) as Record<string, unknown>,
    secretHash: row.secret_hash,
    registeredFrom: row.registered_from,
    createdAt: int(row.created_at),
    updatedAt: int(row.updated_at),
    lastUsedAt: intOrNull(row.last_used_at),
    decidedBy: row.decided_by,
  };
}

export function toUser(row: UserRow): UserRecord {
  return {
    name: row.name,
    passwordHash: row.password_hash,
    groups: JSON.parse(row.groups) as string[],
    disabled: row.disabled === true || row.disabled === 1,
    createdAt: int(row.created_at),
    updatedAt: int(row.updated_at),
  };
}

export function toConsent(row: ConsentRow): ConsentRecord {
  return {
    user: row.user_name,
    clientId: row.client_id,
    resource: row.resource,
    scopes: JSON.parse(row.scopes) as string[],
    grantedAt: int(row.granted_at),
  };
}

export function toKey(row: KeyRow): KeyRecord {
  return {
    kid: row.kid,
    purpose: row.purpose,
    alg: row.alg,
    sealed: row.sealed,
    createdAt: int(row.created_at),
    retiredAt: intOrNull(row.retired_at),
    expiresAt: intOrNull(row.expires_at),
  };
}

export function toRevocation(row: RevocationRow): RevocationRecord {
  return {
    seq: int(row.seq),
    kind: row.kind,
    value: row.value,
    revokedAt: int(row.revoked_at),
    expiresAt: int(row.expires_at),
  };
}

// --- records to column values (in the order of the column lists above) ---

/** CLIENT_COLUMNS' values for a client, metadata as JSON. */
export function clientValues(client: ClientRecord): (string | number | null)[] {
  return [
    client.id,
    client.status,
    client.class,
    client.source,
    client.owner,
    JSON.stringify(client.metadata),
    client.secretHash,
    client.registeredFrom,
    client.createdAt,
    client.updatedAt,
    client.lastUsedAt,
    client.decidedBy,
  ];
}

/** REGISTRATION_TOKEN_COLUMNS' values for a token. */
export function registrationTokenValues(token: RegistrationTokenRecord): (string | number | null)[] {
  return [token.hash, token.label, token.createdBy, token.createdAt, token.expiresAt, token.usesLeft];
}

/** KEY_COLUMNS' values for a key. */
export function keyValues(key: KeyRecord): (string | number | null)[] {
  return [key.kid, key.purpose, key.alg, key.sealed, key.createdAt, key.retiredAt, key.expiresAt];
}

// --- pure helpers ---

/** WHERE clause (with a leading space, `?` placeholders) and parameters for a consent filter; undefined fields are ignored. */
export function consentFilter(filter: { user?: string; clientId?: string } | undefined): { where: string; params: string[] } {
  const terms: string[] = [];
  const params: string[] = [];
  if (filter?.user !== undefined) {
    params.push(filter.user);
    terms.push('user_name = ?');
  }
  if (filter?.clientId !== undefined) {
    params.push(filter.clientId);
    terms.push('client_id = ?');
  }
  return { where: terms.length > 0 ? ` WHERE ${terms.join(' AND ')}` : '', params };
}

/** The union of two scope lists, without duplicates, sorted. */
export function mergeScopes(granted: readonly string[], added: readonly string[]): string[] {
  return [...new Set([...granted, ...added])].sort(compareText);
}

export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function compareConsents(a: ConsentRecord, b: ConsentRecord): number {
  return compareText(a.user, b.user) || compareText(a.clientId, b.clientId) || compareText(a.resource, b.resource);
}
