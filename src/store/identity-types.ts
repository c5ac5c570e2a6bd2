/**
 * The identity part of the Store interface: what the authorization server
 * keeps. Nothing here holds a bearer secret in the clear: callers pass
 * SHA-256 hashes of token values, codes, session ids and client secrets, and
 * sealed (encrypted) private keys. Times are epoch milliseconds.
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
export type RevocationKind = 'jti' | 'grant' | 'client' | 'user' | 'consent';

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

export interface IdentityStore {
  // --- oidc-provider artifacts (adapter) ---
  /** Inserts or replaces one artifact; `key` is already hashed by the caller. */
  oidcUpsert(model: OidcModel, key: string, payload: Record<string, unknown>, expiresAt: number | null, refs: OidcRefs): Promise<void>;
  /** The artifact, or null if absent or expired. */
  oidcFind(model: OidcModel, key: string): Promise<OidcRecord | null>;
  oidcFindByUid(model: OidcModel, uid: string): Promise<(OidcRecord & { key: string }) | null>;
  oidcFindByUserCode(model: OidcModel, userCode: string): Promise<(OidcRecord & { key: string }) | null>;
  /**
   * Marks consumed, atomically: true only for the call that consumed it (the
   * first consumption time is kept); false if it was already consumed or is absent.
   */
  oidcConsume(model: OidcModel, key: string, at: number): Promise<boolean>;
  oidcDestroy(model: OidcModel, key: string): Promise<void>;
  /** Deletes every artifact of this model that belongs to the grant. */
  oidcRevokeByGrant(model: OidcModel, grantId: string): Promise<void>;

  // --- clients ---
  /** Inserts a new client; rejects (Error) if the id exists. */
  createClient(client: ClientRecord): Promise<void>;
  /** Replaces metadata/secret of an existing client (status untouched). */
  updateClientMetadata(id: string, metadata: Record<string, unknown>, secretHash: string | null, at: number): Promise<void>;
  getClient(id: string): Promise<ClientRecord | null>;
  listClients(filter?: { status?: ClientStatus }): Promise<ClientRecord[]>;
  /**
   * Moves a client to `to` only if its status is one of `from`; true if it
   * moved. Sets decidedBy, updatedAt, and owner if `owner` is given and the
   * client has none.
   */
  transitionClient(id: string, from: readonly ClientStatus[], to: ClientStatus, by: string, at: number, owner?: string): Promise<boolean>;
  /** Clients registered from this address at or after `since`. */
  countClientsFrom(address: string, since: number): Promise<number>;
  touchClient(id: string, at: number): Promise<void>;
  /** Deletes pending or active clients created before `createdBefore` that never obtained a token; returns their ids. */
  expireUnusedClients(createdBefore: number): Promise<string[]>;

  // --- registration (initial access) tokens ---
  createRegistrationToken(token: RegistrationTokenRecord): Promise<void>;
  /** Atomically uses one registration if the token exists, is unexpired and has uses left. */
  useRegistrationToken(hash: string, at: number): Promise<boolean>;

  // --- users ---
  /** Inserts a user; rejects (Error) if the name exists. */
  createUser(user: UserRecord): Promise<void>;
  getUser(name: string): Promise<UserRecord | null>;
  listUsers(): Promise<UserRecord[]>;
  /** True if the user exists. */
  setUserDisabled(name: string, disabled: boolean, at: number): Promise<boolean>;
  /** Replaces a user's groups (as an upstream provider reports them); true if the user exists. */
  setUserGroups(name: string, groups: readonly string[], at: number): Promise<boolean>;

  // --- consents ---
  /** Records or widens consent (scopes are merged with any already granted). */
  putConsent(consent: ConsentRecord): Promise<void>;
  getConsent(user: string, clientId: string, resource: string): Promise<ConsentRecord | null>;
  listConsents(filter?: { user?: string; clientId?: string }): Promise<ConsentRecord[]>;
  /** Deletes matching consents (at least one filter field required); returns those deleted. */
  deleteConsents(filter: { user?: string; clientId?: string }): Promise<ConsentRecord[]>;

  // --- keys ---
  putKey(key: KeyRecord): Promise<void>;
  /** Keys of this purpose that have not expired, newest first. */
  listKeys(purpose: KeyPurpose, now: number): Promise<KeyRecord[]>;
  retireKey(kid: string, retiredAt: number, expiresAt: number): Promise<void>;

  // --- revocations ---
  addRevocation(revocation: Omit<RevocationRecord, 'seq'>): Promise<RevocationRecord>;
  /** Unexpired revocations with seq greater than `afterSeq`, in seq order. */
  listRevocations(afterSeq: number, now: number): Promise<RevocationRecord[]>;

  /** Deletes expired artifacts, revocations and keys; returns how many rows went. */
  purgeExpired(now: number): Promise<number>;
}
