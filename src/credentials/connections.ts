/**
 * The `oauth` kind (docs/credentials.md): each user connects their own
 * account at the upstream's authorization server, and Mandate, its OAuth
 * client there, presents that user's token on that user's calls only.
 *
 * - A call by a user with no connection is answered with a URL elicitation
 *   (`-32042`, MCP 2025-11-25) whose link is a Mandate page
 *   ({issuer}/connect/TICKET). The ticket is sealed under the deployment
 *   secret and names the user, the server and the tenant; it lasts 10
 *   minutes. The page only proceeds for that user, signed in to Mandate in
 *   that browser (src/identity/account.ts), so a link sent to someone else
 *   cannot connect their account to the sender.
 * - Connecting is the authorization code flow with S256 PKCE and a state,
 *   both kept in a cookie sealed to the browser that started it; the one
 *   redirect URI to register at the upstream is {issuer}/connect/callback.
 * - Tokens are sealed per user, server and tenant (src/credentials/vault.ts),
 *   refreshed a minute before they expire (or after a 401), once across
 *   nodes (compare-and-set), and revoked at the upstream on disconnect.
 *   A refresh the upstream refuses (invalid_grant) ends the connection.
 * - Events: credential.issued (connected), credential.refreshed,
 *   credential.revoked (disconnected: by the user, an administrator, or the
 *   upstream's refusal); each names the user, the server and the revision,
 *   never a token.
 */
import { randomUUID } from 'node:crypto';
import * as client from 'openid-client';
import type { AuditLog } from '../audit/log.ts';
import type { CredentialRequest, UpstreamCredential } from '../gateway/credentials.ts';
import { GatewayError } from '../gateway/errors.ts';
import type { RegisteredServer } from '../gateway/registry.ts';
import { seal, unseal } from '../identity/secrets.ts';
import { errorCode } from '../identity/upstream-login.ts';
import type { Logger } from '../observability/log.ts';
import type { ConnectionKey, ConnectionRecord } from '../store/connections.ts';
import type { Store } from '../store/types.ts';
import { AuthorizationServerError, type AuthorizationServers, type UpstreamAuthorization } from './upstream-as.ts';
import { openConnection, sealConnection } from './vault.ts';

export type OAuthAuth = Extract<UpstreamAuthorization, { kind: 'oauth' }>;

/** A connect link lasts this long. */
export const TICKET_TTL_MS = 10 * 60_000;
/** Tokens are refreshed this long before they expire. */
const REFRESH_EARLY_MS = 60_000;
/** A connection's last use is written at most this often. */
const MARK_USED_MS = 60_000;
const TICKET_CONTEXT = 'mandate-connect-ticket';

interface Tokens {
  access_token: string;
  refresh_token?: string;
}

interface Held {
  record: ConnectionRecord;
  tokens: Tokens;
}

/** What a connect link names. */
export interface Ticket extends ConnectionKey {
  /** Epoch ms. */
  expiresAt: number;
  elicitationId: string;
}

/** What the browser keeps between the connect page and the callback (sealed in a cookie by the page). */
export interface ConnectFlow extends ConnectionKey {
  state: string;
  verifier: string;
}

/** A connection as shown (CLI, account page): never a token. */
export type ConnectionView = Omit<ConnectionRecord, 'sealedKey' | 'sealedTokens'>;

export interface ConnectionsDeps {
  store: Store;
  secret: Buffer;
  issuer: string;
  servers: AuthorizationServers;
  /** The client secret's current value for a server (a stored secret), and a name of its version. */
  clientSecret(request: CredentialRequest, name: string): { value: string; ref: string };
  audit?: AuditLog;
  log: Logger;
  now(): number;
}

const keyText = (key: ConnectionKey): string => `${key.user}\u0000${key.server}\u0000${key.tenant}`;

/** The connection a request's user has (or needs) for its server. */
export function connectionKey(server: RegisteredServer, user: string): ConnectionKey {
  return { user, server: server.name, tenant: server.catalog?.tenant ?? '' };
}

/** The one redirect URI to register at every upstream authorization server. */
export function connectCallbackUri(issuer: string): string {
  return `${issuer.replace(/\/$/, '')}/connect/callback`;
}

export class Connections {
  private readonly deps: ConnectionsDeps;
  private readonly held = new Map<string, Held>();
  private readonly refreshing = new Map<string, Promise<Held | null>>();
  private readonly marked = new Map<string, number>();

  constructor(deps: ConnectionsDeps) {
    this.deps = deps;
  }

  /** Drops what is held: the credentials changed somewhere (a disconnect, a refresh by another node). */
  clear(): void {
    this.held.clear();
  }

  private async load(key: ConnectionKey): Promise<Held | null> {
    const cached = this.held.get(keyText(key));
    if (cached !== undefined) return cached;
    const record = await this.deps.store.connections.get(key);
    if (record === null) return null;
    let tokens: Tokens;
    try {
      tokens = JSON.parse(openConnection(this.deps.secret, record)) as Tokens;
    } catch {
      this.deps.log.error({ user: key.user, server: key.server }, 'a stored connection cannot be opened with this deployment secret');
      return null;
    }
    const held = { record, tokens };
    if (this.held.size >= 10_000) this.held.clear();
    this.held.set(keyText(key), held);
    return held;
  }

  private user(request: CredentialRequest): string {
    const user = request.principal?.user;
    if (user === null || user === undefined) {
      throw new GatewayError('credential_missing', `upstream server "${request.server.name}" acts with each user's own account there, and this request has no signed-in user`, {
        detail: request.principal === null ? 'no token' : 'a machine client token',
      });
    }
    return user;
  }

  async credential(request: CredentialRequest, auth: OAuthAuth): Promise<UpstreamCredential> {
    const key = connectionKey(request.server, this.user(request));
    let held = await this.load(key);
    const now = this.deps.now();
    if (held !== null && held.record.expiresAt !== null && held.record.expiresAt - REFRESH_EARLY_MS <= now) {
      const fresh = await this.refreshOnce(request, auth, key, held);
      // Not refreshed: an expired token is not presented (the user connects again); one about to expire still is.
      held = fresh ?? (held.record.expiresAt !== null && held.record.expiresAt <= now ? null : held);
    }
    if (held === null) throw this.connectionRequired(request, key);
    this.noteUse(key, now);
    return { headers: { authorization: `Bearer ${held.tokens.access_token}` }, reference: `oauth:${key.server}/${key.user}${key.tenant ? `[tenant=${key.tenant}]` : ''}:r${held.record.revision}` };
  }

  /** After a 401 or 403: refresh the user's tokens; true if there are new ones to try. */
  async refresh(request: CredentialRequest, auth: OAuthAuth): Promise<boolean> {
    const user = request.principal?.user;
    if (user === null || user === undefined) return false;
    const key = connectionKey(request.server, user);
    const held = await this.load(key);
    return held !== null && (await this.refreshOnce(request, auth, key, held)) !== null;
  }

  /** One refresh per connection at a time on this node; across nodes the store's compare-and-set keeps one. */
  private refreshOnce(request: CredentialRequest, auth: OAuthAuth, key: ConnectionKey, held: Held): Promise<Held | null> {
    if (held.tokens.refresh_token === undefined) return Promise.resolve(null);
    const text = keyText(key);
    let pending = this.refreshing.get(text);
    if (pending === undefined) {
      pending = this.refreshWith(request, auth, key, held).finally(() => this.refreshing.delete(text));
      this.refreshing.set(text, pending);
    }
    return pending;
  }

  private async refreshWith(request: CredentialRequest, auth: OAuthAuth, key: ConnectionKey, held: Held): Promise<Held | null> {
    let response: client.TokenEndpointResponse;
    try {
      const config = await this.configFor(request, auth);
      response = await client.refreshTokenGrant(config, held.tokens.refresh_token as string, auth.resource !== undefined ? { resource: auth.resource } : {});
    } catch (error) {
      const code = errorCode(error);
      if (error instanceof client.ResponseBodyError && error.error === 'invalid_grant') {
        // The upstream ended the grant (the user revoked it there, or it expired): so does Mandate.
        await this.end(key, 'mandate', `the upstream refused the refresh token (${code})`, false);
        return null;
      }
      this.deps.log.warn({ server: key.server, user: key.user, err: code }, 'could not refresh an upstream connection');
      return null;
    }
    const now = this.deps.now();
    const tokens: Tokens = { access_token: response.access_token, ...(response.refresh_token ?? held.tokens.refresh_token ? { refresh_token: response.refresh_token ?? held.tokens.refresh_token } : {}) };
    const sealed = sealConnection(this.deps.secret, key, JSON.stringify(tokens));
    const next = { sealedKey: sealed.sealedKey, sealedTokens: sealed.sealedTokens, scope: response.scope ?? held.record.scope, expiresAt: expiry(response, now) };
    if (!(await this.deps.store.connections.refreshed(key, held.record.revision, next, now))) {
      // Another node refreshed first (or the user disconnected): what the store holds now.
      this.held.delete(keyText(key));
      return this.load(key);
    }
    const fresh: Held = { record: { ...held.record, ...next, revision: held.record.revision + 1, refreshedAt: now }, tokens };
    this.held.set(keyText(key), fresh);
    await this.record('credential.refreshed', key, 'the access token was about to expire or was refused', { revision: fresh.record.revision, scope: fresh.record.scope, expires_at: fresh.record.expiresAt });
    return fresh;
  }

  private async configFor(request: CredentialRequest, auth: OAuthAuth): Promise<client.Configuration> {
    const secret = auth.clientSecret === undefined ? undefined : this.deps.clientSecret(request, auth.clientSecret);
    return this.deps.servers.get(auth, secret?.value, secret?.ref ?? '');
  }

  // -------------------------------------------------------------------------
  // Connect links

  private connectionRequired(request: CredentialRequest, key: ConnectionKey): GatewayError {
    const elicitationId = randomUUID();
    const url = this.connectUrl({ ...key, expiresAt: this.deps.now() + TICKET_TTL_MS, elicitationId });
    const message = `Connect your account for "${request.server.name}": open ${url} and sign in there, then try again`;
    return new GatewayError('connection_required', message, {
      data: { elicitations: [{ mode: 'url', elicitationId, url, message: `Connect your account for "${request.server.name}" to let Mandate call it for you` }] },
      detail: `no connection for user ${key.user}`,
    });
  }

  /** {issuer}/connect/TICKET: the ticket sealed under the deployment secret. */
  connectUrl(ticket: Ticket): string {
    const sealed = seal(this.deps.secret, JSON.stringify({ u: ticket.user, s: ticket.server, t: ticket.tenant, x: ticket.expiresAt, e: ticket.elicitationId }), TICKET_CONTEXT);
    return `${this.deps.issuer.replace(/\/$/, '')}/connect/${sealed}`;
  }

  /** A connect link's ticket, or null if it was not made here, was changed, or has expired. */
  openTicket(text: string): Ticket | null {
    try {
      const raw = JSON.parse(unseal(this.deps.secret, text, TICKET_CONTEXT)) as { u?: unknown; s?: unknown; t?: unknown; x?: unknown; e?: unknown };
      if (typeof raw.u !== 'string' || typeof raw.s !== 'string' || typeof raw.t !== 'string' || typeof raw.x !== 'number' || typeof raw.e !== 'string') return null;
      if (raw.x <= this.deps.now()) return null;
      return { user: raw.u, server: raw.s, tenant: raw.t, expiresAt: raw.x, elicitationId: raw.e };
    } catch {
      return null;
    }
  }

  /** The start of a connection: where to send the browser, and what it must bring back. */
  async begin(server: RegisteredServer, key: ConnectionKey): Promise<{ url: string; flow: ConnectFlow }> {
    const auth = oauthOf(server);
    const request = ownRequest(server);
    const config = await this.configFor(request, auth);
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const params: Record<string, string> = {
      redirect_uri: connectCallbackUri(this.deps.issuer),
      response_type: 'code',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
    };
    if (auth.scopes.length > 0) params.scope = auth.scopes.join(' ');
    if (auth.resource !== undefined) params.resource = auth.resource;
    return { url: client.buildAuthorizationUrl(config, params).href, flow: { ...key, state, verifier } };
  }

  /** The upstream's answer at the callback: exchanges the code and keeps the tokens for the flow's user. */
  async complete(server: RegisteredServer, flow: ConnectFlow, callbackUrl: URL): Promise<ConnectionView> {
    const auth = oauthOf(server);
    const config = await this.configFor(ownRequest(server), auth);
    const response = await client.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: flow.verifier, expectedState: flow.state }, auth.resource !== undefined ? { resource: auth.resource } : {});
    const key: ConnectionKey = { user: flow.user, server: flow.server, tenant: flow.tenant };
    const now = this.deps.now();
    const tokens: Tokens = { access_token: response.access_token, ...(response.refresh_token !== undefined ? { refresh_token: response.refresh_token } : {}) };
    const sealed = sealConnection(this.deps.secret, key, JSON.stringify(tokens));
    const scope = response.scope ?? auth.scopes.join(' ');
    const expiresAt = expiry(response, now);
    const revision = await this.deps.store.connections.put({ ...key, sealedKey: sealed.sealedKey, sealedTokens: sealed.sealedTokens, scope, expiresAt, createdAt: now });
    this.held.delete(keyText(key));
    await this.record('credential.issued', key, 'the user connected their upstream account', { revision, scope, expires_at: expiresAt, refreshable: tokens.refresh_token !== undefined });
    return { ...key, revision, scope, expiresAt, createdAt: now, refreshedAt: null, lastUsedAt: null };
  }

  /**
   * Ends a connection: removed from the store (every node stops using it
   * within its poll, this one at once), then its tokens revoked at the
   * upstream where it has a revocation endpoint (best effort: the upstream
   * may be down; Mandate holds nothing any more either way). Null if there
   * was none; else the revision ended and what the upstream said.
   */
  async disconnect(key: ConnectionKey, actor: string, server?: RegisteredServer): Promise<{ revision: number; upstream: string } | null> {
    return this.end(key, actor, actor === key.user ? 'the user disconnected' : 'an administrator revoked the connection', true, server);
  }

  private async end(key: ConnectionKey, actor: string, reason: string, revokeUpstream: boolean, server?: RegisteredServer): Promise<{ revision: number; upstream: string } | null> {
    const record = await this.deps.store.connections.delete(key, this.deps.now());
    this.held.delete(keyText(key));
    if (record === null) return null;
    let upstream = 'not asked';
    if (revokeUpstream && server?.auth?.kind === 'oauth') upstream = await this.revokeUpstream(server, record);
    await this.record('credential.revoked', key, reason, { revision: record.revision, upstream }, actor);
    return { revision: record.revision, upstream };
  }

  private async revokeUpstream(server: RegisteredServer, record: ConnectionRecord): Promise<string> {
    try {
      const tokens = JSON.parse(openConnection(this.deps.secret, record)) as Tokens;
      const config = await this.configFor(ownRequest(server), oauthOf(server));
      if (config.serverMetadata().revocation_endpoint === undefined) return 'no revocation endpoint';
      if (tokens.refresh_token !== undefined) await client.tokenRevocation(config, tokens.refresh_token, { token_type_hint: 'refresh_token' });
      await client.tokenRevocation(config, tokens.access_token, { token_type_hint: 'access_token' });
      return 'revoked';
    } catch (error) {
      return `failed: ${error instanceof AuthorizationServerError ? error.code : errorCode(error)}`;
    }
  }

  /** The upstream's authorization endpoint (where the connect page's form redirects), if it can be found. */
  async authorizationEndpoint(server: RegisteredServer): Promise<string | null> {
    try {
      const config = await this.configFor(ownRequest(server), oauthOf(server));
      return config.serverMetadata().authorization_endpoint ?? null;
    } catch {
      return null;
    }
  }

  /** Connections, of one user or of all: never a token. */
  async list(user?: string): Promise<ConnectionView[]> {
    return (await this.deps.store.connections.list(user)).map(({ sealedKey: _key, sealedTokens: _tokens, ...view }) => view);
  }

  private noteUse(key: ConnectionKey, now: number): void {
    const text = keyText(key);
    if ((this.marked.get(text) ?? 0) + MARK_USED_MS > now) return;
    if (this.marked.size >= 10_000) this.marked.clear();
    this.marked.set(text, now);
    this.deps.store.connections.markUsed(key, now).catch(() => undefined);
  }

  private async record(type: 'credential.issued' | 'credential.refreshed' | 'credential.revoked', key: ConnectionKey, reason: string, data: Record<string, unknown>, actor = key.user): Promise<void> {
    await this.deps.audit?.record({
      type,
      actor,
      server: key.server,
      outcome: 'success',
      reason,
      data: { kind: 'oauth', user: key.user, ...(key.tenant !== '' ? { tenant: key.tenant } : {}), ...data },
    });
  }
}

function expiry(response: client.TokenEndpointResponse, now: number): number | null {
  return typeof response.expires_in === 'number' && response.expires_in > 0 ? now + response.expires_in * 1000 : null;
}

function oauthOf(server: RegisteredServer): OAuthAuth {
  const auth = server.auth;
  if (auth?.kind !== 'oauth') throw new GatewayError('unknown_server', `server "${server.name}" does not connect user accounts`);
  return auth;
}

/** The broker's own question about a server (its client secret), outside any call. */
function ownRequest(server: RegisteredServer): CredentialRequest {
  return { server, principal: null, purpose: 'request', attempt: 0 };
}
