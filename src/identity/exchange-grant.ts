/**
 * Delegation: the token exchange grant (RFC 8693) at the token endpoint,
 * `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`.
 *
 * A confidential client that holds a user's access token (`subject_token`)
 * exchanges it for an access token for one MCP server behind Mandate
 * (`resource`, exactly one) that is never wider than what it holds:
 *   - the subject token is one of ours: signed, unexpired, not revoked, and a
 *     user's (a machine token has no user to act for: invalid_grant);
 *   - the user exists and is enabled;
 *   - the requesting client may act for the user: `identity.delegation.allow`
 *     names it for the user, one of the user's groups or "*", or the subject
 *     token's `may_act` names it (invalid_grant otherwise);
 *   - every requested scope is covered by the subject's scopes for that
 *     server (`mcp:NAME` covers `mcp:NAME:tool:T`); without `scope`, all of
 *     them. The subject's scopes for its own server are its `scope` claim;
 *     for another server, a first exchange (no `act` yet) may use what the
 *     user consented to for that server in the same grant (`gid`): the client
 *     the user authorized could refresh into that token anyway. A chained
 *     token has only its own `scope` claim. Anything else: invalid_scope;
 *   - the policy set in force lets the user use the target server at all
 *     (its tools listed, or one of the requested tools called; src/app.ts
 *     asks): invalid_target otherwise, and with no set in force;
 *   - the issued token never outlives the subject token;
 *   - its `act` claim names the requesting client, with the subject's own
 *     `act` nested inside (RFC 8693 §4.1, the current actor outermost); more
 *     than `identity.delegation.maxChainDepth` actors: invalid_grant.
 * The issued token is a JWT for that server like any other (`sub` the user,
 * `client_id` the exchanging client, `gid` the subject's grant, so revoking
 * the grant revokes it too), with no refresh token. What was decided is left
 * on `ctx.state.exchange` for the audit record (steps.ts, `token.exchanged`).
 * `actor_token` is accepted and not read: the actor is always the
 * authenticated client.
 */
import { actorChain, readTaskClaim, type TaskClaim } from './delegated.ts';
import { decodeJwt } from 'jose';
import { errors, type KoaContextWithOIDC, type ResourceServer } from 'oidc-provider';
import type { DelegationConfig } from '../config/identity-schema.ts';
import type { ResolvedServer } from '../config/load.ts';
import type { TaskRecord } from '../store/tasks.ts';
import type { Store } from '../store/types.ts';
import { pinnedLifetime, tokenFacts, type RevocationList } from './revocations.ts';
import { isServerScope, scopeCovered, scopeWords, serverForResource, serverScope, type Servers } from './scopes.ts';
import type { TokenVerifier } from './verify.ts';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const SUBJECT_TOKEN_TYPES = new Set([ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE]);

/** The parameters the grant reads (besides grant_type and client authentication); `resource` may not repeat. */
export const EXCHANGE_PARAMETERS: ReadonlySet<string> = new Set([
  'subject_token',
  'subject_token_type',
  'actor_token',
  'actor_token_type',
  'requested_token_type',
  'resource',
  'audience',
  'scope',
  'task',
]);

/** An `act` claim: the current actor, and inside it the actor before (RFC 8693 §4.1). */
export interface ActClaim {
  sub: string;
  act?: ActClaim;
}

/** What an exchange decided, for its audit record; present as soon as the subject token checked out. */
export interface ExchangeNotes {
  /** The user the tokens act for. */
  user: string;
  /** The exchanging client. */
  clientId: string;
  /** The client the subject token was issued to. */
  subjectClientId: string | null;
  subjectJti: string | null;
  /** The target server's name, once known. */
  server: string | null;
  /** The actors of the issued token, outermost (the exchanging client) first. */
  chain: string[];
  /** Set once issued. */
  issued?: { jti: string; scope: string; exp: number };
  /** The task the issued token is bound to. */
  task?: string;
}

export interface ExchangeDeps {
  delegation: DelegationConfig;
  accessTokenTtl: number;
  store: Store;
  servers: Servers;
  verifier: TokenVerifier;
  revocations: RevocationList;
  /** The resource server description of an MCP server's tokens (provider.ts), with these scopes and this lifetime. */
  describe(server: ResolvedServer, scope: string, ttl: number): ResourceServer;
  /**
   * Whether policy lets the user, through this client, use the target
   * server at all (src/app.ts asks the policy set in force); null when it
   * does, else why not. Absent: not asked.
   */
  policyRefusal?: (ask: { user: string; groups: readonly string[]; clientId: string; server: string; scopes: readonly string[] }) => Promise<string | null>;
}

/** The `act` claim each issued token carries, for provider.ts's extraTokenClaims. */
const actClaims = new WeakMap<object, ActClaim>();

/** The `act` claim an access token was issued with by this grant, or undefined. */
export function actOf(token: object): ActClaim | undefined {
  return actClaims.get(token);
}

/** The `task` claim each task-bound token carries, for provider.ts's extraTokenClaims. */
const taskClaims = new WeakMap<object, TaskClaim>();

/** The `task` claim an access token was issued with by this grant, or undefined. */
export function taskOf(token: object): TaskClaim | undefined {
  return taskClaims.get(token);
}


/** Rebuilds an `act` claim from a chain (outermost first), keeping only `sub` at each level. */
function actFromChain(chain: readonly string[]): ActClaim {
  const [first, ...rest] = chain;
  return rest.length === 0 ? { sub: first! } : { sub: first!, act: actFromChain(rest) };
}

/** Whether `allow` lets `clientId` act for this user (by name, a group, or "*"). */
export function delegationAllowed(allow: DelegationConfig['allow'], clientId: string, user: string, groups: readonly string[]): boolean {
  const names = new Set(['*', `user:${user}`, ...groups.map((group) => `group:${group}`)]);
  return allow.some((rule) => rule.actor === clientId && rule.for.some((subject) => names.has(subject)));
}

/** Whether the subject token's `may_act` claim names this client (`client_id` or `sub`). */
function mayActNames(mayAct: unknown, clientId: string): boolean {
  if (mayAct === null || typeof mayAct !== 'object') return false;
  const { client_id: named, sub } = mayAct as Record<string, unknown>;
  return named === clientId || sub === clientId;
}

/**
 * The scopes the subject holds for `server`: those of its `scope` claim, and
 * for a first exchange (no `act`) to another server than its own, those the
 * user consented to there in the same grant.
 */
async function heldScopes(ctx: KoaContextWithOIDC, claims: Record<string, unknown>, server: ResolvedServer, user: string): Promise<Set<string>> {
  const held = new Set(scopeWords(claims.scope).filter((scope) => isServerScope(server.name, scope)));
  const audience = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (claims.act !== undefined || audience.includes(server.endpoint) || typeof claims.gid !== 'string') return held;
  const grant = await ctx.oidc.provider.Grant.find(claims.gid);
  if (grant && grant.accountId === user) {
    for (const scope of scopeWords(grant.getResourceScope(server.endpoint))) if (isServerScope(server.name, scope)) held.add(scope);
  }
  return held;
}

/**
 * The task a token is to be bound to: it exists, is open and unexpired, is
 * the user's, is for this client when it names one, and covers this server.
 */
async function openTask(deps: ExchangeDeps, id: string, user: string, clientId: string, server: string): Promise<TaskRecord> {
  const task = await deps.store.tasks.get(id);
  if (task === null || task.user !== user) throw invalidGrant(`there is no task ${id} of user ${user}`);
  if (task.status !== 'open' || task.expiresAt <= Date.now()) throw invalidGrant(`task ${id} is ${task.status === 'open' ? 'expired' : task.status}`);
  if (task.clientId !== null && task.clientId !== clientId) throw invalidGrant(`task ${id} is for client ${task.clientId}`);
  if (task.server !== server) throw new errors.InvalidTarget(`task ${id} covers server ${task.server} only`);
  return task;
}

/** The held scopes a task allows: its tools' scopes (all of them when it names none), as far as held. */
function withinTask(held: Set<string>, server: string, task: TaskRecord | null): Set<string> {
  if (task === null || task.tools.length === 0) return held;
  return new Set(task.tools.map((tool) => `mcp:${server}:tool:${tool}`).filter((scope) => scopeCovered(held, server, scope)));
}

/** invalid_grant saying why (the library's own InvalidGrant hides its detail): the caller is an authenticated client asking about its own request. */
const invalidGrant = (description: string): Error => new errors.CustomOIDCProviderError('invalid_grant', description);

const text = (value: unknown): string | undefined => (typeof value === 'string' && value !== '' ? value : undefined);

/** The grant's handler, for `provider.registerGrantType(TOKEN_EXCHANGE, …, EXCHANGE_PARAMETERS)`. */
export function exchangeGrant(deps: ExchangeDeps): (ctx: KoaContextWithOIDC) => Promise<void> {
  return async (ctx) => {
    const { client } = ctx.oidc;
    const params = (ctx.oidc.params ?? {}) as Record<string, unknown>;
    if (!client) throw new errors.InvalidClient('the client is not authenticated');
    const clientId = client.clientId;
    // The actor named in the issued token and in the audit record must have proven who it is.
    if (client.clientAuthMethod === 'none') {
      throw new errors.UnauthorizedClient('token exchange needs a confidential client: the actor an exchanged token names must authenticate');
    }

    const subjectToken = text(params.subject_token);
    if (subjectToken === undefined) throw new errors.InvalidRequest('missing required parameter: subject_token');
    if (!SUBJECT_TOKEN_TYPES.has(String(params.subject_token_type))) {
      throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE} (or ${JWT_TOKEN_TYPE}): an access token of this server`);
    }
    if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest(`requested_token_type: only ${ACCESS_TOKEN_TYPE} is issued`);
    }
    if (params.audience !== undefined) throw new errors.InvalidTarget('audience is not supported: name the MCP server with resource, {issuer}/mcp/NAME');

    const claims = (await deps.verifier.claimsOf(subjectToken)) as Record<string, unknown> | null;
    if (claims === null) throw invalidGrant('the subject_token is not a valid, unexpired access token of this server');
    const revoked = deps.revocations.revokedBy(tokenFacts(claims));
    if (revoked !== null) throw invalidGrant(`the subject_token was revoked (${revoked})`);
    // A user's token comes from a grant (gid); a client credentials token has none.
    if (typeof claims.gid !== 'string' || typeof claims.sub !== 'string') {
      throw invalidGrant('the subject_token is a machine token (client credentials): only a user\'s token can be exchanged');
    }
    const user = claims.sub;
    const previous = actorChain(claims.act);
    // A task-bound subject stays bound to its task; a task asked for narrows to it (docs/tasks.md).
    const bound = readTaskClaim(claims.task);
    const askedTask = text(params.task);
    if (bound !== null && askedTask !== undefined && askedTask !== bound.id) throw invalidGrant(`the subject_token is bound to task ${bound.id}: its tokens stay within it`);
    const taskId = bound?.id ?? askedTask;
    // Narrowing one's own token to a task is not acting for anyone: no actor is added.
    const self = askedTask !== undefined && bound === null && clientId === claims.client_id && previous.length === 0;
    const chain = self ? [...previous] : [clientId, ...previous];
    const notes: ExchangeNotes = { user, clientId, subjectClientId: text(claims.client_id) ?? null, subjectJti: text(claims.jti) ?? null, server: null, chain };
    (ctx.state as Record<string, unknown>).exchange = notes;

    const resource = params.resource;
    if (typeof resource !== 'string') throw new errors.InvalidTarget('the resource parameter is required, once: name the MCP server, {issuer}/mcp/NAME');
    const server = serverForResource(deps.servers, resource);
    if (!server) throw new errors.InvalidTarget(`resource ${resource} is not an MCP server behind this gateway`);
    notes.server = server.name;

    const account = await deps.store.identity.getUser(user);
    if (!account || account.disabled) throw invalidGrant(`user ${user} is unknown or disabled`);
    if (!self && !delegationAllowed(deps.delegation.allow, clientId, user, account.groups) && !mayActNames(claims.may_act, clientId)) {
      throw invalidGrant(`client ${clientId} may not act for user ${user}`);
    }
    const task = taskId === undefined ? null : await openTask(deps, taskId, user, clientId, server.name);
    if (task !== null) notes.task = task.id;
    if (chain.length > deps.delegation.maxChainDepth) {
      throw invalidGrant(`the actor chain would be ${chain.length} deep; at most ${deps.delegation.maxChainDepth}`);
    }

    const held = withinTask(await heldScopes(ctx, claims, server, user), server.name, task);
    if (held.size === 0) throw new errors.InvalidScope(`the subject_token holds no scope for server ${server.name}${task !== null ? ` within task ${task.id}` : ''}`, serverScope(server.name));
    const requested = params.scope === undefined ? [...held] : scopeWords(params.scope);
    if (requested.length === 0) throw new errors.InvalidScope('scope is empty', '');
    const foreign = requested.find((scope) => !isServerScope(server.name, scope));
    if (foreign !== undefined) throw new errors.InvalidScope(`scope ${foreign} is not a scope of server ${server.name}`, foreign);
    const wider = requested.find((scope) => !scopeCovered(held, server.name, scope));
    if (wider !== undefined) throw new errors.InvalidScope(`scope ${wider} is wider than the subject_token${task !== null ? ` within task ${task.id}` : ''} allows on server ${server.name}`, wider);
    const scope = [...new Set(requested)].join(' ');
    // A server the user may not use under the policy set in force is not added by an exchange.
    const refusal = (await deps.policyRefusal?.({ user, groups: account.groups, clientId, server: server.name, scopes: scope.split(' ') })) ?? null;
    if (refusal !== null) throw new errors.InvalidTarget(`server ${server.name}: ${refusal}`);

    const now = Math.floor(Date.now() / 1000);
    const until = Math.min(typeof claims.exp === 'number' ? claims.exp : now, task !== null ? Math.floor(task.expiresAt / 1000) : Number.POSITIVE_INFINITY);
    const remaining = until - now;
    if (remaining <= 0) throw invalidGrant('the subject_token has expired');
    const ttl = Math.min(deps.accessTokenTtl, remaining);

    const token = new ctx.oidc.provider.AccessToken({
      accountId: user,
      client,
      grantId: claims.gid,
      gty: 'token_exchange',
      scope,
      expiresIn: ttl,
      ...pinnedLifetime(now, ttl),
      resourceServer: new ctx.oidc.provider.ResourceServer(server.endpoint, deps.describe(server, scope, ttl)),
    });
    if (chain.length > 0) actClaims.set(token, actFromChain(chain));
    if (task !== null) taskClaims.set(token, { id: task.id, purpose: task.purpose, ...(task.ticket !== null ? { ticket: task.ticket } : {}), tools: [...task.tools] });
    ctx.oidc.entity('AccessToken', token);
    const value = await token.save();
    const issued = decodeJwt(value);
    notes.issued = { jti: String(issued.jti), scope, exp: Number(issued.exp) };

    ctx.body = {
      access_token: value,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: token.expiration,
      scope,
    };
  };
}
