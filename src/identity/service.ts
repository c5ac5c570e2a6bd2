/**
 * The identity plane, assembled: deployment secret → keys → revocation list →
 * authorization server (with Mandate's steps) → token verifier. The HTTP
 * front door hands it every path that is not an MCP endpoint or a probe.
 */
import type { ExchangeDeps } from './exchange-grant.ts';
import type { JWK } from 'jose';
import { sendJson } from '../http/json.ts';
import { sendError } from '../http/errors.ts';
import { OAuthRefusal } from './errors.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuditLog } from '../audit/log.ts';
import { issuerPath, type Config, type ResolvedServer } from '../config/load.ts';
import type { Logger } from '../observability/log.ts';
import type { Store } from '../store/types.ts';
import type { AdapterHooks } from './adapter.ts';
import { requestNotes } from './context.ts';
import { handleInteraction, type InteractionDeps } from './interactions.ts';
import { createHmac } from 'node:crypto';
import { loadKeys, publicSigningKeys, type KeyMaterial, type KeyRingOptions } from './keys.ts';
import { LoginThrottle } from './interaction/throttle.ts';
import { registrationIntake } from './intake.ts';
import { createProvider } from './provider.ts';
import { INTERACTION_PREFIX } from './routes.ts';
import { handleAccount, isAccountPath, type AccountDeps } from './account.ts';
import type { Approvals } from '../approvals/service.ts';
import type { Connections } from '../credentials/connections.ts';
import { KEEP_MS, RevocationList, tokenFacts } from './revocations.ts';
import { ADMIN_SCOPE, adminResource, serverScope, type Servers } from './scopes.ts';
import { loadSecretKey } from './secrets.ts';
import { auditGateStep, discoveryStep, errorsStep, evidenceStep, jwtTokensStep } from './steps.ts';
import { AuthError, TokenVerifier, type Principal } from './verify.ts';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { ServerRegistry } from '../gateway/registry.ts';
import { correlationId } from '../gateway/errors.ts';

/** Nothing of the authorization server's at this path. */
const NOT_FOUND = new OAuthRefusal(404, 'not_found', 'nothing here');

export const PRM_PREFIX = '/.well-known/oauth-protected-resource';
const AS_METADATA = '/.well-known/oauth-authorization-server';
const OIDC_METADATA = '/.well-known/openid-configuration';

export interface IdentityDeps {
  config: Config;
  store: Store;
  audit: AuditLog;
  log: Logger;
  /** The servers behind the gateway, as they change (default: the configuration's, fixed). */
  registry?: ServerRegistry;
  /** Per-user upstream connections (the `oauth` kind): the connect and account pages (account.ts). */
  connections?: Connections;
  /** Deciding approval requests on their pages (account.ts, docs/approvals.md), and forgetting ended requests' arguments (housekeeping). */
  approvals?: Pick<Approvals, 'decide' | 'forgetArguments'>;
  /** Whether policy lets a user use a server at all: asked by the token exchange (exchange-grant.ts). */
  policyRefusal?: ExchangeDeps['policyRefusal'];
}

/** How often a running gateway looks for a due key rotation (and purges expired rows), ms. */
const HOUSEKEEPING_MS = 10 * 60_000;

/** Names a key set: the signing keys in order, the active one first. */
const keySetName = (keys: KeyMaterial): string => keys.signing.map((k) => k.kid).join(' ');

export class Identity {
  readonly verifier: TokenVerifier;
  readonly revocations: RevocationList;
  private readonly deps: IdentityDeps;
  private readonly issuerPath: string;
  /** host[:port] of the configured issuer. */
  private readonly issuerHost: string;
  private readonly httpsIssuer: boolean;
  private readonly secret: Buffer;
  private readonly keyOptions: KeyRingOptions;
  private readonly hooks: AdapterHooks;
  /** The authorization server for the current key set; rebuilt when the keys change. */
  private callback!: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
  /** What the sign-in and consent pages need; rebuilt with the authorization server. */
  private interactions!: InteractionDeps;
  private readonly account: AccountDeps;
  /** Failed-login counters, kept across rebuilds. */
  private readonly throttle = new LoginThrottle();
  /** Derived from the shared secret, so every node agrees. */
  private readonly csrfKey: string;
  private keySet = '';
  private activeKey!: JWK;
  private checking: Promise<boolean> | null = null;
  private purgeTimer: NodeJS.Timeout | null = null;
  /** The MCP servers behind the gateway, as they are now. */
  readonly servers: Servers;

  private constructor(deps: IdentityDeps, keys: KeyMaterial, secret: Buffer, keyOptions: KeyRingOptions, revocations: RevocationList) {
    this.deps = deps;
    const { config, store, audit } = deps;
    this.servers = deps.registry ?? new ServerRegistry(config.servers);
    this.issuerPath = issuerPath(config.issuer);
    this.issuerHost = new URL(config.issuer).host;
    this.httpsIssuer = new URL(config.issuer).protocol === 'https:';
    this.revocations = revocations;
    this.secret = secret;
    this.keyOptions = keyOptions;

    this.hooks = {
      // A stored refresh token or code: no jti of an access token; its own field names.
      isRevoked: (payload) => revocations.revokedBy({ ...tokenFacts(payload, { grant: 'grantId', client: 'clientId', sub: 'accountId' }), jti: undefined }) !== null,
      grantRevoked: async (grantId) => {
        await revocations.revoke('grant', grantId, Date.now() + KEEP_MS.grant);
      },
      metadataClientSeen: async (clientId, metadata) => {
        const known = await store.identity.getClient(clientId);
        if (known) return known.status === 'active';
        const now = Date.now();
        const { client_secret: _secret, ...rest } = metadata;
        const address = requestNotes.getStore()?.address ?? null;
        // On record first: a client is never usable without its registration in the log.
        await audit.record({ type: 'client.registered', outcome: 'success', reason: 'client ID metadata document on an allowed domain', data: { client_id: clientId, status: 'active', class: 'interactive', source: 'cimd', address } });
        try {
          await store.identity.createClient({ id: clientId, status: 'active', class: 'interactive', source: 'cimd', owner: `domain:${new URL(clientId).host}`, metadata: rest, secretHash: null, registeredFrom: address, createdAt: now, updatedAt: now, lastUsedAt: null, decidedBy: null });
        } catch {
          // Another request recorded it first.
          return (await store.identity.getClient(clientId))?.status === 'active';
        }
        return true;
      },
    };
    this.verifier = new TokenVerifier(config.issuer, keys.publicKeys, revocations, {
      reloadKeys: () => publicSigningKeys(store, secret),
      groupsOf: async (user) => (await store.identity.getUser(user))?.groups ?? [],
      clientOf: async (id) => {
        const client = await store.identity.getClient(id);
        if (client === null) return null;
        const name = client.metadata.client_name;
        return { name: typeof name === 'string' && name !== '' ? name : id, owner: client.owner, kind: client.class };
      },
    });
    this.csrfKey = createHmac('sha256', secret).update('mandate-csrf').digest('base64url');
    this.mount(keys);
    this.account = {
      config,
      store,
      audit,
      log: deps.log,
      secret,
      csrfKey: this.csrfKey,
      provider: () => this.interactions.provider,
      server: (name) => deps.registry?.get(name),
      connections: deps.connections ?? null,
      approvals: deps.approvals ?? null,
    };
  }

  /**
   * Builds the authorization server for a key set and sends new requests to it.
   * Requests already inside the previous one finish there; everything they
   * share (grants, interactions, sessions, cookie keys) lives in the store, as
   * between two nodes.
   */
  private mount(keys: KeyMaterial): void {
    const { config, store, audit, log } = this.deps;
    const servers = this.servers;
    const provider = createProvider({ config, store, secret: this.secret, keys, hooks: this.hooks, servers, exchange: { verifier: this.verifier, revocations: this.revocations, ...(this.deps.policyRefusal !== undefined ? { policyRefusal: this.deps.policyRefusal } : {}) } });
    // An unexpected error: logged with a correlation id that the client's error answer carries (errorsStep).
    provider.on('server_error', (ctx: KoaContextWithOIDC, error: unknown) => {
      const id = correlationId();
      (ctx.state as Record<string, unknown>).correlationId = id;
      log.error({ correlationId: id, err: String(error), stack: error instanceof Error ? error.stack : undefined }, 'authorization server error');
    });
    // A refused authorization request issues nothing, but it is evidence (a pending or revoked
    // client, a missing PKCE, a redirect URI that does not match): on record, without waiting.
    provider.on('authorization.error', (ctx: KoaContextWithOIDC, error: { error?: string; error_description?: string }) => {
      const params = (ctx.oidc?.params ?? {}) as Record<string, unknown>;
      const text = (value: unknown): string | null => (typeof value === 'string' ? value.slice(0, 300) : null);
      const inactive = requestNotes.getStore()?.inactiveClient;
      audit.emit({
        type: 'authorization.denied',
        outcome: 'denied',
        reason: error.error ?? 'error',
        data: {
          client_id: text(params.client_id),
          redirect_uri: text(params.redirect_uri),
          resource: text(params.resource),
          detail: inactive ? `client is ${inactive.status}` : text(error.error_description),
          address: requestNotes.getStore()?.address ?? null,
        },
      });
    });
    const steps = { config, store, audit, revocations: this.revocations, verifier: this.verifier, servers };
    // Outermost first: nothing is issued without a writable audit log; every outcome,
    // refusals by Mandate's own steps included, becomes evidence.
    provider.use(auditGateStep(audit));
    provider.use(evidenceStep(steps));
    provider.use(errorsStep());
    provider.use(jwtTokensStep(steps));
    provider.use(registrationIntake({ config, store, servers }));
    provider.use(discoveryStep(servers));
    this.callback = provider.callback() as unknown as (req: IncomingMessage, res: ServerResponse) => Promise<void>;
    this.interactions = { provider, store, audit, config, servers, log, throttle: this.throttle, csrfKey: this.csrfKey };
    this.keySet = keySetName(keys);
    this.activeKey = keys.signing[0] as JWK;
  }

  /** The private key this node signs with now (the active one of the key set published at /oauth/jwks). */
  get signingKey(): JWK {
    return this.activeKey;
  }

  /** The key this node signs new tokens with. */
  get signingKid(): string {
    return this.keySet.split(' ')[0] ?? '';
  }

  /**
   * Rotates the signing key once it has reached `identity.keyRotationDays`,
   * and follows a rotation by another node or the end of a retired key's
   * publication, by rebuilding the authorization server with the stored keys.
   * Resolves true if the key set changed. Runs on the housekeeping timer.
   */
  checkKeys(now = Date.now()): Promise<boolean> {
    this.checking ??= (async () => {
      try {
        const keys = await loadKeys(this.deps.store, this.secret, this.keyOptions, now);
        if (keys.created) await this.deps.audit.record(rotatedEvent(keys.created));
        if (keySetName(keys) === this.keySet) return false;
        this.mount(keys);
        this.verifier.useKeys(keys.publicKeys);
        this.deps.log.info({ kid: this.signingKid }, 'signing keys changed: new tokens are signed with the newest key');
        return true;
      } finally {
        this.checking = null;
      }
    })();
    return this.checking;
  }

  static async start(deps: IdentityDeps): Promise<Identity> {
    const { config, store, log } = deps;
    const secret = loadSecretKey(config.dataDir);
    // A retired key stays published for a whole rotation period (at least a token lifetime and an
    // hour): another node that has not checked its keys since may still sign with it.
    const rotateAfterMs = config.identity.keyRotationDays * 86_400_000;
    const retainMs = Math.max(rotateAfterMs, config.identity.accessTokenTtl * 1000 + 3_600_000);
    const keyOptions = { rotateAfterMs, retainMs };
    const keys = await loadKeys(store, secret, keyOptions);
    if (keys.created) await deps.audit.record(rotatedEvent(keys.created));
    const revocations = new RevocationList(store);
    await revocations.refresh();
    revocations.start(500, (error) => log.warn({ err: String(error) }, 'could not refresh the revocation list'));
    const identity = new Identity(deps, keys, secret, keyOptions, revocations);
    identity.scheduleHousekeeping();
    return identity;
  }

  private scheduleHousekeeping(): void {
    const { store, audit, config, log } = this.deps;
    const purge = async () => {
      const now = Date.now();
      await store.identity.purgeExpired(now);
      const expired = await store.identity.expireUnusedClients(now - config.identity.registration.unusedClientTtlHours * 3_600_000);
      for (const id of expired) audit.emit({ type: 'client.expired', outcome: 'success', reason: 'registered but never used', data: { client_id: id } });
      // A held call's arguments are kept for its deciders, not for ever (docs/approvals.md).
      await this.deps.approvals?.forgetArguments();
    };
    this.purgeTimer = setInterval(() => {
      void purge().catch((error) => log.warn({ err: String(error) }, 'identity purge failed'));
      void this.checkKeys().catch((error) => log.error({ err: String(error) }, 'could not check the signing keys; new tokens are still signed with the current key'));
    }, HOUSEKEEPING_MS);
    this.purgeTimer.unref();
  }

  stop(): void {
    this.revocations.stop();
    if (this.purgeTimer) clearInterval(this.purgeTimer);
  }

  /** RFC 9728 metadata URL of one MCP endpoint. */
  resourceMetadataUrl(server: ResolvedServer): string {
    const issuer = new URL(this.deps.config.issuer);
    return `${issuer.origin}${PRM_PREFIX}${this.issuerPath}/mcp/${server.name}`;
  }

  /** RFC 9728 metadata URL of the admin API ({issuer}/admin/v1). */
  adminResourceMetadataUrl(): string {
    return `${new URL(this.deps.config.issuer).origin}${PRM_PREFIX}${this.issuerPath}/admin/v1`;
  }

  /** The caller of an MCP request, or an AuthError (reason says why). Null when tokens are not required and none was sent. */
  async authenticate(authorization: string | undefined, server: ResolvedServer): Promise<Principal | null> {
    if (!this.deps.config.identity.requireToken && authorization === undefined) return null;
    return this.verifier.verify(authorization, server);
  }

  /** Whether a revocation now covers this token. */
  isRevoked(principal: Principal): boolean {
    return this.verifier.revokedBy(principal) !== null;
  }

  /** Calls `listener` whenever new revocations were applied on this node. */
  onRevocation(listener: () => void): () => void {
    return this.revocations.onApplied(listener);
  }

  /** The WWW-Authenticate challenge for a refused token (RFC 6750 §3, RFC 9728 §5.1). */
  challenge(server: ResolvedServer, error: AuthError): Record<string, string> {
    // The description may carry a client-chosen tool name: only RFC 6750's characters go into the header.
    const described = headerSafe(error.message);
    const metadata = `resource_metadata="${this.resourceMetadataUrl(server)}"`;
    if (error.reason === 'insufficient_scope') {
      const scope = error.scope ?? serverScope(server.name);
      return { 'www-authenticate': `Bearer error="insufficient_scope", scope="${headerSafe(scope)}", ${metadata}, error_description="${described}"` };
    }
    const scope = `scope="${serverScope(server.name)}"`;
    if (error.reason === 'missing') return { 'www-authenticate': `Bearer ${metadata}, ${scope}` };
    const code = error.reason === 'malformed' ? 'invalid_request' : 'invalid_token';
    return { 'www-authenticate': `Bearer error="${code}", error_description="${described}", ${metadata}, ${scope}` };
  }

  /** Protected resource metadata for one server (RFC 9728). */
  private protectedResource(server: ResolvedServer): Record<string, unknown> {
    return {
      resource: server.endpoint,
      authorization_servers: [this.deps.config.issuer],
      scopes_supported: [serverScope(server.name)],
      bearer_methods_supported: ['header'],
      resource_name: server.name,
    };
  }

  /** Handles a non-MCP path. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = originForm(req.url ?? '/');
    if (url === null) return sendError(res, new OAuthRefusal(400, 'invalid_request', 'the request target must be a path'));
    const [path = '/', query] = url.split('?');
    const address = clientAddress(req, this.deps.config.listen.trustedProxies);
    // An https issuer is what browsers reach (through a TLS proxy in front): the request counts as
    // secure, so cookies are Secure and __Host- even though this hop is plain http. No forwarded
    // header is trusted for this.
    if (this.httpsIssuer) (req.socket as { encrypted?: boolean }).encrypted = true;
    // The authorization server builds the URLs it advertises (metadata, redirects) from the request's
    // host: the configured issuer's, whatever the request named (Host; X-Forwarded-* are never read).
    req.headers.host = this.issuerHost;
    if (path.startsWith(PRM_PREFIX)) {
      const rest = path.slice(PRM_PREFIX.length);
      const server = this.servers.list().find((s) => `${this.issuerPath}/mcp/${s.name}` === rest);
      const admin = rest === `${this.issuerPath}/admin/v1`;
      if ((!server && !admin) || (req.method !== 'GET' && req.method !== 'HEAD')) return sendError(res, NOT_FOUND);
      const metadata = server
        ? this.protectedResource(server)
        : { resource: adminResource(this.deps.config.issuer), authorization_servers: [this.deps.config.issuer], scopes_supported: [ADMIN_SCOPE], bearer_methods_supported: ['header'], resource_name: 'Mandate admin API' };
      return sendJson(res, 200, metadata, { 'access-control-allow-origin': '*' });
    }
    let local = path;
    if (this.issuerPath) {
      if (path === `${AS_METADATA}${this.issuerPath}` || path === `${OIDC_METADATA}${this.issuerPath}`) local = OIDC_METADATA;
      else if (path.startsWith(`${this.issuerPath}/`)) local = path.slice(this.issuerPath.length);
      else if (path === `${this.issuerPath}${OIDC_METADATA}`) local = OIDC_METADATA;
      else return sendError(res, NOT_FOUND);
    }
    if (local === AS_METADATA) local = OIDC_METADATA;
    await requestNotes.run({ address }, async () => {
      if (local.startsWith(INTERACTION_PREFIX)) {
        await handleInteraction(this.interactions, req, res, local.slice(INTERACTION_PREFIX.length));
        return;
      }
      if (isAccountPath(local)) {
        await handleAccount(this.account, req, res, local, query);
        return;
      }
      req.url = query === undefined ? local : `${local}?${query}`;
      // Where the library is mounted (the issuer's path), read as from a framework that mounts it, so
      // the URLs it builds carry that path.
      (req as IncomingMessage & { originalUrl?: string }).originalUrl = `${this.issuerPath}${req.url}`;
      await this.callback(req, res);
    });
  }
}

/**
 * The client's address: the peer, or, when the peer is a trusted proxy, the
 * nearest X-Forwarded-For entry that is not one (entries further left are the
 * client's own claims and are not trusted).
 */
export function clientAddress(req: IncomingMessage, trusted: readonly string[]): string {
  const normalize = (address: string): string => address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
  const peer = normalize(req.socket.remoteAddress ?? 'unknown');
  if (trusted.length === 0 || !trusted.includes(peer)) return peer;
  const forwarded = req.headers['x-forwarded-for'];
  const hops = (Array.isArray(forwarded) ? forwarded.join(',') : (forwarded ?? '')).split(',').map((hop) => normalize(hop.trim())).filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i -= 1) if (!trusted.includes(hops[i]!)) return hops[i]!;
  return peer;
}

/**
 * A request target in origin form (`/path?query`). An absolute-form target
 * (`http://host/path`) names a host of the client's choosing, which the
 * library would build its URLs from: only its path and query are kept. Null
 * for anything else (`*`, authority form).
 */
function originForm(target: string): string | null {
  if (target.startsWith('/')) return target;
  if (!/^https?:\/\//i.test(target)) return null;
  try {
    const url = new URL(target);
    return `${url.pathname}${url.search}`;
  } catch {
    return null;
  }
}

function headerSafe(value: string): string {
  return value.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '?');
}

function rotatedEvent(created: NonNullable<KeyMaterial['created']>) {
  return {
    type: 'keys.rotated' as const,
    outcome: 'success' as const,
    reason: created.retired.length ? 'the signing key reached its rotation age' : 'first signing key',
    data: { kid: created.kid, retired: created.retired },
  };
}
