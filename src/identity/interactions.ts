/**
 * The authorization server's interactions: the sign-in and consent pages that
 * oidc-provider sends the browser to ({issuer path}/interaction/UID). This
 * file routes; the handlers live in interaction/ and upstream-handlers.ts.
 *
 *   GET  UID                 the page for the pending prompt      login.ts / consent-page.ts
 *   POST UID/login           username + password → login.succeeded / login.failed     login.ts
 *   POST UID/consent         decision=allow|deny → consent.granted (success|denied)   consent-page.ts
 *   POST UID/abort           cancel: the client gets access_denied                    login.ts
 *   POST UID/upstream        sign in at the upstream OpenID provider (identity.login.oidc)
 *   GET  callback/upstream   the provider's answer (the one redirect URI to register there)
 *   GET  UID/upstream        back under the interaction: login.succeeded, finish
 *                            (the three upstream steps: ../upstream-handlers.ts)
 *
 * Every POST is a same-origin form (Origin checked when sent) carrying a CSRF
 * token bound to the interaction and the form's purpose; the interaction
 * itself is found through oidc-provider's interaction cookie (SameSite=Lax),
 * and must be the one the URL names. Audit events are recorded before the
 * interaction finishes: if they cannot be written, nothing finishes (503).
 */
import { correlationId } from '../gateway/errors.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errors } from 'oidc-provider';
import { StoreUnavailableError } from '../store/types.ts';
import { showConsent, submitConsent } from './interaction/consent-page.ts';
import { AUDIT_DOWN, EXPIRED, PageError, fromOwnPage, readCheckedForm, type FormPurpose } from './interaction/forms.ts';
import { showLogin, submitAbort, submitLogin } from './interaction/login.ts';
import { interactionPath } from './routes.ts';
import { clientIdOf, clientView, sendError, type InteractionDeps, type Step } from './interaction/step.ts';
import { finishUpstream, startUpstream, upstreamCallback } from './upstream-handlers.ts';
import { UPSTREAM_CALLBACK_REST } from './upstream-login.ts';
import { decoyHash } from './users.ts';

export { LoginThrottle, type ThrottleOptions, type ThrottleTicket } from './interaction/throttle.ts';
export { MAX_FORM_BYTES, PageError, checkCsrfToken, csrfToken, fromOwnPage, readForm, type FormPurpose } from './interaction/forms.ts';
export { planConsent, type ConsentPlan, type ConsentPlanServer } from './interaction/consent-plan.ts';
export type { InteractionDeps } from './interaction/step.ts';

const PATH = /^([A-Za-z0-9_-]{1,64})(?:\/(login|consent|abort|upstream))?$/;
const NOT_FOUND = () => new PageError(404, 'not_found', 'there is no such page');

/** What a URL under the interaction asks for: a page (no action), a form, or the return from the provider. */
interface Target {
  uid: string;
  action: FormPurpose | undefined;
  method: string;
  /** GET UID/upstream: the browser back from the provider (a redirect, not a form; not HEAD, which would finish it). */
  returning: boolean;
}

const SUBMIT: Record<FormPurpose, (step: Step, form: Map<string, string>) => Promise<void>> = {
  login: submitLogin,
  consent: submitConsent,
  abort: submitAbort,
  upstream: startUpstream,
};

async function route(deps: InteractionDeps, req: IncomingMessage, res: ServerResponse, rest: string): Promise<void> {
  const path = rest.split('?')[0]!;
  if (path === UPSTREAM_CALLBACK_REST) return upstreamCallback(deps, req, res);
  const target = targetOf(deps, req, path);
  checkRequest(deps, req, target);
  const step = await openStep(deps, req, res, target.uid);
  if (!target.action) return showPage(step);
  if (target.returning) return finishUpstream(step);
  const form = await readCheckedForm(req, deps.csrfKey, target.uid, target.action);
  return SUBMIT[target.action](step, form);
}

function targetOf(deps: InteractionDeps, req: IncomingMessage, path: string): Target {
  const match = PATH.exec(path);
  if (!match) throw NOT_FOUND();
  const action = match[2] as FormPurpose | undefined;
  if (action === 'upstream' && !deps.config.identity.login.oidc) throw NOT_FOUND();
  const method = req.method ?? 'GET';
  return { uid: match[1]!, action, method, returning: action === 'upstream' && method === 'GET' };
}

/** Pages take GET and HEAD; forms take POST, from the issuer's own pages; the password form only where passwords are on. */
function checkRequest(deps: InteractionDeps, req: IncomingMessage, { action, method, returning }: Target): void {
  if (!action && method !== 'GET' && method !== 'HEAD') throw new PageError(405, 'invalid_request', 'use GET for this page', { Allow: 'GET, HEAD' });
  if (action && !returning && method !== 'POST') throw new PageError(405, 'invalid_request', 'this form must be submitted with POST', { Allow: action === 'upstream' ? 'GET, POST' : 'POST' });
  if (action && !returning && !fromOwnPage(req.headers, deps.config.issuer)) throw new PageError(403, 'invalid_request', 'the form was submitted from another site');
  if (action === 'login' && !deps.config.identity.login.local) throw new PageError(403, 'access_denied', 'signing in with a password is turned off here; use the other sign-in button');
}

/** The pending interaction, found through its cookie; it must be the one the URL names. */
async function openStep(deps: InteractionDeps, req: IncomingMessage, res: ServerResponse, uid: string): Promise<Step> {
  const interaction = await deps.provider.interactionDetails(req, res);
  if (interaction.uid !== uid) throw new PageError(400, 'invalid_request', EXPIRED);
  return { deps, req, res, uid, interaction, base: interactionPath(deps.config, uid) };
}

async function showPage(step: Step): Promise<void> {
  const client = await clientView(step.deps.store, clientIdOf(step.interaction));
  if (step.interaction.prompt.name === 'login') return showLogin(step, client);
  if (step.interaction.prompt.name !== 'consent') throw new PageError(400, 'invalid_request', 'this sign-in step is not supported');
  return showConsent(step, client);
}

/** A refusal becomes its error page; anything unexpected is logged and becomes a generic 500. */
function sendFailure(deps: InteractionDeps, req: IncomingMessage, res: ServerResponse, error: unknown): void {
  if (error instanceof PageError) {
    sendError(req, res, error.status, error.error, error.message, error.headers);
  } else if (error instanceof errors.SessionNotFound) {
    sendError(req, res, 400, 'invalid_request', EXPIRED);
  } else if (error instanceof errors.OIDCProviderError && error.expose && error.status < 500) {
    sendError(req, res, error.status, error.error, error.error_description ?? 'the request could not be completed');
  } else if (error instanceof StoreUnavailableError) {
    sendError(req, res, 503, 'temporarily_unavailable', AUDIT_DOWN, { 'Retry-After': '5' });
  } else {
    const id = correlationId();
    deps.log?.error({ correlationId: id, err: error instanceof Error ? { name: error.name, message: error.message } : String(error) }, 'an interaction failed');
    sendError(req, res, 500, 'server_error', `the request could not be completed (reference ${id})`);
  }
}

/**
 * Serves {issuer path}/interaction/REST. `rest` is what follows the prefix:
 * `UID`, `UID/login`, `UID/consent`, `UID/abort`, `UID/upstream` or `callback/upstream`.
 */
export async function handleInteraction(deps: InteractionDeps, req: IncomingMessage, res: ServerResponse, rest: string): Promise<void> {
  // Have the decoy hash ready before the first sign-in, so that one is not slower for an unknown name.
  decoyHash().catch(() => undefined);
  try {
    await route(deps, req, res, rest);
  } catch (error) {
    sendFailure(deps, req, res, error);
  }
}
