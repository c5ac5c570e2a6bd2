/**
 * The login page: showing it (password form, upstream sign-in button, cancel),
 * POST UID/login (username + password → login.succeeded / login.failed,
 * throttled per name and per address) and POST UID/abort (the client gets
 * access_denied).
 */
import type { IdentityEvent, JsonValue } from '../../audit/events.ts';
import type { Store, UserRecord } from '../../store/types.ts';
import { pageHeaders, renderLogin, type ClientView } from '../pages.ts';
import { upstreamFormTargets } from '../upstream-login.ts';
import { USER_NAME, decoyHash, verifyPassword } from '../users.ts';
import { PageError, csrfToken } from './forms.ts';
import { addressOf, clientIdOf, clientView, finish, recordOrFail, requireLoginPrompt, send, type Step } from './step.ts';
import { throttleFor, type ThrottleTicket } from './throttle.ts';

interface LoginPageOptions {
  username?: string;
  message?: string;
  headers?: Record<string, string>;
}

/** The login page with this status, the name and message given (the login_hint prefills the name). */
async function loginPage(step: Step, client: ClientView, status: number, options: LoginPageOptions = {}): Promise<void> {
  const { deps, uid, base, interaction } = step;
  const { local, oidc } = deps.config.identity.login;
  const hint = typeof interaction.params.login_hint === 'string' ? interaction.params.login_hint : undefined;
  const html = renderLogin({
    action: `${base}/login`,
    csrf: csrfToken(deps.csrfKey, uid, 'login'),
    abortAction: `${base}/abort`,
    abortCsrf: csrfToken(deps.csrfKey, uid, 'abort'),
    client,
    username: options.username ?? hint,
    message: options.message,
    password: local,
    upstream: oidc ? { action: `${base}/upstream`, csrf: csrfToken(deps.csrfKey, uid, 'upstream'), displayName: oidc.displayName } : undefined,
  });
  const redirect = typeof interaction.params.redirect_uri === 'string' ? [interaction.params.redirect_uri] : [];
  // The upstream form answers with a redirect to the provider: Chromium applies form-action to it.
  const upstream = oidc ? await upstreamFormTargets(oidc) : [];
  send(step.req, step.res, status, html, { ...pageHeaders([...redirect, ...upstream]), ...options.headers });
}

/** GET UID while the login prompt is pending. */
export async function showLogin(step: Step, client: ClientView): Promise<void> {
  await loginPage(step, client, 200);
}

// ---------------------------------------------------------------------------
// POST UID/login

/** One sign-in attempt: who it claims to be (null: not a valid name), from where, and the name as shown back. */
interface Attempt {
  clientId: string;
  name: string | null;
  address: string;
  shown: string;
}

export async function submitLogin(step: Step, form: Map<string, string>): Promise<void> {
  requireLoginPrompt(step.interaction);
  const { username, password } = credentialsFrom(form);
  const clientId = clientIdOf(step.interaction);
  const client = await clientView(step.deps.store, clientId);
  const attempt = describeAttempt(step, clientId, username);
  const ticket = await admitAttempt(step, client, attempt);
  if (!ticket) return;
  const checked = await checkPassword(step.deps.store, attempt.name, password);
  if ('reason' in checked) return refuseLogin(step, client, attempt, checked.reason);
  ticket.succeeded();
  await signIn(step, attempt, checked.user.name);
}

function credentialsFrom(form: Map<string, string>): { username: string; password: string } {
  const username = form.get('username');
  const password = form.get('password');
  if (username === undefined || password === undefined) throw new PageError(400, 'invalid_request', 'the form needs a username and a password');
  return { username, password };
}

function describeAttempt(step: Step, clientId: string, username: string): Attempt {
  const submitted = username.trim().toLowerCase();
  return { clientId, name: USER_NAME.test(submitted) ? submitted : null, address: addressOf(step.req), shown: username.slice(0, 64) };
}

function loginFailed(attempt: Attempt, reason: string): IdentityEvent {
  return {
    type: 'login.failed',
    actor: attempt.name,
    outcome: 'failure',
    reason,
    data: { client_id: attempt.clientId, address: attempt.address } satisfies Record<string, JsonValue>,
  };
}

/** Counts the attempt before it is checked; when throttled, records that and answers 429 (null). */
async function admitAttempt(step: Step, client: ClientView, attempt: Attempt): Promise<ThrottleTicket | null> {
  const throttle = throttleFor(step.deps);
  const ticket = throttle.begin(attempt.name, attempt.address);
  if (ticket) return ticket;
  await recordOrFail(step.deps.audit, [loginFailed(attempt, 'throttled')]);
  const retry = throttle.retryAfter(attempt.name, attempt.address);
  await loginPage(step, client, 429, { username: attempt.shown, message: 'Too many failed attempts. Wait a few minutes and try again.', headers: { 'Retry-After': String(retry) } });
  return null;
}

/** The user, if the name is an enabled user with this password; else why not. */
async function checkPassword(store: Store, name: string | null, password: string): Promise<{ user: UserRecord } | { reason: string }> {
  const user = name ? await store.identity.getUser(name) : null;
  const hash = user && !user.disabled && user.passwordHash ? user.passwordHash : null;
  // Always one scrypt comparison, so the time taken does not tell which names exist.
  const matches = await verifyPassword(hash ?? (await decoyHash()), password);
  if (user && hash && matches) return { user };
  return { reason: !name ? 'invalid_name' : !user ? 'unknown_user' : user.disabled ? 'disabled' : !user.passwordHash ? 'no_password' : 'wrong_password' };
}

async function refuseLogin(step: Step, client: ClientView, attempt: Attempt, reason: string): Promise<void> {
  await recordOrFail(step.deps.audit, [loginFailed(attempt, reason)]);
  await loginPage(step, client, 200, { username: attempt.shown, message: 'Wrong user name or password.' });
}

async function signIn(step: Step, attempt: Attempt, accountId: string): Promise<void> {
  await recordOrFail(step.deps.audit, [{ type: 'login.succeeded', actor: accountId, outcome: 'success', data: { client_id: attempt.clientId, address: attempt.address } }]);
  step.res.setHeader('Cache-Control', 'no-store');
  await finish(step, { login: { accountId, amr: ['pwd'] } });
}

// ---------------------------------------------------------------------------
// POST UID/abort

export async function submitAbort(step: Step): Promise<void> {
  step.res.setHeader('Cache-Control', 'no-store');
  await finish(step, { error: 'access_denied', error_description: 'the user cancelled the request' });
}
