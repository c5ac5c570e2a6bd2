/**
 * The browser's three steps of a sign-in at the upstream OpenID provider
 * (`identity.login.oidc`), as interaction handlers; upstream-login.ts has the
 * protocol and the flow's sealed cookie.
 *
 *   POST UID/upstream          off to the provider, the flow sealed into this browser's cookie
 *   GET  callback/upstream     the provider's answer: checked and exchanged here
 *   GET  UID/upstream          back under the interaction: the user (provisioned on
 *                              first sign-in), login.succeeded, the interaction finishes
 *
 * A refusal from the protocol is logged, recorded as login.failed and shown
 * as an error page.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { IdentityEvent, JsonValue } from '../audit/events.ts';
import type { UpstreamOidcConfig } from '../config/identity-schema.ts';
import type { UserRecord } from '../store/types.ts';
import { EXPIRED, PageError } from './interaction/forms.ts';
import { interactionUrl } from './routes.ts';
import { addressOf, clientIdOf, clientView, finish, recordOrFail, requireLoginPrompt, seeOther, type InteractionDeps, type Step } from './interaction/step.ts';
import { UpstreamError, beginUpstream, clearFlowCookie, completeUpstream, flowCookie, readFlow, type ReturnFlow, type StartFlow } from './upstream-login.ts';

/** The audit data of a sign-in through the provider. */
function viaUpstream(deps: InteractionDeps, clientId: string | null, address: string): Record<string, JsonValue> {
  return { client_id: clientId, address, via: 'oidc', upstream: deps.config.identity.login.oidc?.issuer ?? null };
}

/** Runs a protocol step; an UpstreamError is logged (`what`), recorded as login.failed and becomes a PageError. */
async function refusingUpstream<T>(deps: InteractionDeps, req: IncomingMessage, clientId: string | null, what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (!(error instanceof UpstreamError)) throw error;
    deps.log?.warn({ upstream: deps.config.identity.login.oidc?.issuer, reason: error.reason, ...error.detail }, what);
    const failed: IdentityEvent = { type: 'login.failed', actor: null, outcome: 'failure', reason: error.reason, data: { ...viaUpstream(deps, clientId, addressOf(req)), ...error.detail } };
    await recordOrFail(deps.audit, [failed]);
    throw new PageError(error.status, error.error, error.message);
  }
}

/** The flow this browser carries at phase `p`, if any; its cookie is cleared whatever happens next (single use). */
function takeFlow<P extends 'start' | 'return'>(deps: InteractionDeps, req: IncomingMessage, res: ServerResponse, p: P): Extract<StartFlow | ReturnFlow, { p: P }> | null {
  const { issuer } = deps.config;
  const flow = readFlow(req, deps.csrfKey, issuer, p);
  res.setHeader('Set-Cookie', clearFlowCookie(issuer));
  res.setHeader('Cache-Control', 'no-store');
  return flow;
}

// ---------------------------------------------------------------------------
// POST UID/upstream

export async function startUpstream(step: Step): Promise<void> {
  const { deps, interaction, req, res, uid } = step;
  const oidc = deps.config.identity.login.oidc!;
  requireLoginPrompt(interaction);
  const clientId = clientIdOf(interaction);
  await clientView(deps.store, clientId);
  const hint = typeof interaction.params.login_hint === 'string' && interaction.params.login_hint.length <= 256 ? interaction.params.login_hint : undefined;
  const started = await refusingUpstream(deps, req, clientId, 'upstream sign-in could not start', () => beginUpstream(oidc, deps.config.issuer, uid, clientId, hint));
  seeOther(res, started.url, {
    'Set-Cookie': flowCookie(deps.csrfKey, deps.config.issuer, started.flow),
    'Cache-Control': 'no-store',
    'Referrer-Policy': 'no-referrer',
  });
}

// ---------------------------------------------------------------------------
// GET callback/upstream

export async function upstreamCallback(deps: InteractionDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const oidc = callbackConfig(deps, req);
  const query = queryOf(req);
  const flow = takeFlow(deps, req, res, 'start');
  res.setHeader('Referrer-Policy', 'no-referrer');
  const back = await refusingUpstream(deps, req, flow?.clientId ?? null, 'upstream sign-in failed', () => completeUpstream(oidc, deps.config.issuer, flow, query));
  seeOther(res, `${interactionUrl(deps.config, back.uid)}/upstream`, { 'Set-Cookie': flowCookie(deps.csrfKey, deps.config.issuer, back) });
}

/** The upstream configuration, if there is one (else 404); GET only: a HEAD must not spend the code. */
function callbackConfig(deps: InteractionDeps, req: IncomingMessage): UpstreamOidcConfig {
  const oidc = deps.config.identity.login.oidc;
  if (!oidc) throw new PageError(404, 'not_found', 'there is no such page');
  if (req.method !== 'GET') throw new PageError(405, 'invalid_request', 'use GET for this page', { Allow: 'GET' });
  return oidc;
}

function queryOf(req: IncomingMessage): URLSearchParams {
  const url = req.url ?? '';
  const at = url.indexOf('?');
  return new URLSearchParams(at < 0 ? '' : url.slice(at + 1));
}

// ---------------------------------------------------------------------------
// GET UID/upstream

export async function finishUpstream(step: Step): Promise<void> {
  const { deps, interaction, req, res, uid } = step;
  const flow = takeFlow(deps, req, res, 'return');
  const clientId = clientIdOf(interaction);
  if (!flow || flow.uid !== uid || flow.clientId !== clientId || interaction.prompt.name !== 'login') throw new PageError(400, 'invalid_request', EXPIRED);
  await clientView(deps.store, clientId);
  const data = viaUpstream(deps, clientId, addressOf(req));
  const user = await provisionedUser(deps, flow);
  await refuseUnusable(deps, user, data);
  await followGroups(deps, user, flow.groups);
  await recordOrFail(deps.audit, [{ type: 'login.succeeded', actor: user.name, outcome: 'success', data: { ...data, groups: flow.groups } }]);
  await finish(step, { login: { accountId: user.name } });
}

/** The user of this name, created (user.added) on first sign-in. */
async function provisionedUser(deps: InteractionDeps, flow: ReturnFlow): Promise<UserRecord> {
  const existing = await deps.store.identity.getUser(flow.name);
  if (existing) return existing;
  const now = Date.now();
  try {
    // On record first: a user never exists without its addition in the log.
    await recordOrFail(deps.audit, [{ type: 'user.added', actor: flow.name, outcome: 'success', reason: 'first sign-in through the upstream OpenID provider', data: { user: flow.name, groups: flow.groups, via: 'oidc', upstream: deps.config.identity.login.oidc!.issuer } }]);
    await deps.store.identity.createUser({ name: flow.name, passwordHash: null, groups: flow.groups, disabled: false, createdAt: now, updatedAt: now });
  } catch (error) {
    if (error instanceof PageError) throw error;
    // Created meanwhile by another sign-in (the store refuses a duplicate with a plain Error).
    if (!(await deps.store.identity.getUser(flow.name))) throw error;
  }
  const user = await deps.store.identity.getUser(flow.name);
  if (!user) throw new PageError(400, 'invalid_request', EXPIRED);
  return user;
}

/** The provider is the source of an upstream user's groups: each sign-in brings Mandate's copy up to date (user.groups_changed). */
async function followGroups(deps: InteractionDeps, user: UserRecord, groups: string[]): Promise<void> {
  const sorted = (list: readonly string[]): string => JSON.stringify([...list].sort());
  if (sorted(user.groups) === sorted(groups)) return;
  await recordOrFail(deps.audit, [{ type: 'user.groups_changed', actor: user.name, outcome: 'success', reason: 'the upstream OpenID provider reports other groups', data: { user: user.name, before: user.groups, after: groups, via: 'oidc' } }]);
  await deps.store.identity.setUserGroups(user.name, groups, Date.now());
}

/** A disabled account, or a local password account of the same name (never taken over from upstream): login.failed, 403. */
async function refuseUnusable(deps: InteractionDeps, user: UserRecord, data: Record<string, JsonValue>): Promise<void> {
  if (user.disabled) {
    await recordOrFail(deps.audit, [{ type: 'login.failed', actor: user.name, outcome: 'failure', reason: 'disabled', data }]);
    throw new PageError(403, 'access_denied', 'this account is disabled');
  }
  if (user.passwordHash !== null) {
    await recordOrFail(deps.audit, [{ type: 'login.failed', actor: user.name, outcome: 'denied', reason: 'local_account', data }]);
    throw new PageError(403, 'access_denied', 'this name belongs to a local account; sign in with its password');
  }
}
