/**
 * The identity plane's store: what the authorization server keeps (migration
 * 2, docs/storage.md). Written once on the engine; the dialects differ only in
 * booleans, list parameters and the row lock of `putConsent` (src/store/sql/).
 *
 * Nothing here holds a bearer secret in the clear: callers pass SHA-256
 * hashes of token values, codes, session ids and client secrets, and sealed
 * (encrypted) private keys. Times are epoch milliseconds.
 *
 * Compare-and-set changes (client transitions, registration token uses,
 * consumption) are single conditional UPDATEs: of concurrent callers, on any
 * node, exactly one changes the row. Duplicates are refused with a plain
 * Error ("… already exists"), decided from the affected-row count of an
 * `ON CONFLICT DO NOTHING` insert, so they never look like an outage.
 */
import type {
  ClientRecord,
  ClientStatus,
  ConsentRecord,
  KeyPurpose,
  KeyRecord,
  OidcModel,
  OidcRecord,
  OidcRefs,
  RegistrationTokenRecord,
  RevocationRecord,
  UserRecord,
} from './identity-types.ts';
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
} from './identity-rows.ts';
import type { ClientRow, ConsentRow, Int, KeyRow, OidcRow, RevocationRow, UserRow } from './identity-rows.ts';
import type { Engine } from './sql/engine.ts';

/** An artifact is live until its expiry (exclusive); null never expires. */
const LIVE = '(expires_at IS NULL OR expires_at > ?)';
/** Tables whose rows carry their own expiry, purged by `purgeExpired`. */
const EXPIRING = ['oidc_artifacts', 'revocations', 'registration_tokens', 'secret_keys'] as const;

export class SqlIdentityStore {
  private readonly engine: Engine;

  constructor(engine: Engine) {
    this.engine = engine;
  }

  // --- oidc-provider artifacts (adapter) ---

  /** Inserts or replaces one artifact; `key` is already hashed by the caller. */
  async oidcUpsert(model: OidcModel, key: string, payload: Record<string, unknown>, expiresAt: number | null, refs: OidcRefs): Promise<void> {
    const json = JSON.stringify(payload);
    // A replaced artifact keeps its consumption: saving a used code again must not revive it.
    await this.engine.run(
      'save oidc artifact',
      `INSERT INTO oidc_artifacts (model, key, payload, grant_id, uid, user_code, consumed_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?, NULL, ?)
       ON CONFLICT (model, key) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
         uid = excluded.uid, user_code = excluded.user_code, expires_at = excluded.expires_at`,
      [model, key, json, refs.grantId ?? null, refs.uid ?? null, refs.userCode ?? null, expiresAt],
    );
  }

  /** The artifact, or null if absent or expired. */
  async oidcFind(model: OidcModel, key: string): Promise<OidcRecord | null> {
    const row = await this.engine.get<OidcRow>(
      'find oidc artifact',
      `SELECT ${OIDC_COLUMNS} FROM oidc_artifacts WHERE model = ? AND key = ? AND ${LIVE}`,
      [model, key, Date.now()],
    );
    return row ? toOidcWithoutKey(row) : null;
  }

  async oidcFindByUid(model: OidcModel, uid: string): Promise<(OidcRecord & { key: string }) | null> {
    return this.findBy('uid', model, uid);
  }

  async oidcFindByUserCode(model: OidcModel, userCode: string): Promise<(OidcRecord & { key: string }) | null> {
    return this.findBy('user_code', model, userCode);
  }

  /**
   * Marks consumed, atomically: true only for the call that consumed it (the
   * first consumption time is kept); false if it was already consumed or is absent.
   */
  async oidcConsume(model: OidcModel, key: string, at: number): Promise<boolean> {
    const changed = await this.engine.run(
      'consume oidc artifact',
      'UPDATE oidc_artifacts SET consumed_at = ? WHERE model = ? AND key = ? AND consumed_at IS NULL',
      [at, model, key],
    );
    return changed === 1;
  }

  async oidcDestroy(model: OidcModel, key: string): Promise<void> {
    await this.engine.run('destroy oidc artifact', 'DELETE FROM oidc_artifacts WHERE model = ? AND key = ?', [model, key]);
  }

  /** Deletes every artifact of this model that belongs to the grant. */
  async oidcRevokeByGrant(model: OidcModel, grantId: string): Promise<void> {
    await this.engine.run('revoke oidc grant', 'DELETE FROM oidc_artifacts WHERE model = ? AND grant_id = ?', [model, grantId]);
  }

  private async findBy(column: 'uid' | 'user_code', model: OidcModel, value: string): Promise<(OidcRecord & { key: string }) | null> {
    const row = await this.engine.get<OidcRow>(
      `find oidc artifact by ${column}`,
      `SELECT ${OIDC_COLUMNS} FROM oidc_artifacts WHERE model = ? AND ${column} = ? AND ${LIVE} LIMIT 1`,
      [model, value, Date.now()],
    );
    return row ? toOidc(row) : null;
  }

  // --- clients ---

  /** Inserts a new client; rejects (Error) if the id exists. */
  async createClient(client: ClientRecord): Promise<void> {
    const values = clientValues(client);
    const inserted = await this.engine.run(
      'create client',
      `INSERT INTO clients (${CLIENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
      values,
    );
    if (inserted === 0) throw new Error(`client ${client.id} already exists`);
  }

  /** Replaces metadata/secret of an existing client (status untouched). */
  async updateClientMetadata(id: string, metadata: Record<string, unknown>, secretHash: string | null, at: number): Promise<void> {
    const json = JSON.stringify(metadata);
    await this.engine.run('update client metadata', 'UPDATE clients SET metadata = ?, secret_hash = ?, updated_at = ? WHERE id = ?', [json, secretHash, at, id]);
  }

  async getClient(id: string): Promise<ClientRecord | null> {
    const row = await this.engine.get<ClientRow>('read client', `SELECT ${CLIENT_COLUMNS} FROM clients WHERE id = ?`, [id]);
    return row ? toClient(row) : null;
  }

  async listClients(filter?: { status?: ClientStatus }): Promise<ClientRecord[]> {
    const status = filter?.status;
    const rows =
      status === undefined
        ? await this.engine.all<ClientRow>('list clients', `SELECT ${CLIENT_COLUMNS} FROM clients ORDER BY created_at, id`)
        : await this.engine.all<ClientRow>('list clients', `SELECT ${CLIENT_COLUMNS} FROM clients WHERE status = ? ORDER BY created_at, id`, [status]);
    return rows.map(toClient);
  }

  /**
   * Moves a client to `to` only if its status is one of `from`; true if it
   * moved. Sets decidedBy, updatedAt, and owner if `owner` is given and the
   * client has none.
   */
  async transitionClient(id: string, from: readonly ClientStatus[], to: ClientStatus, by: string, at: number, owner?: string): Promise<boolean> {
    if (from.length === 0) return false;
    const { list, listParam } = this.engine.dialect;
    const changed = await this.engine.run(
      'change client status',
      `UPDATE clients SET status = ?, decided_by = ?, updated_at = ?, owner = coalesce(owner, ?)
       WHERE id = ? AND status IN (SELECT value FROM ${list('s')})`,
      [to, by, at, owner ?? null, id, listParam(from)],
    );
    return changed === 1;
  }

  /** Clients registered from this address at or after `since`. */
  async countClientsFrom(address: string, since: number): Promise<number> {
    const row = await this.engine.get<{ n: Int }>('count clients', 'SELECT count(*) AS n FROM clients WHERE registered_from = ? AND created_at >= ?', [address, since]);
    return row ? Number(row.n) : 0;
  }

  async touchClient(id: string, at: number): Promise<void> {
    // Never moves back: a late, older touch leaves the newer time.
    await this.engine.run('touch client', 'UPDATE clients SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)', [at, id, at]);
  }

  /** Deletes pending or active clients created before `createdBefore` that never obtained a token; returns their ids. */
  async expireUnusedClients(createdBefore: number): Promise<string[]> {
    const rows = await this.engine.all<{ id: string }>(
      'expire unused clients',
      `DELETE FROM clients WHERE last_used_at IS NULL AND status IN ('pending', 'active') AND created_at < ? RETURNING id`,
      [createdBefore],
    );
    return rows.map((r) => r.id).sort(compareText);
  }

  // --- registration (initial access) tokens ---

  async createRegistrationToken(token: RegistrationTokenRecord): Promise<void> {
    const inserted = await this.engine.run(
      'create registration token',
      `INSERT INTO registration_tokens (${REGISTRATION_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING`,
      registrationTokenValues(token),
    );
    if (inserted === 0) throw new Error('registration token already exists');
  }

  /** Atomically uses one registration if the token exists, is unexpired and has uses left. */
  async useRegistrationToken(hash: string, at: number): Promise<boolean> {
    const changed = await this.engine.run(
      'use registration token',
      'UPDATE registration_tokens SET uses_left = uses_left - 1 WHERE hash = ? AND expires_at > ? AND uses_left > 0',
      [hash, at],
    );
    return changed === 1;
  }

  // --- users ---

  /** Inserts a user; rejects (Error) if the name exists. */
  async createUser(user: UserRecord): Promise<void> {
    const groups = JSON.stringify(user.groups);
    const inserted = await this.engine.run(
      'create user',
      `INSERT INTO users (${USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`,
      [user.name, user.passwordHash, groups, this.engine.dialect.bool(user.disabled), user.createdAt, user.updatedAt],
    );
    if (inserted === 0) throw new Error(`user ${user.name} already exists`);
  }

  async getUser(name: string): Promise<UserRecord | null> {
    const row = await this.engine.get<UserRow>('read user', `SELECT ${USER_COLUMNS} FROM users WHERE name = ?`, [name]);
    return row ? toUser(row) : null;
  }

  async listUsers(): Promise<UserRecord[]> {
    return (await this.engine.all<UserRow>('list users', `SELECT ${USER_COLUMNS} FROM users ORDER BY name`)).map(toUser);
  }

  /** True if the user exists. */
  async setUserDisabled(name: string, disabled: boolean, at: number): Promise<boolean> {
    const changed = await this.engine.run('change user', 'UPDATE users SET disabled = ?, updated_at = ? WHERE name = ?', [this.engine.dialect.bool(disabled), at, name]);
    return changed === 1;
  }

  /** Replaces a user's groups (as an upstream provider reports them); true if the user exists. */
  async setUserGroups(name: string, groups: readonly string[], at: number): Promise<boolean> {
    const changed = await this.engine.run('change user groups', 'UPDATE users SET groups = ?, updated_at = ? WHERE name = ?', [JSON.stringify(groups), at, name]);
    return changed === 1;
  }

  // --- consents ---

  /** Records or widens consent (scopes are merged with any already granted). */
  async putConsent(consent: ConsentRecord): Promise<void> {
    const key = [consent.user, consent.clientId, consent.resource];
    await this.engine.transaction('record consent', async (tx) => {
      // Read the row (locked, where the dialect needs a row lock) and merge; if there is none,
      // insert. An insert that loses a race (another node inserted first) goes round again and merges.
      for (let attempt = 0; attempt < 5; attempt += 1) {
        const row = await tx.get<{ scopes: string }>(
          `SELECT scopes FROM consents WHERE user_name = ? AND client_id = ? AND resource = ?${this.engine.dialect.forUpdate}`,
          key,
        );
        if (row) {
          const scopes = mergeScopes(JSON.parse(row.scopes) as string[], consent.scopes);
          await tx.run('UPDATE consents SET scopes = ?, granted_at = ? WHERE user_name = ? AND client_id = ? AND resource = ?', [
            JSON.stringify(scopes),
            consent.grantedAt,
            ...key,
          ]);
          return;
        }
        const inserted = await tx.run(
          `INSERT INTO consents (${CONSENT_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_name, client_id, resource) DO NOTHING`,
          [...key, JSON.stringify(mergeScopes([], consent.scopes)), consent.grantedAt],
        );
        if (inserted === 1) return;
      }
      throw new Error('the consent kept changing under concurrent writers');
    });
  }

  async getConsent(user: string, clientId: string, resource: string): Promise<ConsentRecord | null> {
    const row = await this.engine.get<ConsentRow>(
      'read consent',
      `SELECT ${CONSENT_COLUMNS} FROM consents WHERE user_name = ? AND client_id = ? AND resource = ?`,
      [user, clientId, resource],
    );
    return row ? toConsent(row) : null;
  }

  async listConsents(filter?: { user?: string; clientId?: string }): Promise<ConsentRecord[]> {
    const { where, params } = consentFilter(filter);
    const rows = await this.engine.all<ConsentRow>('list consents', `SELECT ${CONSENT_COLUMNS} FROM consents${where} ORDER BY user_name, client_id, resource`, params);
    return rows.map(toConsent);
  }

  /** Deletes matching consents (at least one filter field required); returns those deleted. */
  async deleteConsents(filter: { user?: string; clientId?: string }): Promise<ConsentRecord[]> {
    const { where, params } = consentFilter(filter);
    if (params.length === 0) throw new Error('deleteConsents needs a user or a clientId: refusing to delete every consent');
    const rows = await this.engine.all<ConsentRow>('delete consents', `DELETE FROM consents${where} RETURNING ${CONSENT_COLUMNS}`, params);
    return rows.map(toConsent).sort(compareConsents);
  }

  // --- keys ---

  async putKey(key: KeyRecord): Promise<void> {
    await this.engine.run(
      'save key',
      `INSERT INTO secret_keys (${KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (kid) DO UPDATE SET purpose = excluded.purpose, alg = excluded.alg, sealed = excluded.sealed,
         created_at = excluded.created_at, retired_at = excluded.retired_at, expires_at = excluded.expires_at`,
      keyValues(key),
    );
  }

  /** Keys of this purpose that have not expired, newest first. */
  async listKeys(purpose: KeyPurpose, now: number): Promise<KeyRecord[]> {
    const rows = await this.engine.all<KeyRow>(
      'list keys',
      `SELECT ${KEY_COLUMNS} FROM secret_keys WHERE purpose = ? AND ${LIVE} ORDER BY created_at DESC, kid DESC`,
      [purpose, now],
    );
    return rows.map(toKey);
  }

  async retireKey(kid: string, retiredAt: number, expiresAt: number): Promise<void> {
    await this.engine.run('retire key', 'UPDATE secret_keys SET retired_at = ?, expires_at = ? WHERE kid = ?', [retiredAt, expiresAt, kid]);
  }

  // --- revocations ---

  async addRevocation(revocation: Omit<RevocationRecord, 'seq'>): Promise<RevocationRecord> {
    // Serialised, so seqs become visible in order: a reader that has seen seq n can never later
    // find a smaller seq committed (PostgreSQL hands out identity values before commit, and
    // commits can finish out of order).
    return this.engine.transaction(
      'add revocation',
      async (tx) => {
        const row = await tx.get<RevocationRow>(
          `INSERT INTO revocations (kind, value, revoked_at, expires_at) VALUES (?, ?, ?, ?) RETURNING ${REVOCATION_COLUMNS}`,
          [revocation.kind, revocation.value, revocation.revokedAt, revocation.expiresAt],
        );
        if (!row) throw new Error('the insert returned no row');
        return toRevocation(row);
      },
      { lock: 'revocations' },
    );
  }

  /** Unexpired revocations with seq greater than `afterSeq`, in seq order. */
  async listRevocations(afterSeq: number, now: number): Promise<RevocationRecord[]> {
    const rows = await this.engine.all<RevocationRow>(
      'list revocations',
      `SELECT ${REVOCATION_COLUMNS} FROM revocations WHERE seq > ? AND expires_at > ? ORDER BY seq`,
      [afterSeq, now],
    );
    return rows.map(toRevocation);
  }

  /** Deletes expired artifacts, revocations, registration tokens and keys, in one transaction; returns how many rows went. */
  async purgeExpired(now: number): Promise<number> {
    return this.engine.transaction('purge expired identity rows', async (tx) => {
      let removed = 0;
      for (const table of EXPIRING) removed += await tx.run(`DELETE FROM ${table} WHERE expires_at <= ?`, [now]);
      return removed;
    });
  }
}
