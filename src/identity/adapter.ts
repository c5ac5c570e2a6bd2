/**
 * oidc-provider's storage adapter on Mandate's store. Every artifact key
 * (token values, codes, session and interaction ids) is hashed before it
 * reaches the store, and `jti` is left out of stored payloads, so a copy of
 * the database holds no usable bearer value. Clients live in their own table
 * with their secret hashed; a client that is not active is invisible to the
 * authorization server, so it can obtain nothing.
 */
import { errors, type Adapter, type AdapterPayload } from 'oidc-provider';
import type { ClientRecord, Store } from '../store/types.ts';
import { requestNotes } from './context.ts';
import { ISSUED_AT_MS, stampIssuedAt } from './revocations.ts';
import { hashSecret, seal, unseal } from './secrets.ts';

/** What the adapter tells the rest of identity about client lifecycle. */
export interface AdapterHooks {
  /** A client resolved from its metadata document is about to be used: record it on first sight; false if an admin revoked or rejected it. */
  metadataClientSeen(clientId: string, metadata: Record<string, unknown>): Promise<boolean>;
  /** True if a stored refresh token or code (its payload) is covered by a revocation. */
  isRevoked(payload: Record<string, unknown>): boolean;
  /** Every access token of this grant must now be refused. */
  grantRevoked(grantId: string): Promise<void>;
}

/** Placeholder oidc-provider sees as the secret: the hash (see identity/provider.ts compareClientSecret). */
export const SECRET_HASH_FIELD = 'client_secret';

class ClientAdapter implements Adapter {
  private readonly store: Store;

  constructor(store: Store) {
    this.store = store;
  }

  async upsert(id: string, payload: AdapterPayload): Promise<void> {
    const { [SECRET_HASH_FIELD]: secret, ...metadata } = payload as Record<string, unknown>;
    const secretHash = typeof secret === 'string' ? hashSecret(secret) : null;
    const now = Date.now();
    const existing = await this.store.identity.getClient(id);
    if (existing) {
      await this.store.identity.updateClientMetadata(id, metadata, secretHash ?? existing.secretHash, now);
      return;
    }
    const notes = requestNotes.getStore();
    const intake = notes?.registration;
    // Every registration passes the intake (routes.ts matches paths as the router does): a client
    // without its decision is a bug, and nothing is stored for it.
    if (!intake) throw new Error('a client registration reached storage without passing the intake');
    const record: ClientRecord = {
      id,
      status: intake.status,
      class: intake.class,
      source: 'dcr',
      owner: intake.owner,
      metadata,
      secretHash,
      registeredFrom: notes?.address ?? null,
      createdAt: now,
      updatedAt: now,
      lastUsedAt: null,
      decidedBy: intake.status === 'active' ? intake.via : null,
    };
    await this.store.identity.createClient(record);
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    const client = await this.store.identity.getClient(id);
    if (!client) return undefined;
    if (client.status !== 'active') {
      const notes = requestNotes.getStore();
      if (notes) notes.inactiveClient = { id, status: client.status };
      return undefined;
    }
    const payload: Record<string, unknown> = { ...client.metadata, client_id: id };
    if (client.secretHash) payload[SECRET_HASH_FIELD] = client.secretHash;
    return payload as AdapterPayload;
  }

  async destroy(id: string): Promise<void> {
    await this.store.identity.transitionClient(id, ['pending', 'active'], 'revoked', 'authorization-server', Date.now());
  }

  async consume(): Promise<void> {}
  async findByUid(): Promise<undefined> {
    return undefined;
  }
  async findByUserCode(): Promise<undefined> {
    return undefined;
  }
  async revokeByGrantId(): Promise<void> {}
}

/** Stored grants of tokens that a client, user or grant revocation also covers. */
const REVOCABLE = new Set(['RefreshToken', 'AuthorizationCode']);

/** Models found by a secondary key (uid, user code) keep their id sealed, since a hash cannot give it back. */
const SEALED_ID = 'mandateSealedId';

class ArtifactAdapter implements Adapter {
  private readonly model: string;
  private readonly store: Store;
  private readonly hooks: AdapterHooks;
  private readonly secret: Buffer;

  constructor(model: string, store: Store, hooks: AdapterHooks, secret: Buffer) {
    this.model = model;
    this.store = store;
    this.hooks = hooks;
    this.secret = secret;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn: number | undefined): Promise<void> {
    const { jti: _jti, ...rest } = payload;
    if (payload.uid || payload.userCode) (rest as Record<string, unknown>)[SEALED_ID] = seal(this.secret, id, `oidc:${this.model}`);
    // A refresh token or code is stored once, when issued: its precise issue time goes with it, so a
    // revocation by time can tell whether it came before or after (revocations.ts).
    if (REVOCABLE.has(this.model) && typeof payload.iat === 'number' && (rest as Record<string, unknown>)[ISSUED_AT_MS] === undefined) {
      (rest as Record<string, unknown>)[ISSUED_AT_MS] = stampIssuedAt(payload.iat);
    }
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : null;
    await this.store.identity.oidcUpsert(this.model, hashSecret(id), rest, expiresAt, {
      grantId: payload.grantId,
      uid: payload.uid ? hashSecret(payload.uid) : undefined,
      userCode: payload.userCode ? hashSecret(payload.userCode) : undefined,
    });
  }

  private restore(id: string, record: { payload: Record<string, unknown>; consumedAt: number | null } | null): AdapterPayload | undefined {
    if (!record) return undefined;
    const { [SEALED_ID]: _sealed, ...stored } = record.payload;
    const payload: Record<string, unknown> = { ...stored, jti: id };
    if (record.consumedAt !== null) payload.consumed = Math.floor(record.consumedAt / 1000);
    return payload as AdapterPayload;
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    const record = await this.store.identity.oidcFind(this.model, hashSecret(id));
    if (record && REVOCABLE.has(this.model) && this.hooks.isRevoked(record.payload)) return undefined;
    return this.restore(id, record);
  }

  private restoreSealed(record: { payload: Record<string, unknown>; consumedAt: number | null } | null): AdapterPayload | undefined {
    const sealed = record?.payload[SEALED_ID];
    if (!record || typeof sealed !== 'string') return undefined;
    return this.restore(unseal(this.secret, sealed, `oidc:${this.model}`), record);
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.restoreSealed(await this.store.identity.oidcFindByUid(this.model, hashSecret(uid)));
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.restoreSealed(await this.store.identity.oidcFindByUserCode(this.model, hashSecret(userCode)));
  }

  /**
   * Single use, atomically: if another request consumed this code or refresh
   * token first (concurrent reuse), the whole grant is revoked and this request
   * fails, as a sequential reuse would.
   */
  async consume(id: string): Promise<void> {
    const key = hashSecret(id);
    if (await this.store.identity.oidcConsume(this.model, key, Date.now())) return;
    const grantId = (await this.store.identity.oidcFind(this.model, key))?.payload.grantId;
    if (typeof grantId === 'string') {
      await this.hooks.grantRevoked(grantId);
      for (const model of REVOCABLE) await this.store.identity.oidcRevokeByGrant(model, grantId);
    }
    throw new errors.InvalidGrant('grant request is invalid');
  }

  async destroy(id: string): Promise<void> {
    await this.store.identity.oidcDestroy(this.model, hashSecret(id));
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    if (this.model === 'AccessToken') await this.hooks.grantRevoked(grantId);
    await this.store.identity.oidcRevokeByGrant(this.model, grantId);
  }
}

/** The adapter class oidc-provider instantiates once per model name. */
export function createAdapter(store: Store, hooks: AdapterHooks, secret: Buffer): new (model: string) => Adapter {
  return class MandateAdapter implements Adapter {
    private readonly inner: Adapter;
    constructor(model: string) {
      this.inner = model === 'Client' ? new ClientAdapter(store) : new ArtifactAdapter(model, store, hooks, secret);
    }
    upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<undefined | void> {
      return this.inner.upsert(id, payload, expiresIn);
    }
    find(id: string): Promise<AdapterPayload | undefined | void> {
      return this.inner.find(id);
    }
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined | void> {
      return this.inner.findByUserCode(userCode);
    }
    findByUid(uid: string): Promise<AdapterPayload | undefined | void> {
      return this.inner.findByUid(uid);
    }
    consume(id: string): Promise<undefined | void> {
      return this.inner.consume(id);
    }
    destroy(id: string): Promise<undefined | void> {
      return this.inner.destroy(id);
    }
    revokeByGrantId(grantId: string): Promise<undefined | void> {
      return this.inner.revokeByGrantId(grantId);
    }
  };
}
