/**
 * The identity tables (migration 2) on SQLite's main connection. Every call
 * is one synchronous statement, or one BEGIN IMMEDIATE transaction when it
 * reads before it writes, so calls never interleave and other processes wait
 * on the write lock. Database failures become StoreUnavailableError (the
 * store's `guard`); "already exists" is a plain Error, decided outside it.
 */
import type { StatementSync } from 'node:sqlite';
import type {
  ClientRecord,
  ClientStatus,
  ConsentRecord,
  IdentityStore,
  KeyPurpose,
  KeyRecord,
  OidcModel,
  OidcRecord,
  OidcRefs,
  RegistrationTokenRecord,
  RevocationRecord,
  UserRecord,
} from '../identity-types.ts';
import {
  CLIENT_COLUMNS,
  CONSENT_COLUMNS,
  KEY_COLUMNS,
  OIDC_COLUMNS,
  REGISTRATION_TOKEN_COLUMNS,
  REVOCATION_COLUMNS,
  USER_COLUMNS,
  clientValues,
  compareConsents,
  compareText,
  consentFilter,
  keyValues,
  mergeScopes,
  registrationTokenValues,
  toClient,
  toConsent,
  toKey,
  toOidc,
  toOidcWithoutKey,
  toRevocation,
  toUser,
} from '../identity-rows.ts';
import type { ClientRow, ConsentRow, KeyRow, OidcRow, RevocationRow, UserRow } from '../identity-rows.ts';

/** What SqliteStore lends: its statement cache, error guard and write transaction. */
export interface SqliteAccess {
  stmt(sql: string): StatementSync;
  guard<T>(what: string, work: () => T): T;
  transaction<T>(what: string, work: () => T): T;
}

/** An artifact is live until its expiry (exclusive); null never expires. */
const LIVE = '(expires_at IS NULL OR expires_at > ?)';
/** SQLite's parameter marker, whatever the position. */
const PARAM = (): string => '?';

export class SqliteIdentity implements IdentityStore {
  private readonly db: SqliteAccess;

  constructor(access: SqliteAccess) {
    this.db = access;
  }

  // --- oidc-provider artifacts ---

  async oidcUpsert(model: OidcModel, key: string, payload: Record<string, unknown>, expiresAt: number | null, refs: OidcRefs): Promise<void> {
    const json = JSON.stringify(payload);
    // A replaced artifact keeps its consumption: saving a used code again must not revive it.
    this.db.guard('save oidc artifact', () =>
      this.db
        .stmt(
          `INSERT INTO oidc_artifacts (model, key, payload, grant_id, uid, user_code, consumed_at, expires_at)
           VALUES (?, ?, ?, ?, ?, ?, NULL, ?)
           ON CONFLICT (model, key) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
             uid = excluded.uid, user_code = excluded.user_code, expires_at = excluded.expires_at`,
        )
        .run(model, key, json, refs.grantId ?? null, refs.uid ?? null, refs.userCode ?? null, expiresAt),
    );
  }

  async oidcFind(model: OidcModel, key: string): Promise<OidcRecord | null> {
    const row = this.db.guard('find oidc artifact', () =>
      this.db.stmt(`SELECT ${OIDC_COLUMNS} FROM oidc_artifacts WHERE model = ? AND key = ? AND ${LIVE}`).get(model, key, Date.now()),
    ) as OidcRow | undefined;
    return row ? toOidcWithoutKey(row) : null;
  }

  async oidcFindByUid(model: OidcModel, uid: string): Promise<(OidcRecord & { key: string }) | null> {
    return this.findBy('uid', model, uid);
  }

  async oidcFindByUserCode(model: OidcModel, userCode: string): Promise<(OidcRecord & { key: string }) | null> {
    return this.findBy('user_code', model, userCode);
  }

  async oidcConsume(model: OidcModel, key: string, at: number): Promise<boolean> {
    const result = this.db.guard('consume oidc artifact', () =>
      this.db
        .stmt('UPDATE oidc_artifacts SET consumed_at = ? WHERE model = ? AND key = ? AND consumed_at IS NULL')
        .run(at, model, key),
    );
    return Number(result.changes) === 1;
  }

  async oidcDestroy(model: OidcModel, key: string): Promise<void> {
    this.db.guard('destroy oidc artifact', () =>
      this.db.stmt('DELETE FROM oidc_artifacts WHERE model = ? AND key = ?').run(model, key),
    );
  }

  async oidcRevokeByGrant(model: OidcModel, grantId: string): Promise<void> {
    this.db.guard('revoke oidc grant', () =>
      this.db.stmt('DELETE FROM oidc_artifacts WHERE model = ? AND grant_id = ?').run(model, grantId),
    );
  }

  private findBy(column: 'uid' | 'user_code', model: OidcModel, value: string): (OidcRecord & { key: string }) | null {
    const row = this.db.guard(`find oidc artifact by ${column}`, () =>
      this.db
        .stmt(`SELECT ${OIDC_COLUMNS} FROM oidc_artifacts WHERE model = ? AND ${column} = ? AND ${LIVE} LIMIT 1`)
        .get(model, value, Date.now()),
    ) as OidcRow | undefined;
    return row ? toOidc(row) : null;
  }

  // --- clients ---

  async createClient(client: ClientRecord): Promise<void> {
    const values = clientValues(client);
    const inserted = this.db.guard('create client', () =>
      this.db
        .stmt(
          `INSERT INTO clients (${CLIENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
        )
        .run(...values),
    );
    if (Number(inserted.changes) === 0) throw new Error(`client ${client.id} already exists`);
  }

  async updateClientMetadata(id: string, metadata: Record<string, unknown>, secretHash: string | null, at: number): Promise<void> {
    const json = JSON.stringify(metadata);
    this.db.guard('update client metadata', () =>
      this.db.stmt('UPDATE clients SET metadata = ?, secret_hash = ?, updated_at = ? WHERE id = ?').run(json, secretHash, at, id),
    );
  }

  async getClient(id: string): Promise<ClientRecord | null> {
    const row = this.db.guard('read client', () =>
      this.db.stmt(`SELECT ${CLIENT_COLUMNS} FROM clients WHERE id = ?`).get(id),
    ) as ClientRow | undefined;
    return row ? toClient(row) : null;
  }

  async listClients(filter?: { status?: ClientStatus }): Promise<ClientRecord[]> {
    const status = filter?.status;
    const rows = this.db.guard('list clients', () =>
      status === undefined
        ? this.db.stmt(`SELECT ${CLIENT_COLUMNS} FROM clients ORDER BY created_at, id`).all()
        : this.db.stmt(`SELECT ${CLIENT_COLUMNS} FROM clients WHERE status = ? ORDER BY created_at, id`).all(status),
    ) as unknown as ClientRow[];
    return rows.map(toClient);
  }

  async transitionClient(id: string, from: readonly ClientStatus[], to: ClientStatus, by: string, at: number, owner?: string): Promise<boolean> {
    if (from.length === 0) return false;
    const result = this.db.guard('change client status', () =>
      this.db
        .stmt(
          `UPDATE clients SET status = ?, decided_by = ?, updated_at = ?, owner = coalesce(owner, ?)
           WHERE id = ? AND status IN (SELECT value FROM json_each(?))`,
        )
        .run(to, by, at, owner ?? null, id, JSON.stringify(from)),
    );
    return Number(result.changes) === 1;
  }

  async countClientsFrom(address: string, since: number): Promise<number> {
    const row = this.db.guard('count clients', () =>
      this.db.stmt('SELECT count(*) AS n FROM clients WHERE registered_from = ? AND created_at >= ?').get(address, since),
    ) as { n: number } | undefined;
    return row?.n ?? 0;
  }

  async touchClient(id: string, at: number): Promise<void> {
    // Never moves back: a late, older touch leaves the newer time.
    this.db.guard('touch client', () =>
      this.db.stmt('UPDATE clients SET last_used_at = max(coalesce(last_used_at, ?), ?) WHERE id = ?').run(at, at, id),
    );
  }

  async expireUnusedClients(createdBefore: number): Promise<string[]> {
    const rows = this.db.guard('expire unused clients', () =>
      this.db
        .stmt(
          `DELETE FROM clients WHERE last_used_at IS NULL AND status IN ('pending', 'active') AND created_at < ? RETURNING id`,
        )
        .all(createdBefore),
    ) as unknown as { id: string }[];
    return rows.map((r) => r.id).sort(compareText);
  }

  // --- registration tokens ---

  async createRegistrationToken(token: RegistrationTokenRecord): Promise<void> {
    const inserted = this.db.guard('create registration token', () =>
      this.db
        .stmt(
          `INSERT INTO registration_tokens (${REGISTRATION_TOKEN_COLUMNS})
           VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING`,
        )
        .run(...registrationTokenValues(token)),
    );
    if (Number(inserted.changes) === 0) throw new Error('registration token already exists');
  }

  async useRegistrationToken(hash: string, at: number): Promise<boolean> {
    const result = this.db.guard('use registration token', () =>
      this.db
        .stmt('UPDATE registration_tokens SET uses_left = uses_left - 1 WHERE hash = ? AND expires_at > ? AND uses_left > 0')
        .run(hash, at),
    );
    return Number(result.changes) === 1;
  }

  // --- users ---

  async createUser(user: UserRecord): Promise<void> {
    const groups = JSON.stringify(user.groups);
    const inserted = this.db.guard('create user', () =>
      this.db
        .stmt(`INSERT INTO users (${USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`)
        .run(user.name, user.passwordHash, groups, user.disabled ? 1 : 0, user.createdAt, user.updatedAt),
    );
    if (Number(inserted.changes) === 0) throw new Error(`user ${user.name} already exists`);
  }

  async getUser(name: string): Promise<UserRecord | null> {
    const row = this.db.guard('read user', () =>
      this.db.stmt(`SELECT ${USER_COLUMNS} FROM users WHERE name = ?`).get(name),
    ) as UserRow | undefined;
    return row ? toUser(row) : null;
  }

  async listUsers(): Promise<UserRecord[]> {
    const rows = this.db.guard('list users', () =>
      this.db.stmt(`SELECT ${USER_COLUMNS} FROM users ORDER BY name`).all(),
    ) as unknown as UserRow[];
    return rows.map(toUser);
  }

  async setUserDisabled(name: string, disabled: boolean, at: number): Promise<boolean> {
    const result = this.db.guard('change user', () =>
      this.db.stmt('UPDATE users SET disabled = ?, updated_at = ? WHERE name = ?').run(disabled ? 1 : 0, at, name),
    );
    return Number(result.changes) === 1;
  }

  async setUserGroups(name: string, groups: readonly string[], at: number): Promise<boolean> {
    const result = this.db.guard('change user groups', () =>
      this.db.stmt('UPDATE users SET groups = ?, updated_at = ? WHERE name = ?').run(JSON.stringify(groups), at, name),
    );
    return Number(result.changes) === 1;
  }

  // --- consents ---

  async putConsent(consent: ConsentRecord): Promise<void> {
    this.db.transaction('record consent', () => {
      const row = this.db
        .stmt('SELECT scopes FROM consents WHERE user_name = ? AND client_id = ? AND resource = ?')
        .get(consent.user, consent.clientId, consent.resource) as { scopes: string } | undefined;
      const scopes = mergeScopes(row ? (JSON.parse(row.scopes) as string[]) : [], consent.scopes);
      this.db
        .stmt(
          `INSERT INTO consents (${CONSENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (user_name, client_id, resource) DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at`,
        )
        .run(consent.user, consent.clientId, consent.resource, JSON.stringify(scopes), consent.grantedAt);
    });
  }

  async getConsent(user: string, clientId: string, resource: string): Promise<ConsentRecord | null> {
    const row = this.db.guard('read consent', () =>
      this.db
        .stmt(`SELECT ${CONSENT_COLUMNS} FROM consents WHERE user_name = ? AND client_id = ? AND resource = ?`)
        .get(user, clientId, resource),
    ) as ConsentRow | undefined;
    return row ? toConsent(row) : null;
  }

  async listConsents(filter?: { user?: string; clientId?: string }): Promise<ConsentRecord[]> {
    const { where, params } = consentFilter(filter, PARAM);
    const rows = this.db.guard('list consents', () =>
      this.db
        .stmt(`SELECT ${CONSENT_COLUMNS} FROM consents${where} ORDER BY user_name, client_id, resource`)
        .all(...params),
    ) as unknown as ConsentRow[];
    return rows.map(toConsent);
  }

  async deleteConsents(filter: { user?: string; clientId?: string }): Promise<ConsentRecord[]> {
    const { where, params } = consentFilter(filter, PARAM);
    if (params.length === 0) throw new Error('deleteConsents needs a user or a clientId: refusing to delete every consent');
    const rows = this.db.guard('delete consents', () =>
      this.db.stmt(`DELETE FROM consents${where} RETURNING ${CONSENT_COLUMNS}`).all(...params),
    ) as unknown as ConsentRow[];
    return rows.map(toConsent).sort(compareConsents);
  }

  // --- keys ---

  async putKey(key: KeyRecord): Promise<void> {
    this.db.guard('save key', () =>
      this.db
        .stmt(
          `INSERT INTO secret_keys (${KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (kid) DO UPDATE SET purpose = excluded.purpose, alg = excluded.alg, sealed = excluded.sealed,
             created_at = excluded.created_at, retired_at = excluded.retired_at, expires_at = excluded.expires_at`,
        )
        .run(...keyValues(key)),
    );
  }

  async listKeys(purpose: KeyPurpose, now: number): Promise<KeyRecord[]> {
    const rows = this.db.guard('list keys', () =>
      this.db
        .stmt(`SELECT ${KEY_COLUMNS} FROM secret_keys WHERE purpose = ? AND ${LIVE} ORDER BY created_at DESC, kid DESC`)
        .all(purpose, now),
    ) as unknown as KeyRow[];
    return rows.map(toKey);
  }

  async retireKey(kid: string, retiredAt: number, expiresAt: number): Promise<void> {
    this.db.guard('retire key', () =>
      this.db.stmt('UPDATE secret_keys SET retired_at = ?, expires_at = ? WHERE kid = ?').run(retiredAt, expiresAt, kid),
    );
  }

  // --- revocations ---

  async addRevocation(revocation: Omit<RevocationRecord, 'seq'>): Promise<RevocationRecord> {
    const row = this.db.guard('add revocation', () =>
      this.db
        .stmt(`INSERT INTO revocations (kind, value, revoked_at, expires_at) VALUES (?, ?, ?, ?) RETURNING ${REVOCATION_COLUMNS}`)
        .get(revocation.kind, revocation.value, revocation.revokedAt, revocation.expiresAt),
    ) as RevocationRow | undefined;
    if (!row) throw new Error('add revocation: the insert returned no row');
    return toRevocation(row);
  }

  async listRevocations(afterSeq: number, now: number): Promise<RevocationRecord[]> {
    const rows = this.db.guard('list revocations', () =>
      this.db
        .stmt(`SELECT ${REVOCATION_COLUMNS} FROM revocations WHERE seq > ? AND expires_at > ? ORDER BY seq`)
        .all(afterSeq, now),
    ) as unknown as RevocationRow[];
    return rows.map(toRevocation);
  }

  async purgeExpired(now: number): Promise<number> {
    return this.db.transaction('purge expired identity rows', () => {
      let removed = 0;
      for (const table of ['oidc_artifacts', 'revocations', 'registration_tokens', 'secret_keys']) {
        removed += Number(this.db.stmt(`DELETE FROM ${table} WHERE expires_at <= ?`).run(now).changes);
      }
      return removed;
    });
  }
}
