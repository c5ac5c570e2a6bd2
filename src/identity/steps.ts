/**
 * Mandate's steps around the authorization server's endpoints (koa
 * middleware, outermost first):
 *   auditGate  token and registration requests are refused before anything
 *              is issued if the audit log cannot be written
 *   jwtTokens  revocation and introspection of our JWT access tokens (the
 *              library only handles opaque ones), after it has authenticated
 *              the client
 *   evidence   every issued, refreshed, exchanged, reused or revoked token and
 *              every registration becomes an audit event before the answer leaves
 *              (an ID-JAG's with the IdP, its assertion's jti and the IdP's subject);
 *              if that record fails, the answer becomes a server error
 *   errors     an IntakeError becomes its RFC 7591 answer
 *   discovery  the metadata lists each MCP server's scope, and the admin API's,
 *              among scopes_supported
 */
import type { Context, Next } from 'koa';
import { wireAnswer } from '../http/errors.ts';
import { OAuthRefusal } from './errors.ts';
import type { AuditLog } from '../audit/log.ts';
import type { IdentityEvent } from '../audit/events.ts';
import type { Config } from '../config/load.ts';
import type { Store } from '../store/types.ts';
import { inactiveClientReason, requestNotes } from './context.ts';
import { IntakeError } from './intake.ts';
import { isRoute, routeKey, ROUTES } from './routes.ts';
import { KEEP_MS, tokenFacts, type RevocationList } from './revocations.ts';
import { ADMIN_SCOPE, serverForResource, serverScopes, type Servers } from './scopes.ts';
import type { TokenVerifier } from './verify.ts';
import { TOKEN_EXCHANGE, type ExchangeNotes } from './exchange-grant.ts';
import type { IdJagNotes } from './id-jag-grant.ts';

type Step = (ctx: Context, next: Next) => Promise<void>;

export interface StepDeps {
  config: Config;
  store: Store;
  audit: AuditLog;
  revocations: RevocationList;
  /** Checks our access tokens (reloading keys another node added since start). */
  verifier: TokenVerifier;
  servers: Servers;
}

/** An OAuth error answer on the koa context, through the one wire mapping (src/http/errors.ts). */
function oauthError(ctx: Context, refusal: OAuthRefusal): void {
  const answer = wireAnswer(refusal);
  ctx.status = answer.status;
  for (const [name, value] of Object.entries(answer.headers)) ctx.set(name, value);
  ctx.body = answer.body;
}

export function errorsStep(): Step {
  return async (ctx, next) => {
    try {
      await next();
    } catch (error) {
      if (!(error instanceof IntakeError)) throw error;
      oauthError(ctx, error);
      const notes = requestNotes.getStore();
      (ctx.state as Record<string, unknown>).refused = { error: error.error, description: error.message, address: notes?.address ?? null };
    }
    const reason = inactiveClientReason();
    const body = ctx.body as Record<string, unknown> | null;
    if (reason !== null && body && typeof body === 'object' && body.error === 'invalid_client') body.error_description = reason;
    // An internal error's answer names it as the log does (the server_error handler in service.ts).
    const id = (ctx.state as Record<string, unknown>).correlationId;
    if (typeof id === 'string' && body && typeof body === 'object' && !Buffer.isBuffer(body)) body.correlation_id = id;
  };
}

const AUDITED = new Set<string>([ROUTES.token, ROUTES.registration, ROUTES.revocation].map((route) => route.toLowerCase()));

export function auditGateStep(audit: AuditLog): Step {
  return async (ctx, next) => {
    if (ctx.method === 'POST' && AUDITED.has(routeKey(ctx.path))) {
      try {
        await audit.ensureWritable();
      } catch {
        oauthError(ctx, new OAuthRefusal(503, 'temporarily_unavailable', 'the audit log cannot be written; nothing was issued', { 'retry-after': '5' }));
        return;
      }
    }
    await next();
  };
}

/** RFC 7009: only the client a token was issued to may revoke it; anything else is still 200 (nothing to say). */
async function revokeJwt(deps: StepDeps, ctx: Context, clientId: string, token: string): Promise<void> {
  ctx.status = 200;
  ctx.body = '';
  const claims = await deps.verifier.claimsOf(token);
  if (!claims || claims.client_id !== clientId || typeof claims.jti !== 'string') return;
  await deps.revocations.revoke('jti', claims.jti, Date.now() + KEEP_MS.jti);
  (ctx.state as Record<string, unknown>).revokedJwt = { jti: claims.jti, sub: claims.sub, aud: claims.aud };
}

/** RFC 7662 for a resource server (a confidential machine client): active only if valid and not revoked. */
async function introspectJwt(deps: StepDeps, ctx: Context, client: { clientId: string; clientAuthMethod: string }, token: string): Promise<void> {
  ctx.status = 200;
  ctx.set('cache-control', 'no-store');
  const caller = client.clientAuthMethod === 'none' ? null : await deps.store.identity.getClient(client.clientId);
  const claims = caller?.class === 'machine' ? await deps.verifier.claimsOf(token) : null;
  const revoked = claims !== null && deps.revocations.revokedBy(tokenFacts(claims)) !== null;
  if (!claims || revoked) {
    ctx.body = { active: false };
    return;
  }
  const { iss, sub, aud, exp, iat, jti, scope, client_id: tokenClient } = claims;
  ctx.body = { active: true, token_type: 'Bearer', iss, sub, aud, exp, iat, jti, scope, client_id: tokenClient };
}

/**
 * Revocation (RFC 7009) and introspection (RFC 7662) of our JWT access
 * tokens: the library refuses structured tokens after it has authenticated
 * the client; take over there.
 */
export function jwtTokensStep(deps: StepDeps): Step {
  return async (ctx, next) => {
    await next();
    if ((!isRoute(ctx.path, ROUTES.revocation) && !isRoute(ctx.path, ROUTES.introspection)) || ctx.status !== 400) return;
    const body = ctx.body as { error?: string } | null;
    const client = ctx.oidc?.client;
    const token = ctx.oidc?.params?.token;
    if (body?.error !== 'unsupported_token_type' || !client || typeof token !== 'string') return;
    if (isRoute(ctx.path, ROUTES.revocation)) await revokeJwt(deps, ctx, client.clientId, token);
    else await introspectJwt(deps, ctx, client, token);
  };
}

function serverOf(servers: Servers, resource: unknown): string | null {
  const value = Array.isArray(resource) ? resource[0] : resource;
  return typeof value === 'string' ? (serverForResource(servers, value)?.name ?? null) : null;
}

interface TokenLike {
  jti?: string;
  accountId?: string;
  scope?: string;
  grantId?: string;
  resource?: string | string[];
  aud?: string | string[];
  consumed?: unknown;
  expiration?: number;
}

/** The audit event for what just happened at an endpoint, or null. */
function evidence(deps: StepDeps, ctx: Context): IdentityEvent | null {
  const oidc = ctx.oidc;
  const notes = requestNotes.getStore();
  const address = notes?.address ?? ctx.ip;
  const clientId = oidc?.client?.clientId ?? (typeof oidc?.params?.client_id === 'string' ? oidc.params.client_id : null);
  const state = ctx.state as Record<string, unknown>;
  if (isRoute(ctx.path, ROUTES.registration)) {
    const refused = state.refused as { error: string; description: string } | undefined;
    if (ctx.status === 201) {
      const body = ctx.body as Record<string, unknown>;
      const registration = notes?.registration;
      return {
        type: 'client.registered',
        actor: registration?.owner ?? null,
        outcome: 'success',
        reason: `registration mode ${registration?.via ?? 'unknown'}`,
        data: { client_id: String(body.client_id), status: registration?.status ?? 'pending', class: registration?.class ?? 'interactive', address, client_name: typeof body.client_name === 'string' ? body.client_name.slice(0, 200) : null },
      };
    }
    const error = refused?.error ?? (ctx.body as { error?: string } | null)?.error ?? 'error';
    return { type: 'client.registered', outcome: 'denied', reason: refused?.description ?? error, data: { address, error } };
  }
  if (isRoute(ctx.path, ROUTES.token) && ctx.method === 'POST') {
    const grantType = typeof oidc?.params?.grant_type === 'string' ? oidc.params.grant_type : 'unknown';
    if (grantType === TOKEN_EXCHANGE) return exchangeEvidence(ctx, clientId, address);
    const entities = (oidc?.entities ?? {}) as Record<string, TokenLike | undefined>;
    const issued = entities.AccessToken ?? entities.ClientCredentials;
    // An ID-JAG (id-jag-grant.ts): the IdP's decision next to Mandate's.
    const idJag = state.idJag as IdJagNotes | undefined;
    const enterprise: Record<string, string | null> = idJag ? { idp: idJag.idp, assertion_jti: idJag.assertionJti, idp_subject: idJag.idpSubject } : {};
    if (ctx.status === 200 && issued) {
      const aud = issued.aud ?? issued.resource;
      return {
        type: grantType === 'refresh_token' ? 'token.refreshed' : 'token.issued',
        actor: issued.accountId ?? clientId,
        server: serverOf(deps.servers, aud),
        outcome: 'success',
        data: { client_id: clientId, grant_type: grantType, jti: issued.jti ?? null, scope: issued.scope ?? null, grant: issued.grantId ?? null, address, ...enterprise },
      };
    }
    const body = ctx.body as { error?: string; error_description?: string } | null;
    const refresh = entities.RefreshToken;
    if (grantType === 'refresh_token' && refresh?.consumed) {
      return {
        type: 'token.reuse_detected',
        actor: refresh.accountId ?? null,
        outcome: 'denied',
        reason: 'a rotated refresh token was used again; the whole grant is revoked',
        data: { client_id: clientId, grant: refresh.grantId ?? null, address },
      };
    }
    return {
      type: 'token.issued',
      actor: idJag?.user ?? clientId,
      ...(idJag?.server ? { server: idJag.server } : {}),
      outcome: 'denied',
      reason: body?.error_description ?? body?.error ?? 'refused',
      data: { client_id: clientId, grant_type: grantType, error: body?.error ?? null, address, ...enterprise },
    };
  }
  if (isRoute(ctx.path, ROUTES.revocation) && ctx.status === 200) {
    const jwt = state.revokedJwt as { jti: string; sub?: string } | undefined;
    const entities = (oidc?.entities ?? {}) as Record<string, TokenLike | undefined>;
    const opaque = entities.RefreshToken ?? entities.AccessToken ?? entities.ClientCredentials;
    if (!jwt && !opaque) return null;
    return {
      type: 'token.revoked',
      actor: clientId,
      outcome: 'success',
      reason: 'revoked by its client (RFC 7009)',
      data: jwt ? { kind: 'access_token', jti: jwt.jti, client_id: clientId } : { kind: entities.RefreshToken ? 'refresh_token' : 'access_token', grant: opaque?.grantId ?? null, client_id: clientId },
    };
  }
  return null;
}

/**
 * A token exchange (exchange-grant.ts), issued or refused: `token.exchanged`,
 * the user as actor, the target server, and the whole actor chain (client
 * ids, outermost first). Never a token: only jtis.
 */
function exchangeEvidence(ctx: Context, clientId: string | null, address: string): IdentityEvent {
  const notes = (ctx.state as Record<string, unknown>).exchange as ExchangeNotes | undefined;
  const known = {
    client_id: clientId,
    chain: notes?.chain ?? (clientId === null ? [] : [clientId]),
    subject_client_id: notes?.subjectClientId ?? null,
    subject_jti: notes?.subjectJti ?? null,
    address,
  };
  if (ctx.status === 200 && notes?.issued) {
    const { jti, scope, exp } = notes.issued;
    return { type: 'token.exchanged', actor: notes.user, server: notes.server, outcome: 'success', data: { ...known, scope, jti, exp } };
  }
  const body = ctx.body as { error?: string; error_description?: string } | null;
  return {
    type: 'token.exchanged',
    actor: notes?.user ?? clientId,
    server: notes?.server ?? null,
    outcome: 'denied',
    reason: body?.error_description ?? body?.error ?? 'refused',
    data: { ...known, error: body?.error ?? null },
  };
}

export function evidenceStep(deps: StepDeps): Step {
  return async (ctx, next) => {
    await next();
    if (ctx.method !== 'POST' || !AUDITED.has(routeKey(ctx.path))) return;
    const event = evidence(deps, ctx);
    if (!event) return;
    try {
      await deps.audit.record(event);
    } catch {
      // The exchange already happened (a code or refresh token is used up): the answer is withheld,
      // and a retry with the same code or token would read as reuse. The client must start again.
      if (ctx.status < 400) oauthError(ctx, new OAuthRefusal(503, 'temporarily_unavailable', 'the audit log cannot be written, so no token is delivered; start a new authorization once the service is back'));
      return;
    }
    if ((event.type === 'token.issued' || event.type === 'token.exchanged') && event.outcome === 'success' && typeof event.data?.client_id === 'string') {
      await deps.store.identity.touchClient(event.data.client_id, Date.now()).catch(() => undefined);
    }
  };
}


/**
 * Authorization server metadata: `scopes_supported` lists, besides the
 * library's own scopes, `mcp:NAME` for each MCP server, which is what a
 * client asks for (and what a request without a scope gets), and
 * `mandate:admin`, the admin API's.
 */
export function discoveryStep(servers: Servers): Step {
  return async (ctx, next) => {
    await next();
    const body = ctx.body as { scopes_supported?: unknown } | null;
    if (ctx.oidc?.route !== 'discovery' || ctx.status !== 200 || !body || typeof body !== 'object') return;
    const own = Array.isArray(body.scopes_supported) ? (body.scopes_supported as unknown[]) : [];
    body.scopes_supported = [...new Set([...own, ...serverScopes(servers), ADMIN_SCOPE])];
  };
}
