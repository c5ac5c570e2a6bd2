/**
 * `{issuer}/v0.1/...`: the catalog as a read-only sub-registry
 * (docs/catalog.md, "The sub-registry API"). Who may see what:
 *
 * - With `identity.requireToken` (the default) the caller presents an access
 *   token of this gateway, issued for any of its servers (verified, not
 *   expired, not revoked). A server is listed when the policy set could let
 *   this caller use it: the same decision as a `tools/list` on it, taken as
 *   if the token carried that server's scope, so that discovery shows what
 *   one could be granted, not only what this token already holds.
 * - Without tokens (development) every served entry is listed.
 *
 * Only entries the gateway serves right now are listed: approved, unexpired,
 * seal and signature intact. The answer is built in memory from what the
 * catalog runtime last read.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { decodeJwt, type JWTPayload } from 'jose';
import type { Identity } from '../identity/service.ts';
import { AuthError, bearerToken, type Principal } from '../identity/verify.ts';
import { decisionRequest } from '../policy/enforce.ts';
import { targetOf } from '../policy/request.ts';
import type { PolicyService } from '../policy/service.ts';
import type { ServerRegistry } from '../gateway/registry.ts';
import { GatewayError } from '../gateway/errors.ts';
import { answerRegistryRequest, type ApprovedVersion } from './registry-api.ts';
import type { CatalogRuntime } from './runtime.ts';

export interface RegistryHttpDeps {
  runtime: CatalogRuntime;
  registry: ServerRegistry;
  identity: Identity;
  policy: PolicyService;
  requireToken: () => boolean;
}

/** The caller, from a bearer token issued for any server of this gateway; AuthError when there is none or it is refused. */
async function callerOf(deps: RegistryHttpDeps, req: IncomingMessage): Promise<Principal> {
  const header = req.headers.authorization;
  const token = bearerToken(header);
  if (token === null) throw new AuthError('missing', 'an access token of this gateway is required');
  // Only to find which server's check applies: authenticate() below verifies the token in full (and caches it).
  let claims: JWTPayload | null;
  try {
    claims = decodeJwt(token);
  } catch {
    claims = null;
  }
  const audience = Array.isArray(claims?.aud) ? claims?.aud[0] : claims?.aud;
  const server = typeof audience === 'string' ? deps.registry.forEndpoint(audience) : undefined;
  if (server === undefined) throw new AuthError('invalid', 'the token is not valid here');
  const principal = await deps.identity.authenticate(header, server);
  if (principal === null) throw new AuthError('missing', 'an access token of this gateway is required');
  return principal;
}

/** Whether the policy could let this caller use the server (as a tools/list with the server's scope). */
function visible(policy: PolicyService, principal: Principal, route: string, address: string): boolean {
  const engine = policy.engine;
  if (engine === null) return false;
  const target = targetOf(route, 'tools/list', undefined);
  if (target === null) return false;
  const asked = decisionRequest({ ...principal, scopes: [`mcp:${route}`] }, route, 'tools/list', target, address);
  return engine.couldAllow(asked);
}

export async function handleRegistryRequest(deps: RegistryHttpDeps, req: IncomingMessage, res: ServerResponse, pathAndQuery: string, address: string): Promise<void> {
  let versions: readonly ApprovedVersion[] = deps.runtime.servedVersions();
  if (deps.requireToken()) {
    let principal: Principal;
    try {
      principal = await callerOf(deps, req);
    } catch (error) {
      if (!(error instanceof AuthError)) throw error;
      throw new GatewayError(error.reason === 'missing' ? 'token_missing' : 'token_invalid', error.message, { headers: { 'www-authenticate': 'Bearer' } });
    }
    const seen = new Map<string, boolean>();
    versions = versions.filter((version) => {
      const route = version.governance.route;
      if (!seen.has(route)) seen.set(route, visible(deps.policy, principal, route, address));
      return seen.get(route) === true;
    });
  }
  const answer = answerRegistryRequest(req.method ?? 'GET', pathAndQuery, versions, new Date());
  res.writeHead(answer.status, answer.headers);
  res.end(answer.body === null || req.method === 'HEAD' ? undefined : JSON.stringify(answer.body));
}
