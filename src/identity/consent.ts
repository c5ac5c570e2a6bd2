/**
 * Remembered consent. A user's consent is kept in the store per client and
 * resource (one MCP server): the scopes allowed there, plus `openid` when the
 * client asked for it. An authorization request whose scopes a stored consent
 * covers gets a fresh Grant with exactly the requested scopes, and no consent
 * page; anything else (a new client, a wider request, a disabled user) gets
 * the consent page.
 */
import type { Grant, KoaContextWithOIDC } from 'oidc-provider';
import type { ConsentRecord, Store } from '../store/types.ts';
import { ACCOUNT_CLIENT_ID } from './account.ts';
import { asksForTask } from './task-details.ts';

const TOOL_SCOPE = /^mcp:([^:]+):tool:.+$/;

/**
 * True if the consent covers every requested scope. A server-wide scope
 * (mcp:NAME) also covers each of that server's tool scopes (mcp:NAME:tool:T).
 * Nothing requested, or no consent, covers nothing.
 */
export function consentCovers(consent: Pick<ConsentRecord, 'scopes'> | null | undefined, requested: Iterable<string>): boolean {
  if (!consent) return false;
  const granted = new Set(consent.scopes);
  let any = false;
  for (const scope of requested) {
    any = true;
    if (granted.has(scope)) continue;
    const tool = TOOL_SCOPE.exec(scope);
    if (tool && granted.has(`mcp:${tool[1]}`)) continue;
    return false;
  }
  return any;
}

/** The resource parameter as a list. */
export function requestedResources(resource: unknown): string[] {
  if (typeof resource === 'string') return [resource];
  if (Array.isArray(resource)) return resource.filter((value): value is string => typeof value === 'string');
  return [];
}

/** Requested scopes that belong to a resource server (its scope set), in request order. */
export function scopesForResource(requested: Iterable<string>, available: ReadonlySet<string>): string[] {
  return [...requested].filter((scope) => available.has(scope));
}

/**
 * oidc-provider's `loadExistingGrant`: the grant this authorization request
 * may proceed with, or undefined to ask the user.
 *  - Right after the consent page, the grant it saved (result.consent.grantId).
 *  - Otherwise a new Grant built from stored consent, if it covers the request
 *    (and the request does not say prompt=consent, nor opens a task).
 * A disabled or unknown user never reuses anything.
 */
export function loadExistingGrant(store: Store): (ctx: KoaContextWithOIDC) => Promise<Grant | undefined> {
  return async (ctx) => {
    const { oidc } = ctx;
    const accountId = oidc.session?.accountId;
    const clientId = oidc.client?.clientId;
    if (!accountId || !clientId) return undefined;

    const user = await store.identity.getUser(accountId);
    if (!user || user.disabled) return undefined;

    // The account pages' built-in client learns only the user's name: nothing to consent to.
    if (clientId === ACCOUNT_CLIENT_ID) {
      const grant = new oidc.provider.Grant({ accountId, clientId });
      grant.addOIDCScope('openid');
      await grant.save();
      return grant;
    }

    const consentedGrantId = oidc.result?.consent?.grantId;
    if (typeof consentedGrantId === 'string' && consentedGrantId) {
      const grant = await oidc.provider.Grant.find(consentedGrantId);
      return grant && grant.accountId === accountId && grant.clientId === clientId ? grant : undefined;
    }

    // A request opening a task (a mandate:task authorization detail) is shown to the user every time.
    if (asksForTask(oidc.params as Record<string, unknown> | undefined)) return undefined;

    // prompt=consent asks the user whatever was remembered: build nothing that would go unused.
    if (oidc.prompts?.has('consent')) return undefined;

    const resources = requestedResources(oidc.params?.resource);
    const servers = oidc.resourceServers ?? {};
    if (resources.length === 0) return undefined;
    const oidcScopes = [...oidc.requestParamOIDCScopes];
    const plan: Array<{ resource: string; scopes: string[] }> = [];
    for (const resource of resources) {
      const server = servers[resource];
      if (!server) return undefined;
      const scopes = scopesForResource(oidc.requestParamScopes, server.scopes);
      if (scopes.length === 0) return undefined;
      const consent = await store.identity.getConsent(accountId, clientId, resource);
      if (!consentCovers(consent, [...scopes, ...oidcScopes])) return undefined;
      plan.push({ resource, scopes });
    }

    const grant = new oidc.provider.Grant({ accountId, clientId });
    for (const { resource, scopes } of plan) grant.addResourceScope(resource, scopes.join(' '));
    if (oidcScopes.length > 0) grant.addOIDCScope(oidcScopes.join(' '));
    await grant.save();
    return grant;
  };
}
