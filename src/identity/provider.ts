/**
 * The authorization server: oidc-provider, wired and constrained. Each
 * setting below narrows the library to what an MCP deployment needs:
 * authorization code with S256 PKCE, a `resource` naming exactly one
 * configured server (or, for users, the admin API), short JWT access tokens
 * bound to it, rotating refresh tokens, client credentials for machine
 * clients, token exchange for delegation (exchange-grant.ts), revocation,
 * introspection, controlled registration and Client ID Metadata Documents.
 */
import Provider, { errors, type Configuration, type KoaContextWithOIDC, type ResourceServer } from 'oidc-provider';
import type { Config } from '../config/load.ts';
import type { Store } from '../store/types.ts';
import { createAdapter, type AdapterHooks } from './adapter.ts';
import type { KeyMaterial } from './keys.ts';
import { SIGNING_ALG } from './keys.ts';
import { constantEquals, hashSecret, randomToken } from './secrets.ts';
import { ADMIN_SCOPE, adminResource, scopeWords, serverForResource, serverScope, toolScope, toolScopesIn, type Servers } from './scopes.ts';
import { guardedFetch } from './ssrf.ts';
import { hostMatches } from './hosts.ts';
import { interactionUrl, ROUTES } from './routes.ts';
import { classify } from './intake.ts';
import { errorPageHeaders, renderErrorPage } from './pages.ts';
import { loadExistingGrant, requestedResources } from './consent.ts';
import { inactiveClientReason } from './context.ts';
import { ISSUED_AT_MS, stampIssuedAt } from './revocations.ts';
import { ACCOUNT_CLIENT_ID, accountClient } from './account.ts';
import { actOf, EXCHANGE_PARAMETERS, exchangeGrant, taskOf, TOKEN_EXCHANGE, type ExchangeDeps } from './exchange-grant.ts';
import { ID_JAG_PARAMETERS, ID_JAG_PROFILE, idJagGrant, JWT_BEARER } from './id-jag-grant.ts';
import path from 'node:path';
import type { RevocationList } from './revocations.ts';
import { asksForTask, checkTaskRequest, claimOf, detailsParam, grantedTask, requestedTask, TASK_DETAIL } from './task-details.ts';
import type { TokenVerifier } from './verify.ts';

function isInteractive(metadata: Record<string, unknown>): boolean {
  try {
    return classify(metadata) === 'interactive';
  } catch {
    return false;
  }
}


export interface ProviderDeps {
  config: Config;
  store: Store;
  secret: Buffer;
  keys: KeyMaterial;
  hooks: AdapterHooks;
  /** The MCP servers a `resource` may name (the gateway's registry). */
  servers: Servers;
  /** What the token exchange grant checks subject tokens with; without it, the grant is not offered. */
  exchange?: { verifier: TokenVerifier; revocations: RevocationList; policyRefusal?: ExchangeDeps['policyRefusal'] };
}

const ASYMMETRIC = ['ES256', 'PS256', 'RS256', 'EdDSA', 'Ed25519'];

/** Resource server description for a `resource` value: one configured MCP server, or invalid_target. */
function resourceServer(config: Config, servers: Servers, ctx: KoaContextWithOIDC, resource: string): ResourceServer {
  // RFC 8707 at the token endpoint too: no falling back to the granted resource.
  if (ctx.oidc.route === 'token' && typeof ctx.oidc.params?.resource !== 'string') {
    throw new errors.InvalidTarget('the resource parameter is required: name the MCP server, {issuer}/mcp/NAME');
  }
  if (resource === adminResource(config.issuer)) return adminResourceServer(config, servers, ctx, resource);
  const server = serverForResource(servers, resource);
  if (!server) throw new errors.InvalidTarget(`resource ${resource} is not an MCP server behind this gateway`);
  defaultScope(config.issuer, servers, ctx);
  narrowToTask(config, server.name, ctx);
  const entities = ctx.oidc.entities as Record<string, { scope?: string } | undefined>;
  const granted = [ctx.oidc.params?.scope as string | undefined, entities.RefreshToken?.scope, entities.AuthorizationCode?.scope];
  const tools = new Set(granted.flatMap((scope) => toolScopesIn(server.name, scope)));
  return serverTokens(server.endpoint, [serverScope(server.name), ...tools].join(' '), config.identity.accessTokenTtl);
}

/**
 * An authorization request opening a task that names tools asks for those
 * tools' scopes only (docs/tasks.md "Opening a task from an authorization
 * request"): the requested scope is narrowed while the library resolves the
 * resource, so the consent page shows, and the grant holds, just those. A
 * task tool the requested scopes do not cover is invalid_authorization_details.
 */
function narrowToTask(config: Config, server: string, ctx: KoaContextWithOIDC): void {
  const params = ctx.oidc.params as { scope?: string; authorization_details?: unknown } | undefined;
  if (ctx.oidc.route !== 'authorization' || !params || !asksForTask(params)) return;
  const task = requestedTask(params, config.tasks);
  if (!task || task.tools.length === 0) return;
  const words = scopeWords(params.scope);
  const held = new Set(words);
  const wanted = task.tools.map((tool) => toolScope(server, tool));
  const uncovered = wanted.filter((scope) => !held.has(scope) && !held.has(serverScope(server)));
  if (uncovered.length > 0) throw new errors.InvalidAuthorizationDetails(`mandate:task: the requested scope does not cover ${uncovered.join(' ')}`);
  const own = (word: string): boolean => word === serverScope(server) || word.startsWith(`${serverScope(server)}:tool:`);
  params.scope = [...new Set([...words.filter((word) => !own(word)), ...wanted])].join(' ');
}

/**
 * A `mandate:task` authorization detail (RFC 9396), checked when an
 * authorization request carries it: only there, at most one, with exactly
 * one `resource` naming an MCP server, and well formed (task-details.ts).
 */
function validateTaskDetail(config: Config, servers: Servers, ctx: KoaContextWithOIDC, detail: Record<string, unknown>): void {
  if (ctx.oidc.route !== 'authorization') {
    throw new errors.InvalidAuthorizationDetails('mandate:task: a task is opened by an authorization request only');
  }
  const params = ctx.oidc.params as Record<string, unknown>;
  if (detailsParam(params.authorization_details).filter((entry) => entry.type === TASK_DETAIL).length > 1) {
    throw new errors.InvalidAuthorizationDetails('mandate:task: at most one task per authorization request');
  }
  const resources = requestedResources(params.resource);
  if (resources.length !== 1 || serverForResource(servers, resources[0]!) === undefined) {
    throw new errors.InvalidAuthorizationDetails('mandate:task: a task names exactly one resource, an MCP server behind this gateway ({issuer}/mcp/NAME)');
  }
  checkTaskRequest(detail, config.tasks);
}

/**
 * A token issued from the code (or a refresh token) of a grant that opened a
 * task: the task must still be open; the token lasts no longer than the task
 * and, when the task names tools, holds only those tools' scopes.
 */
async function boundToTask(store: Store, ctx: KoaContextWithOIDC, described: ResourceServer): Promise<ResourceServer> {
  if (ctx.oidc.route !== 'token') return described;
  const entities = ctx.oidc.entities as Record<string, { rar?: unknown } | undefined>;
  const detail = grantedTask(entities.AuthorizationCode?.rar) ?? grantedTask(entities.RefreshToken?.rar);
  if (detail === undefined) return described;
  const task = await store.tasks.get(detail.task_id);
  const now = Date.now();
  if (task === null || task.status !== 'open' || task.expiresAt <= now) {
    throw new errors.InvalidGrant(`task ${detail.task_id} is ${task === null ? 'unknown' : task.status === 'open' ? 'expired' : task.status}: its grant issues no more tokens`);
  }
  // The provider dates the token from the second it signs it, which may be the next one: a second's margin keeps `exp` within the task.
  const remaining = Math.floor(task.expiresAt / 1000) - Math.floor(now / 1000) - 1;
  if (remaining < 1) throw new errors.InvalidGrant(`task ${detail.task_id} is expired: its grant issues no more tokens`);
  const scope = task.tools.length > 0 ? task.tools.map((tool) => toolScope(task.server, tool)).join(' ') : described.scope;
  return serverTokens(described.audience as string, scope, Math.min(described.accessTokenTTL ?? remaining, remaining));
}

/** How every access token is made (an MCP server's, the admin API's): a signed JWT bound to its one audience, with these scopes and this lifetime. */
function serverTokens(audience: string, scope: string, ttl: number): ResourceServer {
  return { scope, audience, accessTokenTTL: ttl, accessTokenFormat: 'jwt', jwt: { sign: { alg: SIGNING_ALG } } };
}

/**
 * The admin API ({issuer}/admin/v1, src/admin/api.ts): one scope,
 * `mandate:admin`, and for users only. Roles are given to users and their
 * groups, so a machine client (client credentials) could never act there:
 * its request is refused here rather than issued a token nobody accepts.
 */
function adminResourceServer(config: Config, servers: Servers, ctx: KoaContextWithOIDC, resource: string): ResourceServer {
  if (ctx.oidc.route === 'token' && ctx.oidc.params?.grant_type === 'client_credentials') {
    throw new errors.InvalidTarget(`resource ${resource} is the admin API, for signed-in users only (authorization code): a machine client holds no admin role`);
  }
  defaultScope(config.issuer, servers, ctx);
  return serverTokens(resource, ADMIN_SCOPE, config.identity.accessTokenTtl);
}

/** Where a request without a scope gets the default: a new authorization, and a client credentials token. */
function takesDefaultScope(ctx: KoaContextWithOIDC): boolean {
  return ctx.oidc.route === 'authorization' || (ctx.oidc.route === 'token' && ctx.oidc.params?.grant_type === 'client_credentials');
}

/**
 * The documented default of RFC 6749 §3.3: a request that names MCP servers
 * (`resource`) but no scope asks for each server's scope, `mcp:NAME` (and
 * for the admin API, `mandate:admin`). It is set on the request's parameters
 * while the library resolves the resource (before it reads the scopes), so
 * the consent page shows it and the grant and the token hold it as if it had
 * been sent.
 */
function defaultScope(issuer: string, servers: Servers, ctx: KoaContextWithOIDC): void {
  const params = ctx.oidc.params as { scope?: string; resource?: unknown } | undefined;
  if (!params || params.scope || !takesDefaultScope(ctx)) return;
  const scopeOf = (resource: string): string | undefined => {
    if (resource === adminResource(issuer)) return ADMIN_SCOPE;
    const server = serverForResource(servers, resource);
    return server === undefined ? undefined : serverScope(server.name);
  };
  const named = requestedResources(params.resource).map(scopeOf);
  if (named.length === 0 || named.some((scope) => scope === undefined)) return;
  params.scope = [...new Set(named)].join(' ');
}

export function createProvider(deps: ProviderDeps): Provider {
  const { config, store, secret, keys, hooks, servers } = deps;
  const { identity } = config;
  const secureCookies = new URL(config.issuer).protocol === 'https:';
  // __Host- needs Path=/; the library scopes the resume cookie to its resume path, so that one is __Secure-.
  const cookieName = (name: string, prefix = '__Host-'): string => (secureCookies ? `${prefix}mandate-${name}` : `mandate-${name}`);
  const cookieOptions = { httpOnly: true, sameSite: 'lax' as const, signed: true, secure: secureCookies, path: '/' };

  const configuration: Configuration = {
    adapter: createAdapter(store, hooks, secret),
    // The account pages sign in through this server like any client (src/identity/account.ts).
    clients: [accountClient(config.issuer) as NonNullable<Configuration['clients']>[number]],
    jwks: { keys: keys.signing as NonNullable<Configuration['jwks']>['keys'] },
    cookies: {
      keys: keys.cookie,
      names: { session: cookieName('session'), interaction: cookieName('interaction'), resume: cookieName('resume', '__Secure-') },
      long: cookieOptions,
      short: cookieOptions,
    },
    routes: ROUTES,
    responseTypes: ['code'],
    pkce: { required: () => true },
    scopes: ['openid', 'offline_access'],
    claims: { openid: ['sub'], profile: ['name', 'groups'] },
    clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: SIGNING_ALG,
      authorization_details_types: [TASK_DETAIL],
    } as Configuration['clientDefaults'],
    enabledJWA: {
      clientAuthSigningAlgValues: ASYMMETRIC,
      idTokenSigningAlgValues: [SIGNING_ALG],
      requestObjectSigningAlgValues: ASYMMETRIC,
      userinfoSigningAlgValues: [SIGNING_ALG],
      introspectionSigningAlgValues: [SIGNING_ALG],
      authorizationSigningAlgValues: [SIGNING_ALG],
    } as Configuration['enabledJWA'],
    ttl: {
      // Each resource server says how long its tokens last (serverTokens): the configured lifetime, or less for a task's.
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? identity.accessTokenTtl,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? identity.accessTokenTtl,
      AuthorizationCode: identity.authorizationCodeTtl,
      RefreshToken: identity.refreshTokenTtl,
      Grant: identity.refreshTokenTtl,
      IdToken: identity.accessTokenTtl,
      Interaction: 600,
      Session: identity.sessionTtl,
    },
    rotateRefreshToken: true,
    revokeGrantPolicy: () => true,
    // A grant that opened a task gets no refresh token: its access tokens end with the task (docs/tasks.md).
    issueRefreshToken: (_ctx, client, code) => client.grantTypeAllowed('refresh_token') && grantedTask((code as { rar?: unknown } | undefined)?.rar) === undefined,
    expiresWithSession: () => false,
    loadExistingGrant: loadExistingGrant(store),
    allowOmittingSingleRegisteredRedirectUri: false,
    // Enterprise-managed authorization (id-jag-grant.ts) is discoverable once an IdP is configured.
    discovery: identity.enterprise.idps.length > 0 ? { authorization_grant_profiles_supported: [ID_JAG_PROFILE] } : {},
    extraTokenClaims: (_ctx, token) => {
      const grantId = (token as { grantId?: string }).grantId;
      // A token issued by token exchange names its actors, and a task-bound one its task (exchange-grant.ts).
      const act = actOf(token);
      // …and one issued from a grant that opened a task (task-details.ts), that task.
      const granted = grantedTask((token as { rar?: unknown }).rar);
      const task = taskOf(token) ?? (granted ? claimOf(granted) : undefined);
      if (!grantId && !act && !task) return undefined;
      return { ...(grantId ? { gid: grantId } : {}), ...(act ? { act } : {}), ...(task ? { task } : {}) };
    },
    formats: {
      customizers: {
        // The precise issue time, next to `iat` (whole seconds), read from the finished claims so the two agree.
        jwt: (_ctx, _token, jwt) => {
          const { iat } = jwt.payload;
          if (typeof iat === 'number') jwt.payload[ISSUED_AT_MS] = stampIssuedAt(iat);
        },
      },
    },
    findAccount: async (_ctx, sub) => {
      const user = await store.identity.getUser(sub);
      if (!user || user.disabled) return undefined;
      return { accountId: user.name, claims: () => ({ sub: user.name, name: user.name, groups: user.groups }) };
    },
    // Absolute, from the configured issuer: the browser is never sent to a host a request named.
    interactions: { url: (_ctx, interaction) => interactionUrl(config, interaction.uid) },
    renderError: (ctx, out) => {
      const shown = { ...(out as unknown as Record<string, string>) };
      const reason = inactiveClientReason();
      if (reason !== null && shown.error === 'invalid_client') shown.error_description = reason;
      ctx.set(errorPageHeaders());
      ctx.type = 'html';
      ctx.body = renderErrorPage(shown);
    },
    fetch: guardedFetch({ allowPrivate: identity.cimd.allowPrivateAddresses, timeoutMs: identity.cimd.timeoutMs }),
    fetchResponseBodyLimits: { 'client_id metadata document': identity.cimd.maxBytes },
    features: {
      devInteractions: { enabled: false },
      dPoP: { enabled: false },
      userinfo: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      claimsParameter: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Only confidential machine clients (resource servers) may introspect.
        allowedPolicy: async (_ctx, client) => {
          if (client.clientAuthMethod === 'none') return false;
          const record = await store.identity.getClient(client.clientId);
          return record?.class === 'machine';
        },
      },
      revocation: { enabled: true },
      registration: {
        enabled: identity.registration.mode !== 'closed',
        initialAccessToken: false,
        issueRegistrationAccessToken: false,
        idFactory: () => `mc_${randomToken(18)}`,
        secretFactory: () => randomToken(32),
      },
      registrationManagement: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx: KoaContextWithOIDC) => {
          // The account pages' own client asks only who the user is: no MCP server, no access token.
          if (ctx.oidc.client?.clientId === ACCOUNT_CLIENT_ID) return undefined;
          throw new errors.InvalidTarget('the resource parameter is required: name the MCP server, {issuer}/mcp/NAME');
        },
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => boundToTask(store, ctx, resourceServer(config, servers, ctx, resource)),
      },
      // Opening a task from an authorization request (docs/tasks.md): the one detail type, `mandate:task`.
      richAuthorizationRequests: {
        enabled: true,
        types: {
          [TASK_DETAIL]: { validate: (ctx: KoaContextWithOIDC, detail: Record<string, unknown>) => validateTaskDetail(config, servers, ctx, detail) },
        },
        // The code carries what the user allowed: the grant's task detail (consent-page.ts adds it with the opened task's id).
        authorizationDetailsForGrantSource: (ctx: KoaContextWithOIDC) => {
          const granted = grantedTask(ctx.oidc.grant?.rar);
          if (asksForTask(ctx.oidc.params as Record<string, unknown>) && granted === undefined) {
            throw new errors.AccessDenied('the task was not opened');
          }
          return granted === undefined ? [] : [granted];
        },
        // Tokens carry only what their code or refresh token carries (a token request cannot add details).
        authorizationDetailsForAccessToken: (_ctx: KoaContextWithOIDC, _token: unknown, source?: { rar?: unknown }) => {
          const granted = grantedTask(source?.rar);
          return granted === undefined ? [] : [granted];
        },
        authorizationDetailsForIntrospection: (_ctx: KoaContextWithOIDC, token: { rar?: unknown }) => token.rar,
        // The library's types for this feature tie it to openid4vci's; the shape above is what lib/shared/check_rar.js calls.
      } as never,
      clientIdMetadataDocument: {
        enabled: identity.cimd.enabled,
        ack: 'draft-02',
        allowFetch: (_ctx, clientId) => hostMatches(identity.cimd.allowedDomains, new URL(clientId).hostname),
        allowClient: async (_ctx, client) => {
          if (!hostMatches(identity.cimd.allowedDomains, new URL(client.clientId).hostname)) return false;
          // A metadata document describes an interactive client only: a user signs in and consents.
          if (!isInteractive(client.metadata() as Record<string, unknown>)) return false;
          return hooks.metadataClientSeen(client.clientId, client.metadata() as Record<string, unknown>);
        },
        cacheDuration: { min: identity.cimd.cacheMinSeconds, max: identity.cimd.cacheMaxSeconds },
      },
    } as Configuration['features'],
  };

  const provider = new Provider(config.issuer, configuration);
  if (deps.exchange) {
    const { verifier, revocations, policyRefusal } = deps.exchange;
    const handler = exchangeGrant({
      ...(policyRefusal !== undefined ? { policyRefusal } : {}),
      delegation: identity.delegation,
      accessTokenTtl: identity.accessTokenTtl,
      store,
      servers,
      verifier,
      revocations,
      describe: (server, scope, ttl) => serverTokens(server.endpoint, scope, ttl),
    });
    // Advertised in grant_types_supported; a client needs it among its registered grant_types.
    provider.registerGrantType(TOKEN_EXCHANGE, handler, EXCHANGE_PARAMETERS);
  }
  // Enterprise-managed authorization (ID-JAG); without identity.enterprise.idps every assertion is refused, saying so.
  const idJag = idJagGrant({
    idps: identity.enterprise.idps,
    issuer: config.issuer,
    baseDir: config.configPath ? path.dirname(config.configPath) : process.cwd(),
    accessTokenTtl: identity.accessTokenTtl,
    store,
    servers,
    describe: (server, scope, ttl) => serverTokens(server.endpoint, scope, ttl),
  });
  provider.registerGrantType(JWT_BEARER, idJag, ID_JAG_PARAMETERS);
  // Client secrets are kept as hashes: compare the hash of what was presented.
  const ClientClass = provider.Client as unknown as { prototype: { clientSecret?: string; compareClientSecret(actual: string): Promise<boolean> | boolean } };
  ClientClass.prototype.compareClientSecret = function compareClientSecret(this: { clientSecret?: string }, actual: string) {
    return typeof this.clientSecret === 'string' && constantEquals(this.clientSecret, hashSecret(actual));
  };
  return provider;
}
