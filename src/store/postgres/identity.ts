/**
 * The identity tables (migration 2) on PostgreSQL. Compare-and-set changes
 * (client transitions, registration token uses) are single conditional
 * UPDATEs, which PostgreSQL re-checks against the newest row version, so of
 * concurrent callers exactly one wins. Failures become StoreUnavailableError
 * and mark the store unhealthy (PostgresStore's `query` and `transaction`);
 * "already exists" is a plain Error, decided from the statement's result.
 */
import type { PoolClient, QueryResultRow } from 'pg';
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
import type { ClientRow, ConsentRow, Int, KeyRow, OidcRow, RevocationRow, UserRow } from '../identity-rows.ts';

/** Advisory lock key: "mandate" in ASCII, then 3 = revocations (1 and 2 are in store.ts). */
const REVOCATION_LOCK = 0x6d616e6461746503n;

/** What PostgresStore lends: its guarded pool query and transaction. */
export interface PostgresAccess {
  query<R extends QueryResultRow>(what: string, sql: string, params?: unknown[]): Promise<R[]>;
  transaction<T>(what: string, work: (client: PoolClient) => Promise<T>): Promise<T>;
}

/** PostgreSQL's marker for the n-th parameter. */
const PARAM = (n: number): string => `$${n}`;

export class PostgresIdentity implements IdentityStore {
  private readonly db: PostgresAccess;

  constructor(access: PostgresAccess) {
    this.db = access;
  }

  // --- oidc-provider artifacts ---

  async oidcUpsert(model: OidcModel, key: string, payload: Record<string, unknown>, expiresAt: number | null, refs: OidcRefs): Promise<void> {
    // A replaced artifact keeps its consumption: saving a used code again must not revive it.
    await this.db.query(
      'save oidc artifact',
      `INSERT INTO oidc_artifacts (model, key, payload, grant_id, uid, user_code, consumed_at, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)
       ON CONFLICT (model, key) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
         uid = excluded.uid, user_code = excluded.user_code, expires_at = excluded.expires_at`,
      [model, key, JSON.stringify(payload), refs.grantId ?? null, refs.uid ?? null, refs.userCode ?? null, expiresAt],
    );
  }

  async oidcFind(model: OidcModel, key: string): Promise<OidcRecord | null> {
    const [row] = await this.db.query<OidcRow>(
      'find oidc artifact',
      `SELECT ${OIDC_COLUMNS} FROM oidc_artifacts
       WHERE model = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)`,
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

  async oidcConsume(model: OidcModel, key: string, at: number): Promise<boolean> {
    const rows = await this.db.query(
      'consume oidc artifact',
      'UPDATE oidc_artifacts SET consumed_at = $1 WHERE model = $2 AND key = $3 AND consumed_at IS NULL RETURNING key',
      [at, model, key],
    );
    return rows.length === 1;
  }

  async oidcDestroy(model: OidcModel, key: string): Promise<void> {
    await this.db.query('destroy oidc artifact', 'DELETE FROM oidc_artifacts WHERE model = $1 AND key = $2', [model, key]);
  }

  async oidcRevokeByGrant(model: OidcModel, grantId: string): Promise<void> {
    await this.db.query('revoke oidc grant', 'DELETE FROM oidc_artifacts WHERE model = $1 AND grant_id = $2', [model, grantId]);
  }

  private async findBy(column: 'uid' | 'user_code', model: OidcModel, value: string): Promise<(OidcRecord & { key: string }) | null> {
    const [row] = await this.db.query<OidcRow>(
      `find oidc artifact by ${column}`,
      `SELECT ${OIDC_COLUMNS} FROM oidc_artifacts
       WHERE model = $1 AND ${column} = $2 AND (expires_at IS NULL OR expires_at > $3) LIMIT 1`,
      [model, value, Date.now()],
    );
    return row ? toOidc(row) : null;
  }

  // --- clients ---

  async createClient(client: ClientRecord): Promise<void> {
    const inserted = await this.db.query(
      'create client',
      `INSERT INTO clients (${CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
       ON CONFLICT (id) DO NOTHING RETURNING id`,
      clientValues(client),
    );
    if (inserted.length === 0) throw new Error(`client ${client.id} already exists`);
  }

  async updateClientMetadata(id: string, metadata: Record<string, unknown>, secretHash: string | null, at: number): Promise<void> {
    await this.db.query(
      'update client metadata',
      'UPDATE clients SET metadata = $1, secret_hash = $2, updated_at = $3 WHERE id = $4',
      [JSON.stringify(metadata), secretHash, at, id],
    );
  }

  async getClient(id: string): Promise<ClientRecord | null> {
    const [row] = await this.db.query<ClientRow>('read client', `SELECT ${CLIENT_COLUMNS} FROM clients WHERE id = $1`, [id]);
    return row ? toClient(row) : null;
  }

  async listClients(filter?: { status?: ClientStatus }): Promise<ClientRecord[]> {
    const status = filter?.status;
    const rows =
      status === undefined
        ? await this.db.query<ClientRow>('list clients', `SELECT ${CLIENT_COLUMNS} FROM clients ORDER BY created_at, id`)
        : await this.db.query<ClientRow>(
            'list clients',
            `SELECT ${CLIENT_COLUMNS} FROM clients WHERE status = $1 ORDER BY created_at, id`,
            [status],
          );
    return rows.map(toClient);
  }

  async transitionClient(id: string, from: readonly ClientStatus[], to: ClientStatus, by: string, at: number, owner?: string): Promise<boolean> {
    if (from.length === 0) return false;
    const moved = await this.db.query(
      'change client status',
      `UPDATE clients SET status = $1, decided_by = $2, updated_at = $3, owner = coalesce(owner, $4)
       WHERE id = $5 AND status = ANY($6::text[]) RETURNING id`,
      [to, by, at, owner ?? null, id, [...from]],
    );
    return moved.length === 1;
  }

  async countClientsFrom(address: string, since: number): Promise<number> {
    const [row] = await this.db.query<{ n: Int }>(
      'count clients',
      'SELECT count(*) AS n FROM clients WHERE registered_from = $1 AND created_at >= $2',
      [address, since],
    );
    return row ? Number(row.n) : 0;
  }

  async touchClient(id: string, at: number): Promise<void> {
    // Never moves back: a late, older touch leaves the newer time (greatest ignores null).
    await this.db.query('touch client', 'UPDATE clients SET last_used_at = greatest(last_used_at, $1) WHERE id = $2', [at, id]);
  }

  async expireUnusedClients(createdBefore: number): Promise<string[]> {
    const rows = await this.db.query<{ id: string }>(
      'expire unused clients',
      `DELETE FROM clients WHERE last_used_at IS NULL AND status IN ('pending', 'active') AND created_at < $1 RETURNING id`,
      [createdBefore],
    );
    return rows.map((r) => r.id).sort(compareText);
  }

  // --- registration tokens ---

  async createRegistrationToken(token: RegistrationTokenRecord): Promise<void> {
    const inserted = await this.db.query(
      'create registration token',
      `INSERT INTO registration_tokens (${REGISTRATION_TOKEN_COLUMNS})
       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (hash) DO NOTHING RETURNING hash`,
      registrationTokenValues(token),
    );
    if (inserted.length === 0) throw new Error('registration token already exists');
  }

  async useRegistrationToken(hash: string, at: number): Promise<boolean> {
    const used = await this.db.query(
      'use registration token',
      `UPDATE registration_tokens SET uses_left = uses_left - 1
       WHERE hash = $1 AND expires_at > $2 AND uses_left > 0 RETURNING hash`,
      [hash, at],
    );
    return used.length === 1;
  }

  // --- users ---

  async createUser(user: UserRecord): Promise<void> {
    const inserted = await this.db.query(
      'create user',
      `INSERT INTO users (${USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING name`,
      [user.name, user.passwordHash, JSON.stringify(user.groups), user.disabled, user.createdAt, user.updatedAt],
    );
    if (inserted.length === 0) throw new Error(`user ${user.name} already exists`);
  }

  async getUser(name: string): Promise<UserRecord | null> {
    const [row] = await this.db.query<UserRow>('read user', `SELECT ${USER_COLUMNS} FROM users WHERE name = $1`, [name]);
    return row ? toUser(row) : null;
  }

  async listUsers(): Promise<UserRecord[]> {
    const rows = await this.db.query<UserRow>('list users', `SELECT ${USER_COLUMNS} FROM users ORDER BY name`);
    return rows.map(toUser);
  }

  async setUserDisabled(name: string, disabled: boolean, at: number): Promise<boolean> {
    const changed = await this.db.query(
      'change user',
      'UPDATE users SET disabled = $1, updated_at = $2 WHERE name = $3 RETURNING name',
      [disabled, at, name],
    );
    return changed.length === 1;
  }

  async setUserGroups(name: string, groups: readonly string[], at: number): Promise<boolean> {
    const changed = await this.db.query(
      'change user groups',
      'UPDATE users SET groups = $1, updated_at = $2 WHERE name = $3 RETURNING name',
      [JSON.stringify(groups), at, name],
    );
    return changed.length === 1;
  }

  // --- consents ---

  async putConsent(consent: ConsentRecord): Promise<void> {
    const key = [consent.user, consent.clientId, consent.resource];
    await this.db.transaction('record consent', async (client) => {
      // Lock the row and merge; if there is none, insert. An insert that loses
      // a race (another node inserted first) goes round again and merges.
      for (let attempt = 0; attempt < 5; attempt += 1) {
        const found = await client.query<{ scopes: string }>(
          'SELECT scopes FROM consents WHERE user_name = $1 AND client_id = $2 AND resource = $3 FOR UPDATE',
          key,
        );
        const row = found.rows[0];
        if (row) {
          const scopes = mergeScopes(JSON.parse(row.scopes) as string[], consent.scopes);
          await client.query(
            'UPDATE consents SET scopes = $4, granted_at = $5 WHERE user_name = $1 AND client_id = $2 AND resource = $3',
            [...key, JSON.stringify(scopes), consent.grantedAt],
          );
          return;
        }
        const inserted = await client.query(
          `INSERT INTO consents (${CONSENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (user_name, client_id, resource) DO NOTHING`,
          [...key, JSON.stringify(mergeScopes([], consent.scopes)), consent.grantedAt],
        );
        if (inserted.rowCount === 1) return;
      }
      throw new Error('the consent kept changing under concurrent writers');
    });
  }

  async getConsent(user: string, clientId: string, resource: string): Promise<ConsentRecord | null> {
    const [row] = await this.db.query<ConsentRow>(
      'read consent',
      `SELECT ${CONSENT_COLUMNS} FROM consents WHERE user_name = $1 AND client_id = $2 AND resource = $3`,
      [user, clientId, resource],
    );
    return row ? toConsent(row) : null;
  }

  async listConsents(filter?: { user?: string; clientId?: string }): Promise<ConsentRecord[]> {
    const { where, params } = consentFilter(filter, PARAM);
    const rows = await this.db.query<ConsentRow>(
      'list consents',
      `SELECT ${CONSENT_COLUMNS} FROM consents${where} ORDER BY user_name, client_id, resource`,
      params,
    );
    return rows.map(toConsent);
  }

  async deleteConsents(filter: { user?: string; clientId?: string }): Promise<ConsentRecord[]> {
    const { where, params } = consentFilter(filter, PARAM);
    if (params.length === 0) throw new Error('deleteConsents needs a user or a clientId: refusing to delete every consent');
    const rows = await this.db.query<ConsentRow>('delete consents', `DELETE FROM consents${where} RETURNING ${CONSENT_COLUMNS}`, params);
    return rows.map(toConsent).sort(compareConsents);
  }

  // --- keys ---

  async putKey(key: KeyRecord): Promise<void> {
    await this.db.query(
      'save key',
      `INSERT INTO secret_keys (${KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (kid) DO UPDATE SET purpose = excluded.purpose, alg = excluded.alg, sealed = excluded.sealed,
         created_at = excluded.created_at, retired_at = excluded.retired_at, expires_at = excluded.expires_at`,
      keyValues(key),
    );
  }

  async listKeys(purpose: KeyPurpose, now: number): Promise<KeyRecord[]> {
    const rows = await this.db.query<KeyRow>(
      'list keys',
      `SELECT ${KEY_COLUMNS} FROM secret_keys WHERE purpose = $1 AND (expires_at IS NULL OR expires_at > $2)
       ORDER BY created_at DESC, kid DESC`,
      [purpose, now],
    );
    return rows.map(toKey);
  }

  async retireKey(kid: string, retiredAt: number, expiresAt: number): Promise<void> {
    await this.db.query('retire key', 'UPDATE secret_keys SET retired_at = $1, expires_at = $2 WHERE kid = $3', [
      retiredAt,
      expiresAt,
      kid,
    ]);
  }

  // --- revocations ---

  async addRevocation(revocation: Omit<RevocationRecord, 'seq'>): Promise<RevocationRecord> {
    // Serialised, so seqs become visible in order: a reader that has seen seq n
    // can never later find a smaller seq committed (identity values alone are
    // handed out before commit, and commits can finish out of order).
    return this.db.transaction('add revocation', async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(${REVOCATION_LOCK})`);
      const inserted = await client.query<RevocationRow>(
        `INSERT INTO revocations (kind, value, revoked_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING ${REVOCATION_COLUMNS}`,
        [revocation.kind, revocation.value, revocation.revokedAt, revocation.expiresAt],
      );
      const row = inserted.rows[0];
      if (!row) throw new Error('the insert returned no row');
      return toRevocation(row);
    });
  }

  async listRevocations(afterSeq: number, now: number): Promise<RevocationRecord[]> {
    const rows = await this.db.query<RevocationRow>(
      'list revocations',
      `SELECT ${REVOCATION_COLUMNS} FROM revocations WHERE seq > $1 AND expires_at > $2 ORDER BY seq`,
      [afterSeq, now],
    );
    return rows.map(toRevocation);
  }

  async purgeExpired(now: number): Promise<number> {
    // One statement: the four deletes happen together or not at all.
    const [row] = await this.db.query<{ n: Int }>(
      'purge expired identity rows',
      `WITH a AS (DELETE FROM oidc_artifacts WHERE expires_at <= $1 RETURNING 1),
            r AS (DELETE FROM revocations WHERE expires_at <= $1 RETURNING 1),
            t AS (DELETE FROM registration_tokens WHERE expires_at <= $1 RETURNING 1),
            k AS (DELETE FROM secret_keys WHERE expires_at <= $1 RETURNING 1)
       SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM r) + (SELECT count(*) FROM t) + (SELECT count(*) FROM k) AS n`,
      [now],
    );
    return row ? Number(row.n) : 0;
  }
}
