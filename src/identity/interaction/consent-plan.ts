/**
 * What the consent page shows and exactly what Allow grants, worked out from
 * the pending interaction and the configuration alone (no I/O).
 */
import type { Config, ResolvedServer } from '../../config/load.ts';
import { requestedResources } from '../consent.ts';
import { ADMIN_SCOPE, adminResource, scopeWords, serverForResource, serverScope, toolScopesIn, type Servers } from '../scopes.ts';
import { EXPIRED, PageError } from './forms.ts';
import type { Interaction } from './step.ts';

export interface ConsentPlanServer {
  server: ResolvedServer;
  resource: string;
  scopes: string[];
}

/** What the consent page shows, and exactly what Allow grants. */
export interface ConsentPlan {
  accountId: string;
  clientId: string;
  redirectUri: string;
  servers: ConsentPlanServer[];
  /** The admin API ({issuer}/admin/v1) with `mandate:admin`, when asked for. */
  admin: { resource: string; scopes: string[] } | null;
  oidcScopes: string[];
}

/** What oidc-provider reports missing from the grant so far. */
export interface ConsentDetails {
  missingOIDCScope?: string[];
  missingResourceScopes?: Record<string, string[]>;
  missingOIDCClaims?: string[];
}

const OIDC_SCOPES = new Set(['openid', 'offline_access']);

export function consentDetails(interaction: Pick<Interaction, 'prompt'>): ConsentDetails {
  return (interaction.prompt.details ?? {}) as ConsentDetails;
}

/**
 * Every scope the request asks for, per MCP server (requested resource), plus
 * whatever oidc-provider reports missing: the page shows all of it and Allow
 * grants all of it, so the user sees the whole of what the client will hold.
 * With the issuer, the admin API's resource is read too (its one scope).
 */
export function planConsent(known: Servers, interaction: Pick<Interaction, 'params' | 'prompt' | 'session'>, issuer?: string): ConsentPlan {
  const { params } = interaction;
  const accountId = interaction.session?.accountId;
  if (!accountId) throw new PageError(400, 'invalid_request', EXPIRED);
  const clientId = typeof params.client_id === 'string' ? params.client_id : '';
  const redirectUri = typeof params.redirect_uri === 'string' ? params.redirect_uri : '';
  if (!clientId || !redirectUri) throw new PageError(400, 'invalid_request', EXPIRED);
  const scope = typeof params.scope === 'string' ? params.scope : '';
  const requested = [...new Set(scopeWords(scope))];
  const details = consentDetails(interaction);
  const missing = details.missingResourceScopes ?? {};

  const resources = [...new Set([...requestedResources(params.resource), ...Object.keys(missing)])];
  const servers: ConsentPlanServer[] = [];
  let admin: ConsentPlan['admin'] = null;
  for (const resource of resources) {
    if (issuer !== undefined && resource === adminResource(issuer)) {
      const scopes = [...requested, ...(missing[resource] ?? [])].includes(ADMIN_SCOPE) ? [ADMIN_SCOPE] : [];
      if (scopes.length > 0) admin = { resource, scopes };
      continue;
    }
    const server = serverForResource(known, resource);
    if (!server) throw new PageError(400, 'invalid_target', `${resource} is not an MCP server behind this gateway`);
    const own = new Set([serverScope(server.name), ...toolScopesIn(server.name, scope)]);
    const scopes = [...new Set([...requested.filter((word) => own.has(word)), ...(missing[resource] ?? [])])];
    if (scopes.length > 0) servers.push({ server, resource, scopes });
  }
  const oidcScopes = [...new Set([...requested.filter((word) => OIDC_SCOPES.has(word)), ...(details.missingOIDCScope ?? [])])];
  return { accountId, clientId, redirectUri, servers, admin, oidcScopes };
}

/** Nothing for an MCP server or the admin API, and no OpenID scope: there is nothing to ask. */
export const asksNothing = (plan: ConsentPlan): boolean => plan.servers.length === 0 && plan.admin === null && plan.oidcScopes.length === 0;
