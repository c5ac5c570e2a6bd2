/**
 * The identity plane's records: what the authorization server keeps (its
 * store: ./identity.ts). Nothing here holds a bearer secret in the clear:
 * callers pass SHA-256 hashes of token values, codes, session ids and client
 * secrets, and sealed (encrypted) private keys. Times are epoch milliseconds.
 */

/** oidc-provider model names stored through `oidc*` (Client is kept in `clients`). */
export type OidcModel = string;

export interface OidcRecord {
  payload: Record<string, unknown>;
  /** Epoch ms it was consumed (a used code, a rotated refresh token), or null. */
  consumedAt: number | null;
  /** Epoch ms after which it is gone, or null for no expiry. */
  expiresAt: number | null;
}

export interface OidcRefs {
  grantId?: string | undefined;
  /** Hash of the interaction or session uid. */
  uid?: string | undefined;
  /** Hash of a device user code. */
  userCode?: string | undefined;
}

export type ClientStatus = 'pending' | 'active' | 'rejected' | 'revoked';
export type ClientClass = 'interactive' | 'machine';
export type ClientSource = 'dcr' | 'cimd' | 'admin';

export interface ClientRecord {
  id: string;
  status: ClientStatus;
  class: ClientClass;
  source: ClientSource;
  /** The user or admin who registered or approved it; null until known. */
  owner: string | null;
  /** RFC 7591 metadata without `client_secret`. */
  metadata: Record<string, unknown>;
  /** `sha256:<hex>` of the client secret, or null for a public client. */
  secretHash: string | null;
  /** Network address it registered from (rate limits, audit). */
  registeredFrom: string | null;
  createdAt: number;
  updatedAt: number;
  /** Last time it obtained a token, or null if never. */
  lastUsedAt: number | null;
  /** Who moved it to its current status (approve, reject, revoke), or null. */
  decidedBy: string | null;
}

export interface UserRecord {
  name: string;
  /** scrypt hash in PHC-like form, or null for users who only log in upstream. */
  passwordHash: string | null;
  groups: string[];
  disabled: boolean;
  createdAt: number;
  updatedAt: number;
}

export interface ConsentRecord {
  user: string;
  clientId: string;
  /** The canonical resource URI (one MCP server) this consent covers. */
  resource: string;
  scopes: string[];
  grantedAt: number;
}

export interface RegistrationTokenRecord {
  /** `sha256:<hex>` of the token. */
  hash: string;
  label: string | null;
  createdBy: string;
  createdAt: number;
  expiresAt: number;
  /** Registrations it may still make. */
  usesLeft: number;
}

export type KeyPurpose = 'signing' | 'cookie';

export interface KeyRecord {
  kid: string;
  purpose: KeyPurpose;
  alg: string;
  /** The private key, sealed with the deployment's secret (src/identity/secrets.ts). */
  sealed: string;
  createdAt: number;
  /** Set when a newer key took over; still published until `expiresAt`. */
  retiredAt: number | null;
  /** Removed from the key set after this; null while active. */
  expiresAt: number | null;
}

/** `consent`: the value is `USER` + newline + `CLIENT_ID` (one user's tokens through one client). */
export type RevocationKind = 'jti' | 'grant' | 'client' | 'user' | 'consent' | 'task';

export interface RevocationRecord {
  /** Store-assigned, increasing; lets nodes fetch only what is new. */
  seq: number;
  kind: RevocationKind;
  value: string;
  /** Tokens of this kind/value issued at or before this time (epoch ms) are refused. */
  revokedAt: number;
  /** Kept until then (the longest lifetime of a token it can cover); then purged. */
  expiresAt: number;
}
