/**
 * Sign-in through an upstream OpenID Connect provider (`identity.login.oidc`),
 * with openid-client: discovery, the authorization code flow with state,
 * nonce and S256 PKCE, and the code exchange (which checks the ID token's
 * signature, issuer, audience and nonce).
 *
 * The browser goes three steps (routed by interactions.ts, handled in
 * upstream-handlers.ts):
 *
 *   POST /interaction/UID/upstream        start: a sealed cookie, 303 to the provider
 *   GET  /interaction/callback/upstream   the one redirect URI: check state, exchange the code
 *   GET  /interaction/UID/upstream        back under the interaction: finish the login
 *
 * The last hop exists because oidc-provider's interaction cookie is scoped to
 * /interaction/UID, so the fixed redirect URI does not receive it.
 *
 * What the flow must remember between the steps (interaction uid, state,
 * nonce, PKCE verifier; then the signed-in name and groups) lives in one
 * short-lived cookie, sealed with AES-256-GCM under a key derived from the
 * CSRF key: nothing is kept in memory, so any node can take any step, and
 * only the browser that started the flow holds it (httpOnly, SameSite=Lax).
 * No upstream token is kept, logged or recorded.
 */
import { createHmac } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import * as client from 'openid-client';
import type { UpstreamOidcConfig } from '../config/identity-schema.ts';
import { INTERACTION_PREFIX } from './routes.ts';
import { constantEquals, seal, unseal } from './secrets.ts';
import { GROUP_NAME, USER_NAME } from './users.ts';

/** How long a started upstream sign-in may take. */
export const UPSTREAM_TTL_MS = 10 * 60_000;
/** How long the browser has to come back from the callback to the interaction. */
const RETURN_TTL_MS = 2 * 60_000;
/** Upstream HTTP requests (discovery, token, userinfo): seconds. */
const TIMEOUT_S = 10;
/** A failed discovery is not retried for this long (a page view must not wait on a dead provider each time). */
const DISCOVERY_RETRY_MS = 30_000;
const MAX_GROUPS = 256;
const CALLBACK = 'callback/upstream';

/** The path after /interaction/ of the callback. */
export const UPSTREAM_CALLBACK_REST = CALLBACK;

/** A refusal in the upstream flow: `reason` goes to login.failed, the message to the error page. */
export class UpstreamError extends Error {
  override name = 'UpstreamError';
  readonly reason: string;
  readonly status: number;
  readonly error: string;
  /** Safe detail for the audit event (an error code, never a token or a message from upstream). */
  readonly detail: Record<string, string>;
  constructor(reason: string, status: number, error: string, description: string, detail: Record<string, string> = {}) {
    super(description);
    this.reason = reason;
    this.status = status;
    this.error = error;
    this.detail = detail;
  }
}

// ---------------------------------------------------------------------------
// Discovery and the client configuration, cached per process

interface Cached {
  config?: Promise<client.Configuration>;
  failedAt?: number;
}

const discovered = new Map<string, Cached>();

function clientAuth(metadata: client.ServerMetadata, secret: string | undefined): client.ClientAuth {
  if (!secret) return client.None();
  const methods = metadata.token_endpoint_auth_methods_supported;
  // client_secret_basic is the default of RFC 6749 and OpenID Connect; post only when basic is not offered.
  if (methods && !methods.includes('client_secret_basic') && methods.includes('client_secret_post')) return client.ClientSecretPost(secret);
  return client.ClientSecretBasic(secret);
}

async function discover(oidc: UpstreamOidcConfig, env: NodeJS.ProcessEnv): Promise<client.Configuration> {
  const issuer = new URL(oidc.issuer);
  const insecure = issuer.protocol === 'http:';
  const execute = insecure ? [client.allowInsecureRequests] : [];
  const found = await client.discovery(issuer, oidc.clientId, undefined, client.None(), { execute, timeout: TIMEOUT_S });
  const metadata = found.serverMetadata();
  const secret = env[oidc.clientSecretEnv] || undefined;
  // Without a secret the client is public: token_endpoint_auth_method none, and PKCE protects the code.
  const config = new client.Configuration(metadata, oidc.clientId, secret ? { client_secret: secret } : { token_endpoint_auth_method: 'none' }, clientAuth(metadata, secret));
  config.timeout = TIMEOUT_S;
  for (const extension of execute) extension(config);
  return config;
}

/** The upstream's client configuration: discovered once per process; a failure is retried after 30 s. */
export function upstreamClient(oidc: UpstreamOidcConfig, env: NodeJS.ProcessEnv = process.env, now = Date.now()): Promise<client.Configuration> {
  const key = `${oidc.issuer}\n${oidc.clientId}\n${oidc.clientSecretEnv}`;
  const cached = discovered.get(key);
  if (cached?.config) return cached.config;
  if (cached?.failedAt !== undefined && now - cached.failedAt < DISCOVERY_RETRY_MS) {
    return Promise.reject(new UpstreamError('upstream_unavailable', 502, 'temporarily_unavailable', 'the sign-in provider cannot be reached right now; try again in a moment'));
  }
  const entry: Cached = {};
  entry.config = discover(oidc, env).catch((error: unknown) => {
    discovered.set(key, { failedAt: Date.now() });
    throw new UpstreamError('upstream_unavailable', 502, 'temporarily_unavailable', 'the sign-in provider cannot be reached right now; try again in a moment', { code: errorCode(error) });
  });
  discovered.set(key, entry);
  return entry.config;
}

/** Forgets cached discovery results (tests). */
export function forgetUpstreamClients(): void {
  discovered.clear();
}

/**
 * Origins the login page's form may redirect to: the upstream's authorization
 * endpoint (discovered; the issuer's origin if discovery fails).
 */
export async function upstreamFormTargets(oidc: UpstreamOidcConfig): Promise<string[]> {
  try {
    const config = await upstreamClient(oidc);
    const endpoint = config.serverMetadata().authorization_endpoint;
    return endpoint ? [endpoint] : [oidc.issuer];
  } catch {
    return [oidc.issuer];
  }
}

/** The redirect URI to register at the provider: {issuer}/interaction/callback/upstream. */
export function upstreamRedirectUri(issuer: string): string {
  return `${issuer.replace(/\/$/, '')}${INTERACTION_PREFIX}${CALLBACK}`;
}

/** A short, safe name for an error: its code or class, never its message or cause. */
export function errorCode(error: unknown): string {
  if (error && typeof error === 'object') {
    const { code, error: oauthError, name } = error as { code?: unknown; error?: unknown; name?: unknown };
    const parts = [code, oauthError].filter((part): part is string => typeof part === 'string' && /^[A-Za-z0-9_.:-]{1,64}$/.test(part));
    if (parts.length > 0) return parts.join(' ');
    if (typeof name === 'string' && /^[A-Za-z0-9_]{1,64}$/.test(name)) return name;
  }
  return 'error';
}

// ---------------------------------------------------------------------------
// The flow's cookie

/** Between start and callback. */
export interface StartFlow {
  p: 'start';
  uid: string;
  clientId: string;
  state: string;
  nonce: string;
  verifier: string;
  exp: number;
}

/** Between callback and the return to the interaction. */
export interface ReturnFlow {
  p: 'return';
  uid: string;
  clientId: string;
  name: string;
  groups: string[];
  exp: number;
}

type Flow = StartFlow | ReturnFlow;

const CONTEXT = 'mandate-upstream-flow';

function flowKey(csrfKey: string): Buffer {
  return createHmac('sha256', csrfKey).update('mandate-upstream-cookie').digest();
}

export function upstreamCookieName(issuer: string): string {
  return new URL(issuer).protocol === 'https:' ? '__Host-mandate-upstream' : 'mandate-upstream';
}

export function cookieAttributes(issuer: string, maxAgeSeconds: number): string {
  const secure = new URL(issuer).protocol === 'https:' ? '; Secure' : '';
  return `Path=/; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Lax${secure}`;
}

/** A Set-Cookie value holding the sealed flow. */
export function flowCookie(csrfKey: string, issuer: string, flow: Flow): string {
  const maxAge = Math.max(1, Math.ceil((flow.exp - Date.now()) / 1000));
  return `${upstreamCookieName(issuer)}=${seal(flowKey(csrfKey), JSON.stringify(flow), CONTEXT)}; ${cookieAttributes(issuer, maxAge)}`;
}

/** A Set-Cookie value removing the flow's cookie. */
export function clearFlowCookie(issuer: string): string {
  return `${upstreamCookieName(issuer)}=; ${cookieAttributes(issuer, 0)}`;
}

export function cookieValue(req: IncomingMessage, name: string): string | null {
  const header = req.headers.cookie;
  if (!header) return null;
  let found: string | null = null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    if (found !== null) return null; // the same cookie twice: trust neither
    found = part.slice(eq + 1).trim();
  }
  return found;
}

/** The flow this browser carries, if its cookie opens, is unexpired and is at phase `p`; else null. */
export function readFlow<P extends Flow['p']>(req: IncomingMessage, csrfKey: string, issuer: string, p: P, now = Date.now()): Extract<Flow, { p: P }> | null {
  const raw = cookieValue(req, upstreamCookieName(issuer));
  if (!raw || raw.length > 4096) return null;
  let flow: Flow;
  try {
    flow = JSON.parse(unseal(flowKey(csrfKey), raw, CONTEXT)) as Flow;
  } catch {
    return null;
  }
  if (!flow || typeof flow !== 'object' || flow.p !== p || typeof flow.exp !== 'number' || flow.exp <= now || typeof flow.uid !== 'string') return null;
  return flow as Extract<Flow, { p: P }>;
}

// ---------------------------------------------------------------------------
// The steps

/** Scopes asked of the provider: the configured ones, openid always included. */
function scopesOf(oidc: UpstreamOidcConfig): string {
  return [...new Set(['openid', ...oidc.scopes])].join(' ');
}

/** Start: the provider's authorization URL, and the flow to seal into the cookie. */
export async function beginUpstream(oidc: UpstreamOidcConfig, issuer: string, uid: string, clientId: string, loginHint?: string): Promise<{ url: string; flow: StartFlow }> {
  const config = await upstreamClient(oidc);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const verifier = client.randomPKCECodeVerifier();
  const parameters: Record<string, string> = {
    redirect_uri: upstreamRedirectUri(issuer),
    scope: scopesOf(oidc),
    state,
    nonce,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  };
  if (loginHint) parameters.login_hint = loginHint;
  const url = client.buildAuthorizationUrl(config, parameters);
  return { url: url.href, flow: { p: 'start', uid, clientId, state, nonce, verifier, exp: Date.now() + UPSTREAM_TTL_MS } };
}

/** Who the provider says signed in. */
export interface UpstreamIdentity {
  name: string;
  groups: string[];
}

/** After the callback: what the browser carries back to the interaction (two minutes to get there). */
export function returnFlow(flow: StartFlow, identity: UpstreamIdentity, now = Date.now()): ReturnFlow {
  return { p: 'return', uid: flow.uid, clientId: flow.clientId, name: identity.name, groups: identity.groups, exp: now + RETURN_TTL_MS };
}

/** The Mandate user name and groups from the provider's claims, or an UpstreamError (bad_username_claim). */
export function identityFromClaims(oidc: UpstreamOidcConfig, claims: Record<string, unknown>): UpstreamIdentity {
  const raw = claims[oidc.usernameClaim];
  const name = typeof raw === 'string' ? raw.trim().toLowerCase() : '';
  if (!USER_NAME.test(name)) {
    throw new UpstreamError('bad_username_claim', 403, 'access_denied', `the sign-in provider did not give a usable user name (claim "${oidc.usernameClaim}")`, { claim: oidc.usernameClaim });
  }
  const value = claims[oidc.groupsClaim];
  const listed = Array.isArray(value) ? value : typeof value === 'string' ? [value] : [];
  const groups = [...new Set(listed.filter((group): group is string => typeof group === 'string' && GROUP_NAME.test(group)))].slice(0, MAX_GROUPS);
  return { name, groups };
}

/**
 * Callback: checks the state against the browser's flow (constant time), the
 * provider's answer, exchanges the code (openid-client checks the ID token,
 * its nonce, issuer and audience, and the `iss` parameter) and reads the
 * claims, from the ID token and, for those it lacks, from userinfo. Returns
 * what the browser carries back to the interaction.
 */
export async function completeUpstream(oidc: UpstreamOidcConfig, issuer: string, flow: StartFlow | null, query: URLSearchParams): Promise<ReturnFlow> {
  if (!flow) throw new UpstreamError('no_upstream_session', 400, 'invalid_request', 'this sign-in was not started in this browser, or it took too long; return to the application and start again');
  const state = query.get('state');
  if (state === null || query.getAll('state').length !== 1 || !constantEquals(state, flow.state)) {
    throw new UpstreamError('bad_state', 400, 'invalid_request', 'the answer from the sign-in provider does not belong to this sign-in; return to the application and start again');
  }
  const upstreamError = query.get('error');
  if (upstreamError !== null) {
    const code = /^[A-Za-z0-9_.-]{1,64}$/.test(upstreamError) ? upstreamError : 'invalid';
    throw new UpstreamError('upstream_error', 403, 'access_denied', 'the sign-in provider did not sign you in', { upstream_error: code });
  }
  const config = await upstreamClient(oidc);
  const current = new URL(upstreamRedirectUri(issuer));
  current.search = query.toString();
  let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
  try {
    tokens = await client.authorizationCodeGrant(config, current, { pkceCodeVerifier: flow.verifier, expectedState: flow.state, expectedNonce: flow.nonce, idTokenExpected: true });
  } catch (error) {
    throw new UpstreamError('exchange_failed', 502, 'access_denied', 'the sign-in could not be completed with the sign-in provider', { code: errorCode(error) });
  }
  const idClaims = tokens.claims();
  if (!idClaims) throw new UpstreamError('exchange_failed', 502, 'access_denied', 'the sign-in provider sent no ID token', { code: 'no_id_token' });
  let claims: Record<string, unknown> = { ...idClaims };
  const lacking = !(oidc.usernameClaim in claims) || !(oidc.groupsClaim in claims);
  if (lacking && config.serverMetadata().userinfo_endpoint && tokens.access_token) {
    try {
      const userinfo = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub);
      // The ID token wins where both say something.
      claims = { ...userinfo, ...claims };
    } catch (error) {
      throw new UpstreamError('userinfo_failed', 502, 'access_denied', 'the sign-in provider did not answer with your profile', { code: errorCode(error) });
    }
  }
  return returnFlow(flow, identityFromClaims(oidc, claims));
}
