/**
 * Token checks at the gateway: `verify(header, server)` → Principal, or an
 * AuthError that says why (missing, invalid, expired, wrong audience,
 * revoked); `verifyResource(header, audience)` the same for the admin API.
 * A verified token is cached (in memory, keyed by the token) until it
 * expires; a cache hit still consults the in-memory revocation list, so
 * revocation is immediate.
 */
import { actorChain, readTaskClaim, type TaskClaim } from './delegated.ts';
import { createHash } from 'node:crypto';
import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JWK, type JWTPayload } from 'jose';
import type { ResolvedServer } from '../config/load.ts';
import { ISSUED_AT_MS, issuedAtMs, type RevocationList } from './revocations.ts';
import { SIGNING_ALG } from './keys.ts';
import { grantsFor, scopeWords, type Grants } from './scopes.ts';

export type AuthReason = 'missing' | 'malformed' | 'invalid' | 'expired' | 'wrong_audience' | 'revoked' | 'insufficient_scope';

export class AuthError extends Error {
  override readonly name = 'AuthError';
  readonly reason: AuthReason;
  /** For insufficient_scope: the scope that would allow the request. */
  readonly scope: string | null;
  /** What is known of the caller, for the audit record. */
  readonly principal: Principal | null;
  constructor(reason: AuthReason, message: string, options: { scope?: string; principal?: Principal | null } = {}) {
    super(message);
    this.reason = reason;
    this.scope = options.scope ?? null;
    this.principal = options.principal ?? null;
  }
}

/** An OAuth client as policies see it (its Cedar `Client` entity). */
export interface ClientFacts {
  id: string;
  /** `client_name` from its registration, else its id. */
  name: string;
  /** The user who registered or approved it, when known. */
  owner: string | null;
  kind: 'interactive' | 'machine';
}

export interface Principal {
  /** The user, or for client credentials the client id. */
  sub: string;
  /** The user the token acts for; null for a machine (client credentials) token. */
  user: string | null;
  /** The user's groups, as the store held them when this token was first seen here; [] for a machine token. */
  groups: readonly string[];
  clientId: string;
  /** What the store held about the client when this token was first seen here (policy decisions). */
  client: ClientFacts;
  scopes: readonly string[];
  jti: string;
  grantId: string | undefined;
  /** Epoch seconds. */
  iat: number;
  /** The precise issue time, epoch ms (what revocations by time compare with). */
  issuedAtMs: number;
  exp: number;
  /** The server (audience) the token was issued for. */
  audience: string;
  /** First 12 hex digits of the token's SHA-256: names it in logs without revealing it. */
  tokenRef: string;
  /**
   * A delegated token (RFC 8693 `act`): the clients acting for the user,
   * the current one first, then the ones it acts for; [] for a direct one.
   */
  actors: readonly string[];
  /** A task-bound token's task (docs/tasks.md): what policy sees as `context.task`; null for a token of no task. */
  task: TaskClaim | null;
  /** What the scopes allow on the audience server (computed once per token). */
  grants: Grants;
}

interface CacheEntry {
  principal: Principal;
  /** Epoch ms the entry stops being usable (token expiry). */
  until: number;
}

/** `Bearer TOKEN`: the scheme in any case (RFC 7235 §2.1), one or more spaces, then an RFC 6750 b64token. */
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i;

/** The token of a bearer `Authorization` header, or null. */
export function bearerToken(header: string | undefined): string | null {
  return (header === undefined ? null : BEARER.exec(header)?.[1]) ?? null;
}
const CACHE_MAX = 10_000;

/** What a token must be for: its one audience, and the MCP server whose grants its scopes give (null for the admin API). */
interface Target {
  audience: string;
  server: string | null;
}

const WRONG_AUDIENCE = 'the token was issued for another server';
const NO_GRANTS: Grants = { all: false, tools: new Set() };

export class TokenVerifier {
  private readonly cache = new Map<string, CacheEntry>();
  private keySet: ReturnType<typeof createLocalJWKSet>;
  private readonly issuer: string;
  private readonly revocations: RevocationList;
  private readonly clockToleranceS: number;
  /** Reads the current public keys from the store (another node may have rotated). */
  private readonly reloadKeys: (() => Promise<JWK[]>) | null;
  /** Reads a user's groups (once per token, when it is first verified). */
  private readonly groupsOf: ((user: string) => Promise<readonly string[]>) | null;
  /** Reads what the store knows of a client (once per token). */
  private readonly clientOf: ((clientId: string) => Promise<Omit<ClientFacts, 'id'> | null>) | null;
  private lastReload = 0;
  private reloading: Promise<boolean> | null = null;

  constructor(
    issuer: string,
    publicKeys: JWK[],
    revocations: RevocationList,
    options: {
      clockToleranceS?: number;
      reloadKeys?: () => Promise<JWK[]>;
      groupsOf?: (user: string) => Promise<readonly string[]>;
      clientOf?: (clientId: string) => Promise<Omit<ClientFacts, 'id'> | null>;
    } = {},
  ) {
    this.issuer = issuer;
    this.revocations = revocations;
    this.clockToleranceS = options.clockToleranceS ?? 5;
    this.reloadKeys = options.reloadKeys ?? null;
    this.groupsOf = options.groupsOf ?? null;
    this.clientOf = options.clientOf ?? null;
    this.keySet = createLocalJWKSet({ keys: publicKeys });
  }

  /** Verifies with these public keys from now on (this node's key set changed). */
  useKeys(publicKeys: JWK[]): void {
    this.keySet = createLocalJWKSet({ keys: publicKeys });
  }

  /** A token signed with a key this node has not seen: reload the key set, at most once a second (an unknown kid costs one store read). */
  private refreshKeys(now: number): Promise<boolean> {
    // Requests that arrive while a reload runs wait for it rather than fail.
    if (this.reloading) return this.reloading;
    if (!this.reloadKeys || now - this.lastReload < 1_000) return Promise.resolve(false);
    const reload = this.reloadKeys;
    this.lastReload = now;
    this.reloading = (async () => {
      try {
        this.keySet = createLocalJWKSet({ keys: await reload() });
        return true;
      } finally {
        this.reloading = null;
      }
    })();
    return this.reloading;
  }

  /**
   * What revocation covers this verified token now, or null. A delegated
   * token also ends with any client of its actor chain: revoking the client
   * the user authorized ends the tokens exchanged from its token too.
   */
  revokedBy(principal: Principal): ReturnType<RevocationList['revokedBy']> {
    const own = this.revocations.revokedBy({ jti: principal.jti, grantId: principal.grantId, clientId: principal.clientId, sub: principal.sub, issuedAtMs: principal.issuedAtMs, task: principal.task?.id });
    if (own !== null || principal.actors.length < 2) return own;
    for (const actor of principal.actors.slice(1)) {
      const found = this.revocations.revokedBy({ jti: undefined, grantId: undefined, clientId: actor, sub: principal.sub, issuedAtMs: principal.issuedAtMs });
      if (found !== null) return found;
    }
    return null;
  }

  private checkRevoked(principal: Principal): void {
    const by = this.revokedBy(principal);
    if (by !== null) throw new AuthError('revoked', `the token was revoked (${by})`, { principal });
  }

  /** The caller for this request to `server`, or AuthError. */
  verify(authorization: string | undefined, server: ResolvedServer, now = Date.now()): Promise<Principal> {
    return this.check(authorization, { audience: server.endpoint, server: server.name }, now);
  }

  /**
   * The caller of another resource of this gateway (the admin API,
   * {issuer}/admin/v1), or AuthError: the same checks as `verify`
   * (signature, issuer, type, lifetime, revocation), with `audience` as the
   * only audience accepted. Its principal's grants are empty: an MCP server
   * is reached only through `verify`, which demands that server's audience.
   */
  verifyResource(authorization: string | undefined, audience: string, now = Date.now()): Promise<Principal> {
    return this.check(authorization, { audience, server: null }, now);
  }

  /** `target.audience` is the one audience accepted; `target.server` names the MCP server whose grants the scopes give (null: none). */
  private async check(authorization: string | undefined, target: Target, now: number): Promise<Principal> {
    if (authorization === undefined || authorization === '') throw new AuthError('missing', 'a bearer token is required');
    const token = bearerToken(authorization);
    if (token === null) throw new AuthError('malformed', 'the Authorization header must be "Bearer <token>"');
    // Keyed by the token itself: the map lives only in this process's memory, like the request
    // that carried it, and a hit costs no hashing.
    const cached = this.cache.get(token);
    if (cached !== undefined) {
      if (now >= cached.until) {
        this.cache.delete(token);
        throw new AuthError('expired', 'the token has expired', { principal: cached.principal });
      }
      if (cached.principal.audience !== target.audience) {
        throw new AuthError('wrong_audience', WRONG_AUDIENCE, { principal: cached.principal });
      }
      this.checkRevoked(cached.principal);
      return cached.principal;
    }
    const principal = await this.verifySignature(token, createHash('sha256').update(token).digest('hex'), target, now);
    this.checkRevoked(principal);
    if (this.cache.size >= CACHE_MAX) {
      const oldest = this.cache.keys().next();
      if (!oldest.done) this.cache.delete(oldest.value);
    }
    this.cache.set(token, { principal, until: principal.exp * 1000 });
    return principal;
  }

  /** The claims of one of our access tokens (signature, issuer, type, lifetime), or AuthError; an unknown key is looked up once. */
  private async claims(token: string, now: number, retried = false): Promise<JWTPayload> {
    try {
      const { payload } = await jwtVerify(token, this.keySet, {
        issuer: this.issuer,
        typ: 'at+jwt',
        algorithms: [SIGNING_ALG],
        requiredClaims: ['exp', 'iat', 'jti', 'sub', 'aud'],
        clockTolerance: this.clockToleranceS,
        currentDate: new Date(now),
      });
      return payload;
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw new AuthError('expired', 'the token has expired');
      if (error instanceof joseErrors.JWKSNoMatchingKey && !retried && (await this.refreshKeys(now).catch(() => false))) {
        return this.claims(token, now, true);
      }
      throw new AuthError('invalid', 'the token is not valid here');
    }
  }

  /** For revocation and introspection: the claims of a valid access token of ours (any audience, revoked or not), or null. */
  async claimsOf(token: string, now = Date.now()): Promise<JWTPayload | null> {
    try {
      return await this.claims(token, now);
    } catch {
      return null;
    }
  }

  private async verifySignature(token: string, hash: string, target: Target, now: number): Promise<Principal> {
    const payload = await this.claims(token, now);
    const audience = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    const clientId = payload.client_id;
    if (typeof clientId !== 'string' || audience.length !== 1 || typeof audience[0] !== 'string') {
      throw new AuthError('invalid', 'the token is not an access token for one MCP server');
    }
    const scopes = scopeWords(payload.scope);
    // A token issued to a user comes from a grant (its id is in `gid`), or from exchanging one (it names its actors in `act`);
    // a client credentials token has neither.
    const actors = actorChain(payload.act);
    const user = typeof payload.gid === 'string' || actors.length > 0 ? payload.sub! : null;
    const principal: Principal = {
      sub: payload.sub!,
      user,
      groups: user !== null && this.groupsOf ? await this.groupsOf(user) : [],
      clientId,
      client: { id: clientId, ...((this.clientOf ? await this.clientOf(clientId) : null) ?? { name: clientId, owner: null, kind: user === null ? 'machine' : 'interactive' }) },
      scopes,
      grants: target.server === null ? NO_GRANTS : grantsFor(target.server, scopes),
      jti: payload.jti!,
      grantId: typeof payload.gid === 'string' ? payload.gid : undefined,
      iat: payload.iat!,
      issuedAtMs: issuedAtMs(payload.iat, payload[ISSUED_AT_MS]),
      exp: payload.exp!,
      audience: audience[0],
      tokenRef: hash.slice(0, 12),
      actors,
      task: readTaskClaim(payload.task),
    };
    if (principal.audience !== target.audience) throw new AuthError('wrong_audience', WRONG_AUDIENCE, { principal });
    return principal;
  }
}
