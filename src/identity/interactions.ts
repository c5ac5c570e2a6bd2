/**
 * The authorization server's interactions: the sign-in and consent pages that
 * oidc-provider sends the browser to ({issuer path}/interaction/UID).
 *
 *   GET  UID          the page for the pending prompt (login or consent)
 *   POST UID/login    username + password → login.succeeded / login.failed
 *   POST UID/consent  decision=allow|deny → consent.granted (success|denied)
 *   POST UID/abort    cancel: the client gets access_denied
 *   POST UID/upstream                sign in at the upstream OpenID provider (identity.login.oidc)
 *   GET  callback/upstream           the provider's answer (the one redirect URI to register there)
 *   GET  UID/upstream                back under the interaction: login.succeeded, finish
 *
 * Every POST is a same-origin form (Origin checked when sent) carrying a CSRF
 * token bound to the interaction and the form's purpose; the interaction
 * itself is found through oidc-provider's interaction cookie (SameSite=Lax),
 * and must be the one the URL names. Audit events are recorded before the
 * interaction finishes: if they cannot be written, nothing finishes (503).
 */
import { OAuthRefusal } from './errors.ts';
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errors, type InteractionResults } from 'oidc-provider';
import type Provider from 'oidc-provider';
import type { AuditLog } from '../audit/log.ts';
import type { IdentityEvent, JsonValue } from '../audit/events.ts';
import type { Config, ResolvedServer } from '../config/load.ts';
import type { Logger } from '../observability/log.ts';
import { StoreUnavailableError, type Store } from '../store/types.ts';
import { requestNotes } from './context.ts';
import { pageHeaders, renderConsent, renderErrorPage, renderLogin, type ClientView } from './pages.ts';
import { INTERACTION_PREFIX } from './provider.ts';
import { serverForResource, serverScope, toolScopesIn } from './scopes.ts';
import { USER_NAME, decoyHash, verifyPassword } from './users.ts';
import { requestedResources } from './consent.ts';
import { UPSTREAM_CALLBACK_REST, UpstreamError, beginUpstream, clearFlowCookie, completeUpstream, flowCookie, readFlow, upstreamFormTargets } from './upstream-login.ts';

export interface InteractionDeps {
  provider: Provider;
  store: Store;
  audit: AuditLog;
  config: Config;
  /** Secret for CSRF tokens (any high-entropy string; all nodes must share it). */
  csrfKey: string;
  /** Failed-login counters; default: one per provider, in memory. */
  throttle?: LoginThrottle;
  /** Where unexpected errors are reported (never shown to the browser). */
  log?: Logger;
}

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;

// ---------------------------------------------------------------------------
// CSRF tokens

export type FormPurpose = 'login' | 'consent' | 'abort' | 'upstream';

/** HMAC-SHA256(key, purpose and interaction uid), base64url. */
export function csrfToken(key: string, uid: string, purpose: FormPurpose): string {
  return createHmac('sha256', key).update(`mandate-csrf\n${purpose}\n${uid}`).digest('base64url');
}

/** Constant-time check of a submitted token against the one for this interaction and purpose. */
export function checkCsrfToken(key: string, uid: string, purpose: FormPurpose, token: unknown): boolean {
  if (typeof token !== 'string' || token.length > 256) return false;
  const expected = Buffer.from(csrfToken(key, uid, purpose));
  const actual = Buffer.from(token);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

// ---------------------------------------------------------------------------
// Failed-login throttle

export interface ThrottleOptions {
  /** Failed attempts allowed per window, per user name and per address. */
  limit?: number;
  windowMs?: number;
  /** Keys kept per table before the oldest are dropped. */
  maxKeys?: number;
  now?: () => number;
}

/** One attempt in progress: counted from the start, so parallel guesses cannot slip past the limit. */
export interface ThrottleTicket {
  /** The attempt succeeded: forget the name's failures and this attempt's mark on the address. */
  succeeded(): void;
}

/**
 * At most `limit` failed sign-in attempts per user name and per network
 * address within a sliding window. In memory, per process.
 */
export class LoginThrottle {
  readonly limit: number;
  readonly windowMs: number;
  private readonly maxKeys: number;
  private readonly now: () => number;
  private readonly names = new Map<string, number[]>();
  private readonly addresses = new Map<string, number[]>();

  constructor(options: ThrottleOptions = {}) {
    this.limit = options.limit ?? 5;
    this.windowMs = options.windowMs ?? 15 * 60_000;
    this.maxKeys = options.maxKeys ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  private recent(table: Map<string, number[]>, key: string, now: number): number[] {
    const marks = table.get(key);
    if (!marks) return [];
    const live = marks.filter((at) => now - at < this.windowMs);
    if (live.length === 0) table.delete(key);
    else if (live.length !== marks.length) table.set(key, live);
    return live;
  }

  private mark(table: Map<string, number[]>, key: string, at: number): void {
    const marks = this.recent(table, key, at);
    table.delete(key);
    table.set(key, [...marks, at].slice(-this.limit));
    while (table.size > this.maxKeys) {
      const oldest = table.keys().next().value as string;
      table.delete(oldest);
    }
  }

  /** Seconds until an attempt for this name from this address would be allowed; 0 if allowed now. */
  retryAfter(name: string | null, address: string): number {
    const now = this.now();
    let until = 0;
    for (const [table, key] of [[this.names, name], [this.addresses, address]] as const) {
      if (key === null) continue;
      const marks = this.recent(table, key, now);
      if (marks.length >= this.limit) until = Math.max(until, marks[marks.length - this.limit]! + this.windowMs);
    }
    return until === 0 ? 0 : Math.max(1, Math.ceil((until - now) / 1000));
  }

  /** Starts an attempt, counted as failed unless the ticket reports success; null if refused. */
  begin(name: string | null, address: string): ThrottleTicket | null {
    if (this.retryAfter(name, address) > 0) return null;
    const at = this.now();
    if (name !== null) this.mark(this.names, name, at);
    this.mark(this.addresses, address, at);
    return {
      succeeded: () => {
        if (name !== null) this.names.delete(name);
        const marks = this.addresses.get(address);
        const index = marks?.indexOf(at) ?? -1;
        if (marks && index >= 0) {
          marks.splice(index, 1);
          if (marks.length === 0) this.addresses.delete(address);
        }
      },
    };
  }
}

const throttles = new WeakMap<Provider, LoginThrottle>();

function throttleFor(deps: InteractionDeps): LoginThrottle {
  if (deps.throttle) return deps.throttle;
  let throttle = throttles.get(deps.provider);
  if (!throttle) {
    throttle = new LoginThrottle();
    throttles.set(deps.provider, throttle);
  }
  return throttle;
}

// ---------------------------------------------------------------------------
// Requests and responses

/** A refusal shown as an error page. */
export class PageError extends OAuthRefusal {
  override name = 'PageError';
}

const EXPIRED = 'this sign-in request has expired or was already completed; return to the application and start again';
const AUDIT_DOWN = 'this step cannot be recorded right now, so it was not taken; try again in a moment';

export const MAX_FORM_BYTES = 8 * 1024;

/** Reads an application/x-www-form-urlencoded body of at most `limit` bytes; a repeated field is refused. */
export async function readForm(req: IncomingMessage, limit = MAX_FORM_BYTES): Promise<Map<string, string>> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') throw new PageError(415, 'invalid_request', 'the form must be sent as application/x-www-form-urlencoded');
  const tooLarge = () => new PageError(413, 'invalid_request', `the form is larger than ${limit} bytes`, { Connection: 'close' });
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  const fields = new Map<string, string>();
  for (const [name, value] of new URLSearchParams(Buffer.concat(chunks).toString('utf8'))) {
    if (fields.has(name)) throw new PageError(400, 'invalid_request', `the form field "${name.slice(0, 64)}" appears more than once`);
    fields.set(name, value);
  }
  return fields;
}

function send(req: IncomingMessage, res: ServerResponse, status: number, html: string, headers: Record<string, string>): void {
  const body = Buffer.from(html, 'utf8');
  res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function sendError(req: IncomingMessage, res: ServerResponse, status: number, error: string, description: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  send(req, res, status, renderErrorPage({ error, error_description: description }), { ...pageHeaders(null), ...headers });
}

/** The issuer's path without a trailing slash ('' at the root). */
const issuerPath = (config: Config): string => new URL(config.issuer).pathname.replace(/\/$/, '');

function addressOf(req: IncomingMessage): string {
  return requestNotes.getStore()?.address ?? req.socket.remoteAddress ?? 'unknown';
}

/**
 * A POST must come from the issuer's own pages: Origin, when sent, must be the
 * issuer's. `Origin: null` (a browser hiding the origin) passes only when the
 * browser itself vouches the request is same-origin (Sec-Fetch-Site).
 */
export function fromOwnPage(headers: IncomingMessage['headers'], issuer: string): boolean {
  const site = headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return false;
  const origin = headers.origin;
  if (origin === undefined) return true;
  if (origin === 'null') return site === 'same-origin';
  return origin === new URL(issuer).origin;
}

async function recordOrFail(audit: AuditLog, events: IdentityEvent[]): Promise<void> {
  try {
    await Promise.all(events.map((event) => audit.record(event)));
  } catch {
    throw new PageError(503, 'temporarily_unavailable', AUDIT_DOWN, { 'Retry-After': '5' });
  }
}

// ---------------------------------------------------------------------------
// What the pages show

/** How the client is shown; refused if an administrator revoked or rejected it meanwhile. */
async function clientView(store: Store, clientId: string): Promise<ClientView> {
  const record = await store.getClient(clientId);
  if (record && (record.status === 'revoked' || record.status === 'rejected')) {
    throw new PageError(400, 'unauthorized_client', 'this application is no longer allowed to sign in here');
  }
  const name = typeof record?.metadata.client_name === 'string' && record.metadata.client_name.trim() ? record.metadata.client_name.trim() : null;
  let verifiedHost: string | null = null;
  if (clientId.startsWith('https://') && (!record || record.source === 'cimd')) {
    try {
      verifiedHost = new URL(clientId).host;
    } catch {
      verifiedHost = null;
    }
  }
  return { id: clientId, name, verifiedHost };
}

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
  oidcScopes: string[];
}

interface ConsentDetails {
  missingOIDCScope?: string[];
  missingResourceScopes?: Record<string, string[]>;
  missingOIDCClaims?: string[];
}

const OIDC_SCOPES = new Set(['openid', 'offline_access']);

/**
 * Every scope the request asks for, per MCP server (requested resource), plus
 * whatever oidc-provider reports missing: the page shows all of it and Allow
 * grants all of it, so the user sees the whole of what the client will hold.
 */
export function planConsent(config: Config, interaction: Pick<Interaction, 'params' | 'prompt' | 'session'>): ConsentPlan {
  const { params } = interaction;
  const accountId = interaction.session?.accountId;
  if (!accountId) throw new PageError(400, 'invalid_request', EXPIRED);
  const clientId = typeof params.client_id === 'string' ? params.client_id : '';
  const redirectUri = typeof params.redirect_uri === 'string' ? params.redirect_uri : '';
  if (!clientId || !redirectUri) throw new PageError(400, 'invalid_request', EXPIRED);
  const scope = typeof params.scope === 'string' ? params.scope : '';
  const requested = [...new Set(scope.split(' ').filter(Boolean))];
  const details = (interaction.prompt.details ?? {}) as ConsentDetails;
  const missing = details.missingResourceScopes ?? {};

  const resources = [...new Set([...requestedResources(params.resource), ...Object.keys(missing)])];
  const servers: ConsentPlanServer[] = [];
  for (const resource of resources) {
    const server = serverForResource(config, resource);
    if (!server) throw new PageError(400, 'invalid_target', `${resource} is not an MCP server behind this gateway`);
    const own = new Set([serverScope(server.name), ...toolScopesIn(server.name, scope)]);
    const scopes = [...new Set([...requested.filter((word) => own.has(word)), ...(missing[resource] ?? [])])];
    if (scopes.length > 0) servers.push({ server, resource, scopes });
  }
  const oidcScopes = [...new Set([...requested.filter((word) => OIDC_SCOPES.has(word)), ...(details.missingOIDCScope ?? [])])];
  return { accountId, clientId, redirectUri, servers, oidcScopes };
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

function redirectWarning(client: ClientView, redirectUri: string): string | undefined {
  if (!client.verifiedHost) return undefined;
  try {
    const url = new URL(redirectUri);
    if ((url.protocol === 'https:' || url.protocol === 'http:') && !LOOPBACK.has(url.hostname) && url.host !== client.verifiedHost) {
      return `Answers go to ${url.host}, not to ${client.verifiedHost}.`;
    }
  } catch {
    return undefined;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Steps

interface Step {
  deps: InteractionDeps;
  req: IncomingMessage;
  res: ServerResponse;
  uid: string;
  interaction: Interaction;
  base: string;
}

async function loginPage(step: Step, client: ClientView, status: number, options: { username?: string; message?: string; headers?: Record<string, string> } = {}): Promise<void> {
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

async function activeUser(store: Store, name: string): Promise<void> {
  const user = await store.getUser(name);
  if (!user || user.disabled) throw new PageError(403, 'access_denied', 'this account is disabled');
}

async function showPage(step: Step): Promise<void> {
  const { deps, interaction, uid, base } = step;
  const clientId = typeof interaction.params.client_id === 'string' ? interaction.params.client_id : '';
  const client = await clientView(deps.store, clientId);
  if (interaction.prompt.name === 'login') {
    await loginPage(step, client, 200);
    return;
  }
  if (interaction.prompt.name !== 'consent') throw new PageError(400, 'invalid_request', 'this sign-in step is not supported');
  const plan = planConsent(deps.config, interaction);
  await activeUser(deps.store, plan.accountId);
  if (plan.servers.length === 0 && plan.oidcScopes.length === 0) {
    // Nothing to ask: send the client its error rather than an empty page.
    await deps.provider.interactionFinished(step.req, step.res, { error: 'invalid_scope', error_description: 'no scope for an MCP server was requested' }, { mergeWithLastSubmission: false });
    return;
  }
  const html = renderConsent({
    action: `${base}/consent`,
    csrf: csrfToken(deps.csrfKey, uid, 'consent'),
    user: plan.accountId,
    client,
    redirectUri: plan.redirectUri,
    servers: plan.servers.map(({ server, resource, scopes }) => ({ name: server.name, resource, scopes })),
    oidcScopes: plan.oidcScopes,
    warning: redirectWarning(client, plan.redirectUri),
  });
  send(step.req, step.res, 200, html, pageHeaders([plan.redirectUri]));
}

async function submitLogin(step: Step, form: Map<string, string>): Promise<void> {
  const { deps, interaction, req, res } = step;
  if (interaction.prompt.name !== 'login') throw new PageError(400, 'invalid_request', 'you are already signed in for this request; return to the application and start again');
  const username = form.get('username');
  const password = form.get('password');
  if (username === undefined || password === undefined) throw new PageError(400, 'invalid_request', 'the form needs a username and a password');
  const clientId = typeof interaction.params.client_id === 'string' ? interaction.params.client_id : '';
  const client = await clientView(deps.store, clientId);

  const submitted = username.trim().toLowerCase();
  const name = USER_NAME.test(submitted) ? submitted : null;
  const address = addressOf(req);
  const shown = username.slice(0, 64);
  const failed = (reason: string): IdentityEvent => ({
    type: 'login.failed',
    actor: name,
    outcome: 'failure',
    reason,
    data: { client_id: clientId, address } satisfies Record<string, JsonValue>,
  });

  const throttle = throttleFor(deps);
  const ticket = throttle.begin(name, address);
  if (!ticket) {
    await recordOrFail(deps.audit, [failed('throttled')]);
    const retry = throttle.retryAfter(name, address);
    await loginPage(step, client, 429, { username: shown, message: 'Too many failed attempts. Wait a few minutes and try again.', headers: { 'Retry-After': String(retry) } });
    return;
  }

  const user = name ? await deps.store.getUser(name) : null;
  const hash = user && !user.disabled && user.passwordHash ? user.passwordHash : null;
  // Always one scrypt comparison, so the time taken does not tell which names exist.
  const matches = await verifyPassword(hash ?? (await decoyHash()), password);
  if (!user || !hash || !matches) {
    const reason = !name ? 'invalid_name' : !user ? 'unknown_user' : user.disabled ? 'disabled' : !user.passwordHash ? 'no_password' : 'wrong_password';
    await recordOrFail(deps.audit, [failed(reason)]);
    await loginPage(step, client, 200, { username: shown, message: 'Wrong user name or password.' });
    return;
  }

  ticket.succeeded();
  await recordOrFail(deps.audit, [{ type: 'login.succeeded', actor: user.name, outcome: 'success', data: { client_id: clientId, address } }]);
  const result: InteractionResults = { login: { accountId: user.name, amr: ['pwd'] } };
  res.setHeader('Cache-Control', 'no-store');
  await deps.provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

async function submitConsent(step: Step, form: Map<string, string>): Promise<void> {
  const { deps, interaction, req, res } = step;
  if (interaction.prompt.name !== 'consent') throw new PageError(400, 'invalid_request', 'this request is not waiting for consent; return to the application and start again');
  const decision = form.get('decision');
  if (decision !== 'allow' && decision !== 'deny') throw new PageError(400, 'invalid_request', 'the decision must be allow or deny');
  const plan = planConsent(deps.config, interaction);
  await activeUser(deps.store, plan.accountId);
  await clientView(deps.store, plan.clientId);
  res.setHeader('Cache-Control', 'no-store');

  const event = (entry: ConsentPlanServer, outcome: 'success' | 'denied', grantId?: string): IdentityEvent => ({
    type: 'consent.granted',
    actor: plan.accountId,
    server: entry.server.name,
    outcome,
    data: {
      client_id: plan.clientId,
      resource: entry.resource,
      scopes: [...entry.scopes, ...plan.oidcScopes],
      redirect_uri: plan.redirectUri,
      ...(grantId ? { grant_id: grantId } : {}),
    },
  });

  if (decision === 'deny') {
    const denied: IdentityEvent[] = plan.servers.length > 0 ? plan.servers.map((entry) => event(entry, 'denied')) : [{ type: 'consent.granted', actor: plan.accountId, outcome: 'denied', data: { client_id: plan.clientId, scopes: plan.oidcScopes, redirect_uri: plan.redirectUri } }];
    await recordOrFail(deps.audit, denied);
    await deps.provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user denied the request' }, { mergeWithLastSubmission: false });
    return;
  }

  if (plan.servers.length === 0 && plan.oidcScopes.length === 0) throw new PageError(400, 'invalid_scope', 'no scope for an MCP server was requested');

  // A new grant holding exactly what the page showed.
  const { Grant } = deps.provider;
  const grant = new Grant({ accountId: plan.accountId, clientId: plan.clientId });
  for (const entry of plan.servers) grant.addResourceScope(entry.resource, entry.scopes.join(' '));
  if (plan.oidcScopes.length > 0) grant.addOIDCScope(plan.oidcScopes.join(' '));
  const details = (interaction.prompt.details ?? {}) as ConsentDetails;
  if (details.missingOIDCClaims?.length) grant.addOIDCClaims(details.missingOIDCClaims);
  await grant.save();
  const grantId = grant.jti;

  const events: IdentityEvent[] =
    plan.servers.length > 0 ? plan.servers.map((entry) => event(entry, 'success', grantId)) : [{ type: 'consent.granted', actor: plan.accountId, outcome: 'success', data: { client_id: plan.clientId, scopes: plan.oidcScopes, redirect_uri: plan.redirectUri, grant_id: grantId } }];
  try {
    await recordOrFail(deps.audit, events);
  } catch (error) {
    // Nothing refers to the grant yet; do not leave it behind.
    await grant.destroy().catch(() => undefined);
    throw error;
  }
  // Remembered only once it is on record.
  const grantedAt = Date.now();
  for (const entry of plan.servers) {
    await deps.store.putConsent({ user: plan.accountId, clientId: plan.clientId, resource: entry.resource, scopes: [...entry.scopes, ...plan.oidcScopes], grantedAt });
  }
  await deps.provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

async function submitAbort(step: Step): Promise<void> {
  step.res.setHeader('Cache-Control', 'no-store');
  await step.deps.provider.interactionFinished(step.req, step.res, { error: 'access_denied', error_description: 'the user cancelled the request' }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------------------
// Sign-in at the upstream OpenID provider (upstream-login.ts has the protocol)

function upstreamFailed(deps: InteractionDeps, req: IncomingMessage, error: UpstreamError, clientId: string | null): IdentityEvent {
  const oidc = deps.config.identity.login.oidc;
  return {
    type: 'login.failed',
    actor: null,
    outcome: 'failure',
    reason: error.reason,
    data: { client_id: clientId, address: addressOf(req), via: 'oidc', upstream: oidc?.issuer ?? null, ...error.detail },
  };
}

/** POST UID/upstream: off to the provider, the flow sealed into this browser's cookie. */
async function startUpstream(step: Step): Promise<void> {
  const { deps, interaction, req, res, uid } = step;
  const oidc = deps.config.identity.login.oidc!;
  if (interaction.prompt.name !== 'login') throw new PageError(400, 'invalid_request', 'you are already signed in for this request; return to the application and start again');
  const clientId = typeof interaction.params.client_id === 'string' ? interaction.params.client_id : '';
  await clientView(deps.store, clientId);
  const hint = typeof interaction.params.login_hint === 'string' && interaction.params.login_hint.length <= 256 ? interaction.params.login_hint : undefined;
  let started: Awaited<ReturnType<typeof beginUpstream>>;
  try {
    started = await beginUpstream(oidc, deps.config.issuer, uid, clientId, hint);
  } catch (error) {
    if (!(error instanceof UpstreamError)) throw error;
    deps.log?.warn({ upstream: oidc.issuer, reason: error.reason, ...error.detail }, 'upstream sign-in could not start');
    await recordOrFail(deps.audit, [upstreamFailed(deps, req, error, clientId)]);
    throw new PageError(error.status, error.error, error.message);
  }
  res.writeHead(303, {
    Location: started.url,
    'Set-Cookie': flowCookie(deps.csrfKey, deps.config.issuer, started.flow),
    'Cache-Control': 'no-store',
    'Referrer-Policy': 'no-referrer',
    'Content-Length': '0',
  });
  res.end();
}

/** GET callback/upstream: the provider's answer. Checked and exchanged here; finished under the interaction. */
async function upstreamCallback(deps: InteractionDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const oidc = deps.config.identity.login.oidc;
  if (!oidc) throw new PageError(404, 'not_found', 'there is no such page');
  // GET only: a HEAD must not spend the code.
  if (req.method !== 'GET') throw new PageError(405, 'invalid_request', 'use GET for this page', { Allow: 'GET' });
  const url = req.url ?? '';
  const at = url.indexOf('?');
  const query = new URLSearchParams(at < 0 ? '' : url.slice(at + 1));
  const { issuer } = deps.config;
  const flow = readFlow(req, deps.csrfKey, issuer, 'start');
  // Single use: whatever happens next, this flow is over.
  res.setHeader('Set-Cookie', clearFlowCookie(issuer));
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Referrer-Policy', 'no-referrer');
  let back: Awaited<ReturnType<typeof completeUpstream>>;
  try {
    back = await completeUpstream(oidc, issuer, flow, query);
  } catch (error) {
    if (!(error instanceof UpstreamError)) throw error;
    deps.log?.warn({ upstream: oidc.issuer, reason: error.reason, ...error.detail }, 'upstream sign-in failed');
    await recordOrFail(deps.audit, [upstreamFailed(deps, req, error, flow?.clientId ?? null)]);
    throw new PageError(error.status, error.error, error.message);
  }
  res.writeHead(303, {
    Location: `${issuerPath(deps.config)}${INTERACTION_PREFIX}${back.uid}/upstream`,
    'Set-Cookie': flowCookie(deps.csrfKey, issuer, back),
    'Content-Length': '0',
  });
  res.end();
}

/** GET UID/upstream: the signed-in user, provisioned on first sign-in; login.succeeded; the interaction finishes. */
async function finishUpstream(step: Step): Promise<void> {
  const { deps, interaction, req, res, uid } = step;
  const oidc = deps.config.identity.login.oidc!;
  const { issuer } = deps.config;
  const flow = readFlow(req, deps.csrfKey, issuer, 'return');
  res.setHeader('Set-Cookie', clearFlowCookie(issuer));
  res.setHeader('Cache-Control', 'no-store');
  const clientId = typeof interaction.params.client_id === 'string' ? interaction.params.client_id : '';
  if (!flow || flow.uid !== uid || flow.clientId !== clientId || interaction.prompt.name !== 'login') throw new PageError(400, 'invalid_request', EXPIRED);
  await clientView(deps.store, clientId);
  const address = addressOf(req);

  let user = await deps.store.getUser(flow.name);
  if (!user) {
    const now = Date.now();
    try {
      await deps.store.createUser({ name: flow.name, passwordHash: null, groups: flow.groups, disabled: false, createdAt: now, updatedAt: now });
      await recordOrFail(deps.audit, [{ type: 'user.added', actor: flow.name, outcome: 'success', reason: 'first sign-in through the upstream OpenID provider', data: { user: flow.name, groups: flow.groups, via: 'oidc', upstream: oidc.issuer } }]);
    } catch (error) {
      if (error instanceof PageError) throw error;
      // Created meanwhile by another sign-in (the store refuses a duplicate with a plain Error).
      if (!(await deps.store.getUser(flow.name))) throw error;
    }
    user = await deps.store.getUser(flow.name);
    if (!user) throw new PageError(400, 'invalid_request', EXPIRED);
  }
  if (user.disabled) {
    await recordOrFail(deps.audit, [{ type: 'login.failed', actor: user.name, outcome: 'failure', reason: 'disabled', data: { client_id: clientId, address, via: 'oidc', upstream: oidc.issuer } }]);
    throw new PageError(403, 'access_denied', 'this account is disabled');
  }
  // A name claimed upstream never takes over a local password account of the same name.
  if (user.passwordHash !== null) {
    await recordOrFail(deps.audit, [{ type: 'login.failed', actor: user.name, outcome: 'denied', reason: 'local_account', data: { client_id: clientId, address, via: 'oidc', upstream: oidc.issuer } }]);
    throw new PageError(403, 'access_denied', 'this name belongs to a local account; sign in with its password');
  }
  await recordOrFail(deps.audit, [{ type: 'login.succeeded', actor: user.name, outcome: 'success', data: { client_id: clientId, address, via: 'oidc', upstream: oidc.issuer, groups: flow.groups } }]);
  await deps.provider.interactionFinished(req, res, { login: { accountId: user.name } }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------------------
// Entry point

const PATH = /^([A-Za-z0-9_-]{1,64})(?:\/(login|consent|abort|upstream))?$/;

async function route(deps: InteractionDeps, req: IncomingMessage, res: ServerResponse, rest: string): Promise<void> {
  const path = rest.split('?')[0]!;
  if (path === UPSTREAM_CALLBACK_REST) return upstreamCallback(deps, req, res);
  const match = PATH.exec(path);
  if (!match) throw new PageError(404, 'not_found', 'there is no such page');
  const uid = match[1]!;
  const action = match[2] as FormPurpose | undefined;
  const method = req.method ?? 'GET';
  const { local, oidc } = deps.config.identity.login;
  if (action === 'upstream' && !oidc) throw new PageError(404, 'not_found', 'there is no such page');
  // GET UID/upstream is where the browser comes back from the provider (a redirect, not a form; not HEAD, which would finish it).
  const returning = action === 'upstream' && method === 'GET';
  if (!action && method !== 'GET' && method !== 'HEAD') throw new PageError(405, 'invalid_request', 'use GET for this page', { Allow: 'GET, HEAD' });
  if (action && !returning && method !== 'POST') throw new PageError(405, 'invalid_request', 'this form must be submitted with POST', { Allow: action === 'upstream' ? 'GET, POST' : 'POST' });
  if (action && !returning && !fromOwnPage(req.headers, deps.config.issuer)) throw new PageError(403, 'invalid_request', 'the form was submitted from another site');
  if (action === 'login' && !local) throw new PageError(403, 'access_denied', 'signing in with a password is turned off here; use the other sign-in button');

  const interaction = await deps.provider.interactionDetails(req, res);
  if (interaction.uid !== uid) throw new PageError(400, 'invalid_request', EXPIRED);
  const step: Step = { deps, req, res, uid, interaction, base: `${issuerPath(deps.config)}${INTERACTION_PREFIX}${uid}` };

  if (!action) return showPage(step);
  if (returning) return finishUpstream(step);

  const form = await readForm(req);
  if (!checkCsrfToken(deps.csrfKey, uid, action, form.get('csrf'))) {
    throw new PageError(403, 'invalid_request', 'the form has expired or did not come from this page; go back to the application and start again');
  }
  if (action === 'login') return submitLogin(step, form);
  if (action === 'consent') return submitConsent(step, form);
  if (action === 'upstream') return startUpstream(step);
  return submitAbort(step);
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
    if (error instanceof PageError) {
      sendError(req, res, error.status, error.error, error.message, error.headers);
    } else if (error instanceof errors.SessionNotFound) {
      sendError(req, res, 400, 'invalid_request', EXPIRED);
    } else if (error instanceof errors.OIDCProviderError && error.expose && error.status < 500) {
      sendError(req, res, error.status, error.error, error.error_description ?? 'the request could not be completed');
    } else if (error instanceof StoreUnavailableError) {
      sendError(req, res, 503, 'temporarily_unavailable', AUDIT_DOWN, { 'Retry-After': '5' });
    } else {
      deps.log?.error({ err: error instanceof Error ? { name: error.name, message: error.message } : String(error) }, 'an interaction failed');
      sendError(req, res, 500, 'server_error', 'the request could not be completed');
    }
  }
}
