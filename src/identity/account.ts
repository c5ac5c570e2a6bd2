/**
 * The user's own pages (docs/credentials.md): connecting an upstream account
 * for an `oauth` server, and seeing and ending one's connections.
 *
 *   GET  /connect/TICKET        the link of a URL elicitation: "connect SERVER"
 *   POST /connect/TICKET        off to the upstream's authorization server
 *   GET  /connect/callback      its answer (the one redirect URI to register there)
 *   GET  /account/connections   the signed-in user's connections
 *   POST /account/connections   disconnect one (server, tenant)
 *   POST /account/signout       forget this browser's account session
 *   GET  /approvals/ID          an approval request: the call, and Approve / Deny for who may decide
 *   POST /approvals/ID          the decision (docs/approvals.md)
 *   GET  /account/login         sign in (next: a path under /connect/ or /account/)
 *   GET  /account/callback      back from signing in
 *
 * Signing in to these pages goes through Mandate's own authorization server,
 * as any client would: the built-in client `mandate-account` (authorization
 * code, S256 PKCE, scope openid, no consent asked) redirects to
 * /account/callback, where the code is read and consumed in process (no
 * HTTP call to itself) and the user it names gets an account session: a
 * cookie sealed under the deployment secret, one hour, httpOnly,
 * SameSite=Lax. Every sign-in method Mandate offers works here, and an
 * existing sign-in session is reused.
 *
 * A connect link names its user: the page proceeds only for that user,
 * signed in here, so a link sent to someone else cannot connect their
 * upstream account to the sender's calls. Forms carry a CSRF token bound to
 * the account session, and must come from Mandate's own pages (Origin).
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type Provider from 'oidc-provider';
import * as client from 'openid-client';
import type { AuditLog } from '../audit/log.ts';
import type { Config } from '../config/load.ts';
import type { ConnectFlow, ConnectionView, Connections } from '../credentials/connections.ts';
import type { RegisteredServer } from '../gateway/registry.ts';
import type { Logger } from '../observability/log.ts';
import type { ApprovalRecord } from '../store/approvals.ts';
import type { Store } from '../store/types.ts';
import { RuleError } from '../admin/refusal.ts';
import { checkCsrfToken, csrfToken, fromOwnPage, PageError, readForm, type AccountPurpose } from './interaction/forms.ts';
import { send, sendError, seeOther } from './interaction/step.ts';
import { escapeHtml, hidden, layout, pageHeaders } from './pages.ts';
import { ROUTES } from './routes.ts';
import { constantEquals, seal, unseal } from './secrets.ts';
import { cookieAttributes, cookieValue, errorCode } from './upstream-login.ts';

/** The built-in client the account pages sign in with. */
export const ACCOUNT_CLIENT_ID = 'mandate-account';
/** An account session lasts this long. */
const SESSION_MS = 60 * 60_000;
/** A sign-in or a connection in progress may take this long. */
const FLOW_MS = 10 * 60_000;

export interface AccountDeps {
  config: Config;
  store: Store;
  audit: AuditLog;
  log: Logger;
  /** The deployment secret: seals the account session and flow cookies. */
  secret: Buffer;
  csrfKey: string;
  /** The authorization server in force (rebuilt on key rotation). */
  provider(): Provider;
  server(name: string): RegisteredServer | undefined;
  connections: Connections | null;
  /** Deciding approval requests (docs/approvals.md); null: the approval pages are not served. */
  approvals: { decide(id: string, actor: string, verdict: 'approved' | 'denied', reason: string): Promise<unknown> } | null;
}

/** The static client of Mandate's own authorization server behind these pages. */
export function accountClient(issuer: string): Record<string, unknown> {
  return {
    client_id: ACCOUNT_CLIENT_ID,
    client_name: 'Your Mandate account',
    token_endpoint_auth_method: 'none',
    redirect_uris: [accountCallbackUri(issuer)],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  };
}

const base = (issuer: string): string => issuer.replace(/\/$/, '');
export const accountCallbackUri = (issuer: string): string => `${base(issuer)}/account/callback`;

// ---------------------------------------------------------------------------
// Sealed cookies

interface Session {
  /** The user. */
  u: string;
  /** A random id: the CSRF tokens are bound to it. */
  i: string;
  x: number;
}

interface SignIn {
  state: string;
  verifier: string;
  next: string;
  x: number;
}

type Flow = ConnectFlow & { x: number };

const COOKIES = { session: 'account', signIn: 'account-signin', connect: 'connect' } as const;
type CookieKind = keyof typeof COOKIES;

function cookieName(issuer: string, kind: CookieKind): string {
  return new URL(issuer).protocol === 'https:' ? `__Host-mandate-${COOKIES[kind]}` : `mandate-${COOKIES[kind]}`;
}

function cookieKey(secret: Buffer): Buffer {
  return createHmac('sha256', secret).update('mandate-account-cookies').digest();
}

function setCookie(deps: AccountDeps, kind: CookieKind, value: { x: number }): string {
  const maxAge = Math.max(1, Math.ceil((value.x - Date.now()) / 1000));
  return `${cookieName(deps.config.issuer, kind)}=${seal(cookieKey(deps.secret), JSON.stringify(value), `mandate-${kind}`)}; ${cookieAttributes(deps.config.issuer, maxAge)}`;
}

function clearCookie(deps: AccountDeps, kind: CookieKind): string {
  return `${cookieName(deps.config.issuer, kind)}=; ${cookieAttributes(deps.config.issuer, 0)}`;
}

function readCookie<T extends { x: number }>(deps: AccountDeps, req: IncomingMessage, kind: CookieKind): T | null {
  const raw = cookieValue(req, cookieName(deps.config.issuer, kind));
  if (!raw || raw.length > 4096) return null;
  try {
    const value = JSON.parse(unseal(cookieKey(deps.secret), raw, `mandate-${kind}`)) as T;
    return typeof value?.x === 'number' && value.x > Date.now() ? value : null;
  } catch {
    return null;
  }
}

async function sessionOf(deps: AccountDeps, req: IncomingMessage): Promise<Session | null> {
  const session = readCookie<Session>(deps, req, 'session');
  if (session === null || typeof session.u !== 'string' || typeof session.i !== 'string') return null;
  // A user disabled or removed since signing in is signed out.
  const user = await deps.store.identity.getUser(session.u);
  return user === null || user.disabled ? null : session;
}

// ---------------------------------------------------------------------------
// Routing

const TICKET = /^\/connect\/([A-Za-z0-9_.-]{16,2048})$/;
const APPROVAL = /^\/approvals\/(ap-[0-9a-f]{12})$/;
const NOT_FOUND = (): PageError => new PageError(404, 'not_found', 'there is no such page');

/** True for the paths these pages own. */
export function isAccountPath(local: string): boolean {
  return local === '/account' || local.startsWith('/account/') || local.startsWith('/connect/') || local.startsWith('/approvals/');
}

export async function handleAccount(deps: AccountDeps, req: IncomingMessage, res: ServerResponse, local: string, query: string | undefined): Promise<void> {
  try {
    await route(deps, req, res, local, new URLSearchParams(query ?? ''));
  } catch (error) {
    if (error instanceof PageError) return sendError(req, res, error.status, error.error, error.message, error.headers);
    throw error;
  }
}

async function route(deps: AccountDeps, req: IncomingMessage, res: ServerResponse, local: string, query: URLSearchParams): Promise<void> {
  const method = req.method ?? 'GET';
  const get = method === 'GET' || method === 'HEAD';
  if (!get && method !== 'POST') throw new PageError(405, 'invalid_request', 'this page takes GET and POST only', { Allow: 'GET, HEAD, POST' });
  if (method === 'POST' && !fromOwnPage(req.headers, deps.config.issuer)) throw new PageError(403, 'invalid_request', 'the form did not come from this site');
  if (local === '/account' || local === '/account/') return seeOther(res, `${base(deps.config.issuer)}/account/connections`, { 'Cache-Control': 'no-store' });
  if (local === '/account/login' && get) return startSignIn(deps, res, query.get('next'), query.get('switch') === '1');
  // The two answers from an authorization server take GET only: a HEAD (a link preview) must not spend their code.
  if (local === '/account/callback' && method === 'GET') return finishSignIn(deps, req, res, query);
  if (local === '/account/signout' && method === 'POST') return signOut(deps, req, res);
  if (local === '/account/connections') return get ? showConnections(deps, req, res, local) : disconnectForm(deps, req, res);
  if (local === '/connect/callback' && method === 'GET') return connectCallback(deps, req, res);
  const approval = APPROVAL.exec(local);
  if (approval !== null) return get ? showApproval(deps, req, res, local, approval[1]!) : decideApproval(deps, req, res, local, approval[1]!);
  const ticket = TICKET.exec(local);
  if (ticket !== null) return get ? showConnect(deps, req, res, local, ticket[1]!) : startConnect(deps, req, res, local, ticket[1]!);
  throw NOT_FOUND();
}

/** Where a page that needs a signed-in user sends the browser. */
function signInFirst(deps: AccountDeps, res: ServerResponse, local: string): void {
  seeOther(res, `${base(deps.config.issuer)}/account/login?next=${encodeURIComponent(local)}`, { 'Cache-Control': 'no-store' });
}

/** A form's fields, after its CSRF token (bound to the session and the form's purpose) checks out. */
async function checkedForm(deps: AccountDeps, req: IncomingMessage, session: Session, purpose: AccountPurpose): Promise<Map<string, string>> {
  const form = await readForm(req);
  if (!checkCsrfToken(deps.csrfKey, session.i, purpose, form.get('csrf'))) {
    throw new PageError(403, 'invalid_request', 'the form has expired or did not come from this page; reload the page and try again');
  }
  return form;
}

// ---------------------------------------------------------------------------
// Signing in to the account pages, through Mandate's own authorization server

const SAFE_NEXT = /^\/(?:account\/connections|connect\/[A-Za-z0-9_.-]{16,2048}|approvals\/ap-[0-9a-f]{12})$/;

async function startSignIn(deps: AccountDeps, res: ServerResponse, next: string | null, switchUser: boolean): Promise<void> {
  const target = next !== null && SAFE_NEXT.test(next) ? next : '/account/connections';
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = new URL(`${base(deps.config.issuer)}${ROUTES.authorization}`);
  url.search = new URLSearchParams({
    client_id: ACCOUNT_CLIENT_ID,
    response_type: 'code',
    redirect_uri: accountCallbackUri(deps.config.issuer),
    scope: 'openid',
    state,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    ...(switchUser ? { prompt: 'login' } : {}),
  }).toString();
  const signIn: SignIn = { state, verifier, next: target, x: Date.now() + FLOW_MS };
  seeOther(res, url.href, { 'Set-Cookie': setCookie(deps, 'signIn', signIn), 'Cache-Control': 'no-store' });
}

async function finishSignIn(deps: AccountDeps, req: IncomingMessage, res: ServerResponse, query: URLSearchParams): Promise<void> {
  const signIn = readCookie<SignIn>(deps, req, 'signIn');
  res.setHeader('Set-Cookie', clearCookie(deps, 'signIn'));
  if (signIn === null || !constantEquals(String(query.get('state') ?? ''), signIn.state)) {
    throw new PageError(400, 'invalid_request', 'this sign-in has expired or was started in another browser; open the page again');
  }
  if (query.get('error') !== null) throw new PageError(403, 'access_denied', 'the sign-in was cancelled or refused');
  const iss = query.get('iss');
  if (iss !== null && iss !== deps.config.issuer) throw new PageError(400, 'invalid_request', 'the answer came from another issuer');
  const user = await redeem(deps, String(query.get('code') ?? ''), signIn.verifier);
  const session: Session = { u: user, i: randomBytes(16).toString('base64url'), x: Date.now() + SESSION_MS };
  res.setHeader('Set-Cookie', [clearCookie(deps, 'signIn'), setCookie(deps, 'session', session)]);
  seeOther(res, `${base(deps.config.issuer)}${signIn.next}`, { 'Cache-Control': 'no-store' });
}

/** The user an authorization code of the account client names: checked (client, redirect URI, PKCE, expiry) and consumed. */
async function redeem(deps: AccountDeps, value: string, verifier: string): Promise<string> {
  const refused = (): PageError => new PageError(400, 'invalid_grant', 'the sign-in could not be completed; open the page again');
  if (value === '' || value.length > 512) throw refused();
  const code = await deps.provider().AuthorizationCode.find(value);
  if (!code || code.isExpired || (code as { consumed?: unknown }).consumed || code.clientId !== ACCOUNT_CLIENT_ID || code.redirectUri !== accountCallbackUri(deps.config.issuer)) throw refused();
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  if (code.codeChallengeMethod !== 'S256' || typeof code.codeChallenge !== 'string' || !constantEquals(code.codeChallenge, challenge)) throw refused();
  await code.consume();
  const user = code.accountId === undefined ? null : await deps.store.identity.getUser(code.accountId);
  if (!user || user.disabled) throw new PageError(403, 'access_denied', 'this account is disabled');
  return user.name;
}

async function signOut(deps: AccountDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const session = await sessionOf(deps, req);
  if (session !== null) await checkedForm(deps, req, session, 'signout');
  res.setHeader('Set-Cookie', clearCookie(deps, 'session'));
  send(req, res, 200, layout('Signed out', '<h1>Signed out</h1><p>This browser is no longer signed in to your Mandate account page.</p>'), pageHeaders(null));
}

// ---------------------------------------------------------------------------
// Connecting an upstream account

function connectionsOf(deps: AccountDeps): Connections {
  if (deps.connections === null) throw NOT_FOUND();
  return deps.connections;
}

/** The server a connection is for, if it still connects user accounts. */
function oauthServer(deps: AccountDeps, name: string): RegisteredServer {
  const server = deps.server(name);
  if (server?.auth?.kind !== 'oauth') throw new PageError(404, 'not_found', `the server "${name}" does not connect user accounts (any more)`);
  return server;
}

/** The ticket of a connect link, and the signed-in user it was made for; null after sending the browser to sign in. */
async function ticketAndSession(deps: AccountDeps, req: IncomingMessage, res: ServerResponse, local: string, text: string) {
  const ticket = connectionsOf(deps).openTicket(text);
  if (ticket === null) throw new PageError(400, 'invalid_request', 'this link has expired or is not valid; call the tool again to get a new one');
  const session = await sessionOf(deps, req);
  if (session === null) {
    signInFirst(deps, res, local);
    return null;
  }
  return { ticket, session };
}

async function showConnect(deps: AccountDeps, req: IncomingMessage, res: ServerResponse, local: string, text: string): Promise<void> {
  const found = await ticketAndSession(deps, req, res, local, text);
  if (found === null) return;
  const { ticket, session } = found;
  const server = oauthServer(deps, ticket.server);
  if (session.u !== ticket.user) {
    const body =
      `<h1>This link is for another account</h1>` +
      `<p class="error" role="alert">It was made for <b>${escapeHtml(ticket.user)}</b>, and this browser is signed in as <b>${escapeHtml(session.u)}</b>.</p>` +
      `<p>Only the person who asked for it can connect their account with it.</p>` +
      `<form method="get" action="${escapeHtml(`${base(deps.config.issuer)}/account/login`)}">` +
      hidden('next', local) +
      hidden('switch', '1') +
      `<div class="actions"><button type="submit" class="primary-button">Sign in as someone else</button></div></form>`;
    return send(req, res, 403, layout('This link is for another account', body), pageHeaders([]));
  }
  const body =
    `<h1>Connect your account</h1>` +
    `<p class="muted">Signed in to Mandate as <b data-user>${escapeHtml(session.u)}</b></p>` +
    `<p class="label">MCP server</p><p class="primary" data-server>${escapeHtml(server.name)}</p>` +
    `<p>Mandate will send you to this server's sign-in page. Once you allow it there, Mandate calls <b>${escapeHtml(server.name)}</b> as you, ` +
    `on your own requests only, and keeps its token encrypted. You can disconnect at any time on your <a href="${escapeHtml(`${base(deps.config.issuer)}/account/connections`)}">connections page</a>.</p>` +
    `<form method="post" action="${escapeHtml(`${base(deps.config.issuer)}${local}`)}">` +
    hidden('csrf', csrfToken(deps.csrfKey, session.i, 'connect')) +
    `<div class="actions"><button type="submit" class="primary-button">Connect</button></div></form>`;
  const authorizationEndpoint = await upstreamAuthorizationEndpoint(deps, server);
  send(req, res, 200, layout('Connect your account', body), pageHeaders(authorizationEndpoint === null ? [] : [authorizationEndpoint]));
}

/** Where the connect form's redirect goes (the page's CSP must allow it). */
async function upstreamAuthorizationEndpoint(deps: AccountDeps, server: RegisteredServer): Promise<string | null> {
  const auth = server.auth;
  if (auth?.kind !== 'oauth') return null;
  return (await connectionsOf(deps).authorizationEndpoint(server)) ?? auth.authorizationEndpoint ?? auth.issuer ?? null;
}

async function startConnect(deps: AccountDeps, req: IncomingMessage, res: ServerResponse, local: string, text: string): Promise<void> {
  const found = await ticketAndSession(deps, req, res, local, text);
  if (found === null) return;
  const { ticket, session } = found;
  await checkedForm(deps, req, session, 'connect');
  if (session.u !== ticket.user) throw new PageError(403, 'access_denied', `this link was made for another account than ${session.u}`);
  const server = oauthServer(deps, ticket.server);
  let started: { url: string; flow: ConnectFlow };
  try {
    started = await connectionsOf(deps).begin(server, { user: ticket.user, server: ticket.server, tenant: ticket.tenant });
  } catch (error) {
    deps.log.warn({ server: server.name, err: errorCode(error) }, 'could not start an upstream connection');
    throw new PageError(502, 'temporarily_unavailable', `the sign-in page of "${server.name}" cannot be reached right now; try again in a moment`);
  }
  const flow: Flow = { ...started.flow, x: Date.now() + FLOW_MS };
  seeOther(res, started.url, { 'Set-Cookie': setCookie(deps, 'connect', flow), 'Cache-Control': 'no-store' });
}

async function connectCallback(deps: AccountDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const flow = readCookie<Flow>(deps, req, 'connect');
  res.setHeader('Set-Cookie', clearCookie(deps, 'connect'));
  if (flow === null) throw new PageError(400, 'invalid_request', 'this connection has expired or was started in another browser; call the tool again');
  const session = await sessionOf(deps, req);
  if (session === null || session.u !== flow.user) throw new PageError(403, 'access_denied', 'sign in to Mandate as the user who started this connection, then call the tool again');
  const server = oauthServer(deps, flow.server);
  const url = new URL(req.url ?? '/', deps.config.issuer);
  const callbackUrl = new URL(`${base(deps.config.issuer)}/connect/callback${url.search}`);
  if (callbackUrl.searchParams.get('error') !== null) {
    const code = /^[A-Za-z0-9_.-]{1,64}$/.test(callbackUrl.searchParams.get('error') ?? '') ? callbackUrl.searchParams.get('error') : 'error';
    throw new PageError(403, 'access_denied', `"${server.name}" did not allow the connection (${code})`);
  }
  let connected: ConnectionView;
  try {
    connected = await connectionsOf(deps).complete(server, flow, callbackUrl);
  } catch (error) {
    deps.log.warn({ server: server.name, user: flow.user, err: errorCode(error) }, 'could not complete an upstream connection');
    throw new PageError(502, 'invalid_grant', `the connection to "${server.name}" could not be completed (${errorCode(error)}); call the tool again to start over`);
  }
  const body =
    `<h1>Connected</h1>` +
    `<p data-connected>Your account for <b>${escapeHtml(connected.server)}</b> is connected to Mandate as <b>${escapeHtml(connected.user)}</b>.</p>` +
    `<p>Return to your application and try again.</p>` +
    `<p class="muted"><a href="${escapeHtml(`${base(deps.config.issuer)}/account/connections`)}">Your connections</a></p>`;
  send(req, res, 200, layout('Connected', body), pageHeaders(null));
}

// ---------------------------------------------------------------------------
// The connections page

const when = (ms: number | null): string => (ms === null ? '—' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'));

async function showConnections(deps: AccountDeps, req: IncomingMessage, res: ServerResponse, local: string): Promise<void> {
  const session = await sessionOf(deps, req);
  if (session === null) return signInFirst(deps, res, local);
  const list = await connectionsOf(deps).list(session.u);
  const action = `${base(deps.config.issuer)}/account/connections`;
  const rows = list
    .map(
      (c) =>
        `<li data-connection="${escapeHtml(c.server)}"><b>${escapeHtml(c.server)}</b>${c.tenant ? ` <span class="muted">(tenant ${escapeHtml(c.tenant)})</span>` : ''}` +
        `<br><span class="muted">connected ${when(c.createdAt)}, last used ${when(c.lastUsedAt)}${c.scope ? `, scopes <code>${escapeHtml(c.scope)}</code>` : ''}</span>` +
        `<form method="post" action="${escapeHtml(action)}">` +
        hidden('csrf', csrfToken(deps.csrfKey, session.i, 'disconnect')) +
        hidden('server', c.server) +
        hidden('tenant', c.tenant) +
        `<button type="submit" class="link">Disconnect</button></form></li>`,
    )
    .join('');
  const body =
    `<h1>Your connections</h1>` +
    `<p class="muted">Signed in to Mandate as <b data-user>${escapeHtml(session.u)}</b></p>` +
    (list.length === 0 ? '<p data-empty>You have connected no upstream accounts.</p>' : `<ul>${rows}</ul>`) +
    `<form method="post" action="${escapeHtml(`${base(deps.config.issuer)}/account/signout`)}" class="secondary">` +
    hidden('csrf', csrfToken(deps.csrfKey, session.i, 'signout')) +
    `<button type="submit" class="link">Sign out</button></form>`;
  send(req, res, 200, layout('Your connections', body), pageHeaders([]));
}

async function disconnectForm(deps: AccountDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const session = await sessionOf(deps, req);
  if (session === null) throw new PageError(403, 'access_denied', 'sign in again, then disconnect');
  const form = await checkedForm(deps, req, session, 'disconnect');
  const name = form.get('server') ?? '';
  const key = { user: session.u, server: name, tenant: form.get('tenant') ?? '' };
  await connectionsOf(deps).disconnect(key, session.u, deps.server(name));
  seeOther(res, `${base(deps.config.issuer)}/account/connections`, { 'Cache-Control': 'no-store' });
}

// ---------------------------------------------------------------------------
// Approval requests (docs/approvals.md)

async function approvalOf(deps: AccountDeps, id: string): Promise<ApprovalRecord> {
  if (deps.approvals === null) throw NOT_FOUND();
  const record = await deps.store.approvals.get(id);
  if (record === null) throw new PageError(404, 'not_found', 'there is no such approval request');
  return record;
}

/** Why `user` may not decide `record` now, or null if they may. */
async function cannotDecide(deps: AccountDeps, record: ApprovalRecord, user: string): Promise<string | null> {
  if (record.status !== 'pending') return `this request is ${record.status}${record.decidedBy !== null ? ` (by ${record.decidedBy})` : ''}`;
  if (record.expiresAt <= Date.now()) return 'this request has expired; the caller must call again';
  if (record.requester === user) return 'you made this call: someone else must approve it';
  const groups = (await deps.store.identity.getUser(user))?.groups ?? [];
  if (!record.groups.some((group) => groups.includes(group))) return `only members of ${record.groups.join(' or ')} may decide`;
  return null;
}

async function showApproval(deps: AccountDeps, req: IncomingMessage, res: ServerResponse, local: string, id: string): Promise<void> {
  const session = await sessionOf(deps, req);
  if (session === null) return signInFirst(deps, res, local);
  const record = await approvalOf(deps, id);
  const blocked = await cannotDecide(deps, record, session.u);
  let args = '(no longer kept: a request\'s arguments are forgotten a day after it ended; their SHA-256 remains)';
  if (record.args !== '') {
    try {
      args = JSON.stringify(JSON.parse(record.args), null, 2);
    } catch {
      args = record.args;
    }
  }
  const form =
    blocked !== null
      ? `<p class="warning" role="note" data-blocked>${escapeHtml(blocked)}</p>`
      : `<form method="post" action="${escapeHtml(`${base(deps.config.issuer)}${local}`)}">` +
        hidden('csrf', csrfToken(deps.csrfKey, session.i, 'decide')) +
        `<label for="reason">Reason</label><input type="text" id="reason" name="reason" maxlength="1000" required>` +
        `<div class="actions"><button type="submit" name="decision" value="denied">Deny</button>` +
        `<button type="submit" name="decision" value="approved" class="primary-button">Approve</button></div></form>`;
  const body =
    `<h1>Approve this call?</h1>` +
    `<p class="muted">Signed in as <b data-user>${escapeHtml(session.u)}</b></p>` +
    `<p class="label">Caller</p><p class="primary" data-requester>${escapeHtml(record.requester)}</p><p class="muted mono">client ${escapeHtml(record.clientId)}</p>` +
    `<p class="label">Tool</p><p class="primary" data-tool>${escapeHtml(record.server)} / ${escapeHtml(record.tool)}</p>` +
    `<p class="label">Arguments</p><pre class="mono" data-args>${escapeHtml(args)}</pre>` +
    `<p class="label">Asked by</p><p class="mono">${escapeHtml(record.policies.join(', '))}</p>` +
    `<p class="label">Status</p><p data-status>${escapeHtml(record.status)}, until ${escapeHtml(when(record.expiresAt))}</p>` +
    form;
  send(req, res, 200, layout('Approve this call?', body), pageHeaders([]));
}

async function decideApproval(deps: AccountDeps, req: IncomingMessage, res: ServerResponse, local: string, id: string): Promise<void> {
  const session = await sessionOf(deps, req);
  if (session === null) throw new PageError(403, 'access_denied', 'sign in again, then decide');
  const form = await checkedForm(deps, req, session, 'decide');
  const verdict = form.get('decision');
  if (verdict !== 'approved' && verdict !== 'denied') throw new PageError(400, 'invalid_request', 'choose Approve or Deny');
  await approvalOf(deps, id);
  try {
    await (deps.approvals as NonNullable<AccountDeps['approvals']>).decide(id, session.u, verdict, (form.get('reason') ?? '').trim());
  } catch (error) {
    if (error instanceof RuleError) throw new PageError(403, 'access_denied', error.message);
    throw error;
  }
  seeOther(res, `${base(deps.config.issuer)}${local}`, { 'Cache-Control': 'no-store' });
}
