/**
 * The `token-exchange` kind (RFC 8693, docs/credentials.md): for a user's
 * call, Mandate mints a subject token for the user and an actor token for
 * the client, and trades them at the upstream's authorization server for a
 * token the upstream accepts.
 *
 * - The subject token: `sub` the user, `aud` the upstream's URL (or
 *   `subjectAudience`), `scope` only what the call needs (for a tools/call,
 *   the one tool's scope, which the policy decision allowed; otherwise the
 *   caller's scopes on this server), `client_id`, at most 60 s, signed with
 *   the keys published at /oauth/jwks. The actor token: `sub` the client,
 *   the same `aud` and lifetime. The client's own token is never sent.
 * - Mandate authenticates as `clientId` with the stored secret
 *   `clientSecret` names (none: a public client). A secret that is not set,
 *   a request without a user, or a gateway without a signing key fails the
 *   call closed, before anything is sent.
 * - Only a Bearer (or N_A) access token is taken. Whatever else the
 *   authorization server answers fails the call closed: the client's error
 *   names the server and the OAuth error code, never the server's own words
 *   or a token.
 * - The exchanged token is kept, per server definition, user, client, scope
 *   and client secret version, until 80% of its lifetime (60 s when the
 *   server does not say). Calls that need the same token at once share one
 *   exchange. When the upstream refuses it, `forget` drops it and the one
 *   retry exchanges anew.
 * - Each exchange is recorded as `credential.issued`, naming the subject
 *   token by its jti; the call's `mcp.request` names it `exchange:JTI`.
 */
import * as client from 'openid-client';
import type { AuditLog } from '../audit/log.ts';
import type { CredentialRequest, UpstreamCredential } from '../gateway/credentials.ts';
import { GatewayError } from '../gateway/errors.ts';
import { errorCode } from '../identity/upstream-login.ts';
import type { Principal } from '../identity/verify.ts';
import type { Logger } from '../observability/log.ts';
import type { Signer } from './mint.ts';
import { AuthorizationServerError, type AuthorizationServers, type UpstreamAuthorization } from './upstream-as.ts';

export type TokenExchangeAuth = Extract<UpstreamAuthorization, { kind: 'token-exchange' }>;

export interface ExchangeDeps {
  /** Signs the subject and actor tokens (null: this gateway has no signing key). */
  signer: Signer | null;
  servers: AuthorizationServers;
  /** The current value of a stored secret for the request's server (the client secret), and a name of its version. */
  clientSecret(request: CredentialRequest, name: string): { value: string; ref: string };
  audit?: AuditLog;
  log: Logger;
  now(): number;
}

const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
/** The subject and actor tokens only have to last for the exchange. */
const SUBJECT_TTL_S = 60;
/** An exchanged token whose lifetime the authorization server does not say. */
const DEFAULT_LIFETIME_S = 60;
/** An exchanged token is renewed once this share of its lifetime has passed. */
const RENEW_SHARE = 0.8;
const MAX_HELD = 10_000;
/** What a token may be made of to go in an Authorization header (visible ASCII). */
const HEADER_SAFE = /^[\x21-\x7e]{1,16384}$/;
const SAFE_CODE = /^[A-Za-z0-9_.:-]{1,64}$/;

interface Exchanged {
  key: string;
  credential: UpstreamCredential;
  renewAt: number;
}

/** What one call needs, and who it is for. */
interface Need {
  principal: Principal;
  scopes: string[];
  secret: { value: string; ref: string } | undefined;
  key: string;
}

/** A refusal before anything is sent: names the server and says why. */
function missing(request: CredentialRequest, why: string, detail?: string): GatewayError {
  return new GatewayError('credential_missing', `upstream server "${request.server.name}" needs a token exchange, and ${why}`, detail !== undefined ? { detail } : {});
}

/** For a tools/call, only the tool's scope; otherwise the caller's scopes on this server (as for `jwt`). */
function scopesFor(request: CredentialRequest, principal: Principal): string[] {
  const name = request.server.name;
  const tool = request.call?.method === 'tools/call' ? request.call.tool : null;
  if (tool !== null) return [`mcp:${name}:tool:${tool}`];
  return principal.scopes.filter((scope) => scope === `mcp:${name}` || scope.startsWith(`mcp:${name}:`));
}

/** An OAuth error code, or a class of failure: never the server's own words. */
function failureCode(error: unknown): string {
  const { error: oauthError, cause } = (error ?? {}) as { error?: unknown; cause?: unknown };
  if (typeof oauthError === 'string' && SAFE_CODE.test(oauthError)) return oauthError;
  // A 401 with a WWW-Authenticate challenge (a refused client): its `error` parameter.
  const challenged = Array.isArray(cause) ? (cause[0] as { parameters?: { error?: unknown } } | undefined)?.parameters?.error : undefined;
  if (typeof challenged === 'string' && SAFE_CODE.test(challenged)) return challenged;
  if (error instanceof AuthorizationServerError) return error.code;
  // A network failure: the system's code (ECONNREFUSED…) over the class name.
  const systemCode = (cause as { code?: unknown } | undefined)?.code;
  if (typeof systemCode === 'string' && SAFE_CODE.test(systemCode)) return systemCode;
  return errorCode(error);
}

/** The access token of an answer, if it is one Mandate can present as a Bearer token. */
function accessToken(answer: client.TokenEndpointResponse): string {
  const issued = (answer as { issued_token_type?: unknown }).issued_token_type;
  if (issued !== undefined && issued !== ACCESS_TOKEN_TYPE) throw new AuthorizationServerError('the authorization server issued another type of token than an access token', 'unsupported_token_type');
  // openid-client gives token_type in lowercase.
  const type = String(answer.token_type).toLowerCase();
  if (type !== 'bearer' && type !== 'n_a') throw new AuthorizationServerError('the authorization server issued a token that is not a Bearer token', 'unsupported_token_type');
  if (!HEADER_SAFE.test(answer.access_token)) throw new AuthorizationServerError('the authorization server issued a token that cannot be sent in a header', 'invalid_token_response');
  return answer.access_token;
}

export class TokenExchange {
  private readonly deps: ExchangeDeps;
  /** Exchanged tokens by key, until they are due for renewal; oldest first. */
  private readonly held = new Map<string, Exchanged>();
  /** Exchanges under way by key: calls that need the same token share one. */
  private readonly pending = new Map<string, Promise<Exchanged>>();
  /** Which token each request was given, so that a refusal drops that one and not a newer one. */
  private readonly given = new WeakMap<CredentialRequest, Exchanged>();

  constructor(deps: ExchangeDeps) {
    this.deps = deps;
  }

  async credential(request: CredentialRequest, auth: TokenExchangeAuth): Promise<UpstreamCredential> {
    const need = this.need(request, auth);
    const held = this.held.get(need.key);
    const exchanged = held !== undefined && held.renewAt > this.deps.now() ? held : await this.shared(request, auth, need);
    this.given.set(request, exchanged);
    return exchanged.credential;
  }

  /** The upstream refused the exchanged token: the next call exchanges anew. */
  forget(request: CredentialRequest): void {
    const given = this.given.get(request);
    let key = given?.key;
    if (key === undefined) {
      const auth = request.server.auth;
      if (auth?.kind !== 'token-exchange') return;
      try {
        key = this.need(request, auth).key;
      } catch {
        return;
      }
    }
    const held = this.held.get(key);
    // A token exchanged since this request was given its own is kept.
    if (held !== undefined && (given === undefined || given === held)) this.held.delete(key);
  }

  /** Who the call is for, what it needs, and the client secret: refused closed if any is missing. */
  private need(request: CredentialRequest, auth: TokenExchangeAuth): Need {
    if (this.deps.signer === null) throw missing(request, 'this gateway has no signing key for the subject token');
    const principal = request.principal;
    if (principal === null) throw missing(request, 'the request carries no token: there is no user to exchange one for');
    const secret: Need['secret'] = auth.clientSecret === undefined ? undefined : this.deps.clientSecret(request, auth.clientSecret);
    const scopes = scopesFor(request, principal);
    const server = request.server;
    const key = [server.name, server.generation, principal.sub, principal.clientId, scopes.join(' '), secret?.ref ?? ''].join('\u0000');
    return { principal, scopes, secret, key };
  }

  /** One exchange per key at a time; what it gets is kept for the next calls. */
  private shared(request: CredentialRequest, auth: TokenExchangeAuth, need: Need): Promise<Exchanged> {
    let pending = this.pending.get(need.key);
    if (pending === undefined) {
      pending = this.exchange(request, auth, need)
        .then((exchanged) => {
          this.keep(exchanged);
          return exchanged;
        })
        .finally(() => this.pending.delete(need.key));
      this.pending.set(need.key, pending);
    }
    return pending;
  }

  private keep(exchanged: Exchanged): void {
    this.held.delete(exchanged.key);
    if (this.held.size >= MAX_HELD) {
      const now = this.deps.now();
      for (const [key, entry] of this.held) if (entry.renewAt <= now) this.held.delete(key);
      // Still full: the oldest go first.
      for (const key of this.held.keys()) {
        if (this.held.size < MAX_HELD) break;
        this.held.delete(key);
      }
    }
    this.held.set(exchanged.key, exchanged);
  }

  /** Mints the subject and actor tokens, exchanges them, and records the issue. */
  private async exchange(request: CredentialRequest, auth: TokenExchangeAuth, need: Need): Promise<Exchanged> {
    const signer = this.deps.signer as Signer;
    const { principal, scopes, secret } = need;
    const now = this.deps.now();
    const aud = auth.subjectAudience ?? request.server.url ?? request.server.endpoint;
    const subject = await signer.mint({ scope: scopes.join(' '), client_id: principal.clientId }, { sub: principal.sub, aud, ttlSeconds: SUBJECT_TTL_S, now, typ: 'JWT' });
    const actor = await signer.mint({}, { sub: principal.clientId, aud, ttlSeconds: SUBJECT_TTL_S, now, typ: 'JWT' });
    let answer: client.TokenEndpointResponse;
    let token: string;
    try {
      const config = await this.deps.servers.get(auth, secret?.value, secret?.ref ?? '', now);
      answer = await client.genericGrantRequest(config, GRANT_TYPE, {
        subject_token: subject.token,
        subject_token_type: JWT_TOKEN_TYPE,
        actor_token: actor.token,
        actor_token_type: JWT_TOKEN_TYPE,
        requested_token_type: ACCESS_TOKEN_TYPE,
        ...(auth.scopes.length > 0 ? { scope: auth.scopes.join(' ') } : {}),
        ...(auth.resource !== undefined ? { resource: auth.resource } : {}),
        ...(auth.audience !== undefined ? { audience: auth.audience } : {}),
      });
      token = accessToken(answer);
    } catch (error) {
      throw this.failed(request, error);
    }
    const lifetime = typeof answer.expires_in === 'number' ? answer.expires_in : DEFAULT_LIFETIME_S;
    await this.record(request, principal, subject.jti, scopes, lifetime);
    return {
      key: need.key,
      credential: { headers: { authorization: `Bearer ${token}` }, reference: `exchange:${subject.jti}` },
      renewAt: now + Math.max(0, lifetime) * 1000 * RENEW_SHARE,
    };
  }

  /** The exchange failed: a warning with the code only, and an error for the client that names the server. */
  private failed(request: CredentialRequest, error: unknown): GatewayError {
    const code = failureCode(error);
    const server = request.server.name;
    this.deps.log.warn({ server, code }, 'the token exchange at the upstream authorization server failed');
    return new GatewayError('credential_missing', `upstream server "${server}" needs a token exchange, which its authorization server did not grant (${code})`, { detail: `token exchange failed: ${code}` });
  }

  /** `credential.issued`, durable before the token is used: an issue that cannot be recorded fails closed. */
  private async record(request: CredentialRequest, principal: Principal, jti: string, scopes: string[], lifetime: number): Promise<void> {
    if (this.deps.audit === undefined) return;
    try {
      await this.deps.audit.record({
        type: 'credential.issued',
        actor: 'mandate',
        server: request.server.name,
        outcome: 'success',
        data: { kind: 'token-exchange', user: principal.user, client: principal.clientId, subject_jti: jti, scope: scopes.join(' '), expires_in: lifetime },
      });
    } catch (error) {
      throw new GatewayError('audit_unavailable', 'the audit log is unavailable: no upstream credential was issued', { detail: String(error), cause: error });
    }
  }
}
