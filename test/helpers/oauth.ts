/**
 * A small programmatic OAuth client for tests: it drives Mandate's real
 * authorization endpoint, login and consent pages over HTTP, with a cookie
 * jar and manual redirects, the way a browser would (no script, no browser).
 *
 *   register(base, metadata)                 RFC 7591 registration
 *   authorize(base, params)                  GET /oauth/authorize (redirect: manual)
 *   loginAndConsent(base, url, user, pass)   sign in, allow, → { code, state, iss }
 *   token(base, params, auth?)               POST /oauth/token
 *   pkcePair()                               S256 verifier and challenge
 *
 * The redirect URI is a loopback address nobody serves: the code is read from
 * the Location header of the last redirect, which is never followed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { MANDATE, NODE, ROOT } from './process.ts';
import { hashSecret } from '../../src/identity/secrets.ts';
import type { Store } from '../../src/store/types.ts';

/** A loopback redirect URI (RFC 8252); never served. */
export const REDIRECT_URI = 'http://127.0.0.1:9/callback';

/** Name → value; attributes are ignored (every cookie here is path=/ on one host). */
export class CookieJar {
  private readonly cookies = new Map<string, string>();

  /** Keeps the Set-Cookie headers of a response (an expired or empty cookie is dropped). */
  take(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';');
      const at = pair.indexOf('=');
      if (at <= 0) continue;
      const name = pair.slice(0, at).trim();
      const value = pair.slice(at + 1).trim();
      const expired = attributes.some((attribute) => {
        const [key = '', v = ''] = attribute.split('=');
        const k = key.trim().toLowerCase();
        return (k === 'expires' && Date.parse(v) <= Date.now()) || (k === 'max-age' && Number(v) <= 0);
      });
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  get size(): number {
    return this.cookies.size;
  }
}

/** GET with the jar, no redirects followed. */
export async function get(url: string, jar?: CookieJar): Promise<Response> {
  const headers: Record<string, string> = {};
  if (jar && jar.size > 0) headers.cookie = jar.header();
  const response = await fetch(url, { redirect: 'manual', headers });
  jar?.take(response);
  return response;
}

/**
 * Follows redirects within the gateway at `base` from `first` (an answer to
 * `from`) to the page they end on: the sign-in page, then the consent page.
 * A redirect back to the client instead is a failure, as is a page that is
 * not 200.
 */
export async function pageAfter(base: string, jar: CookieJar, first: Response, from: string): Promise<{ url: string; html: string }> {
  let response = first;
  let url = from;
  while (response.status >= 300 && response.status < 400) {
    url = location(response, url)!;
    assert.ok(url.startsWith(base), `sent back to the client instead of a page: ${url}`);
    response = await get(url, jar);
  }
  const html = await response.text();
  assert.equal(response.status, 200, html.slice(0, 500));
  return { url, html };
}

/** A same-origin form POST with the jar (as the browser sends it from Mandate's own page). */
export async function postForm(url: string, fields: Record<string, string>, jar?: CookieJar): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', origin: new URL(url).origin };
  if (jar && jar.size > 0) headers.cookie = jar.header();
  const response = await fetch(url, { method: 'POST', redirect: 'manual', headers, body: new URLSearchParams(fields).toString() });
  jar?.take(response);
  return response;
}

export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** An endpoint's answer: the status, the JSON body (or `{ raw }` when it is not JSON), the response. */
export interface Answer {
  status: number;
  body: Record<string, unknown>;
  response: Response;
}

async function answerOf(response: Response): Promise<Answer> {
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { raw: text };
  }
  return { status: response.status, body, response };
}

/** POST /oauth/register with JSON metadata (or a raw string body). */
export async function register(base: string, metadata: Record<string, unknown> | string, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(`${base}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof metadata === 'string' ? metadata : JSON.stringify(metadata),
  });
  return answerOf(response);
}

/** Parameters; an array value repeats the parameter (for duplicate-parameter attacks). */
export type Params = Record<string, string | string[] | undefined>;

function encode(params: Params): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(name, item);
  }
  return search.toString();
}

export function authorizeUrl(base: string, params: Params): string {
  return `${base}/oauth/authorize?${encode(params)}`;
}

/** GET /oauth/authorize (no redirect followed); pass a jar to keep the interaction cookies. */
export function authorize(base: string, params: Params, jar?: CookieJar): Promise<Response> {
  return get(authorizeUrl(base, params), jar);
}

/** Where a redirect points, resolved against the request URL. */
export function location(response: Response, from: string): string | null {
  const value = response.headers.get('location');
  return value === null ? null : new URL(value, from).href;
}

const decodeHtml = (value: string): string =>
  value.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (_, entity: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", '#x27': "'" })[entity] ?? '');

/** The first form of a page: its action and hidden fields. */
export function parseForm(html: string): { action: string; hidden: Record<string, string> } {
  const form = /<form[^>]*\baction="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (!form?.[1]) throw new Error(`no form on the page: ${html.slice(0, 300)}`);
  const hidden: Record<string, string> = {};
  for (const input of form[2]!.matchAll(/<input\b[^>]*>/gi)) {
    const tag = input[0];
    if (!/\btype="hidden"/i.test(tag)) continue;
    const name = /\bname="([^"]*)"/i.exec(tag)?.[1];
    const value = /\bvalue="([^"]*)"/i.exec(tag)?.[1] ?? '';
    if (name) hidden[decodeHtml(name)] = decodeHtml(value);
  }
  return { action: decodeHtml(form[1]), hidden };
}

export class FlowError extends Error {
  override readonly name = 'FlowError';
  readonly status: number;
  readonly body: string;
  constructor(message: string, status: number, body: string) {
    super(`${message} (HTTP ${status}): ${body.replace(/<style>[\s\S]*?<\/style>/, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').slice(0, 400)}`);
    this.status = status;
    this.body = body;
  }
}

export interface AuthorizationResult {
  code: string;
  state: string | null;
  iss: string | null;
  /** The redirect the client received, whole. */
  redirect: string;
}

/**
 * Follows redirects within `base` (authorization endpoint, interaction pages)
 * until one leaves it (the client's redirect URI) or a page is shown.
 */
async function follow(base: string, url: string, jar: CookieJar, first?: Response): Promise<{ url: string; response: Response } | { redirect: string }> {
  let response = first ?? (await get(url, jar));
  for (let hops = 0; hops < 10; hops += 1) {
    if (response.status < 300 || response.status >= 400) return { url, response };
    const next = location(response, url);
    if (next === null) throw new FlowError('a redirect without Location', response.status, '');
    if (new URL(next).origin !== new URL(base).origin) return { redirect: next };
    url = next;
    response = await get(url, jar);
  }
  throw new Error('too many redirects');
}

/**
 * Signs `user` in and allows everything asked for, starting from a full
 * authorization URL; resolves with what came back to the redirect URI.
 * A page where a redirect was expected (an error page, a refused login)
 * throws a FlowError with its status and text. If the redirect carries an
 * `error`, that is thrown too (see `authorizationRedirect` for the raw answer).
 */
export async function loginAndConsent(base: string, authorizeUrlValue: string, user: string, password: string, jar = new CookieJar()): Promise<AuthorizationResult> {
  const redirect = await authorizationRedirect(base, authorizeUrlValue, user, password, jar);
  const url = new URL(redirect);
  const error = url.searchParams.get('error');
  if (error !== null) throw new FlowError(`the authorization ended with ${error}: ${url.searchParams.get('error_description') ?? ''}`, 302, redirect);
  const code = url.searchParams.get('code');
  if (code === null) throw new FlowError('no code in the redirect', 302, redirect);
  return { code, state: url.searchParams.get('state'), iss: url.searchParams.get('iss'), redirect };
}

/** Like loginAndConsent, but resolves with the redirect URI reached, whatever it carries. */
export async function authorizationRedirect(base: string, authorizeUrlValue: string, user: string, password: string, jar = new CookieJar()): Promise<string> {
  let step = await follow(base, authorizeUrlValue, jar);
  for (let pages = 0; pages < 4; pages += 1) {
    if ('redirect' in step) return step.redirect;
    const { url, response } = step;
    const html = await response.text();
    if (response.status !== 200) throw new FlowError(`an error page at ${new URL(url).pathname}`, response.status, html);
    const form = parseForm(html);
    const action = new URL(form.action, url).href;
    let fields: Record<string, string>;
    if (action.endsWith('/login')) fields = { ...form.hidden, username: user, password };
    else if (action.endsWith('/consent')) fields = { ...form.hidden, decision: 'allow' };
    else throw new FlowError(`an unexpected form (${form.action})`, response.status, html);
    const posted = await postForm(action, fields, jar);
    if (posted.status === 200 && action.endsWith('/login')) throw new FlowError('the sign-in was refused', 200, await posted.text());
    step = await follow(base, action, jar, posted);
  }
  throw new Error('too many pages');
}

/** Client authentication at the token endpoint. */
export type ClientAuth = { basic: { id: string; secret: string } } | { bearer: string } | undefined;

/** POST /oauth/token (form-encoded; an array value repeats the parameter). */
export async function token(base: string, params: Params, auth?: ClientAuth, path = '/oauth/token'): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  if (auth && 'basic' in auth) {
    const { id, secret } = auth.basic;
    headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
  } else if (auth && 'bearer' in auth) {
    headers.authorization = `Bearer ${auth.bearer}`;
  }
  const response = await fetch(`${base}${path}`, { method: 'POST', headers, body: encode(params) });
  return answerOf(response);
}

/** A machine client (client credentials, a secret), registered at a gateway whose registration mode makes it active. */
export async function registerMachine(base: string, name = 'machine'): Promise<{ id: string; secret: string }> {
  const answer = await register(base, { client_name: name, grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' });
  if (answer.status !== 201) throw new Error(`registration answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return { id: String(answer.body.client_id), secret: String(answer.body.client_secret) };
}

/** A client-credentials access token for MCP server `server` at `base`. */
export async function machineToken(base: string, client: { id: string; secret: string }, server: string): Promise<string> {
  const answer = await token(base, { grant_type: 'client_credentials', resource: `${base}/mcp/${server}`, scope: `mcp:${server}` }, { basic: client });
  if (answer.status !== 200) throw new Error(`token answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return String(answer.body.access_token);
}

/** POST /oauth/revoke (RFC 7009). */
export function revoke(base: string, params: Params, auth?: ClientAuth): Promise<Answer> {
  return token(base, params, auth, '/oauth/revoke');
}

/** The payload of a JWT, unverified (to read jti, aud, scope). */
export function jwtClaims(jwt: string): Record<string, unknown> {
  const part = jwt.split('.')[1];
  if (!part) throw new Error('not a JWT');
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** `mandate users add NAME --password-stdin` against a store (`storeArgs`: `--data DIR` or `--database-url URL`). */
export function addUser(name: string, password: string, storeArgs: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env: Record<string, string> = {};
    for (const [key, value] of Object.entries(process.env)) if (value !== undefined && !key.startsWith('MANDATE_')) env[key] = value;
    const child = spawn(NODE, [MANDATE, 'users', 'add', name, '--password-stdin', ...storeArgs], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(`${password}\n`);
  });
}

/**
 * An access token for `user` at MCP server `server`: a public client is
 * registered (open registration), the user signs in and consents, and the
 * code is exchanged. `scope` defaults to the server's scope.
 */
export async function userToken(base: string, user: string, password: string, server: string, scope = `mcp:${server}`): Promise<string> {
  return (await userGrant(base, user, password, [server], scope)).body.access_token as string;
}

/**
 * The token answer (200, or an Error) for `user` through a new public client:
 * the user signs in and consents to `scope` on every server of `servers`
 * (one authorization, one grant), and the code is redeemed for the first.
 */
export async function userGrant(base: string, user: string, password: string, servers: readonly string[], scope: string): Promise<Answer> {
  const client = await register(base, { client_name: `agent-of-${user}`, redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
  if (client.status !== 201) throw new Error(`registration answered ${client.status}: ${JSON.stringify(client.body)}`);
  const clientId = String(client.body.client_id);
  const resources = servers.map((server) => `${base}/mcp/${server}`);
  const { verifier, challenge } = pkcePair();
  const start = authorizeUrl(base, { client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URI, resource: resources.length === 1 ? resources[0] : resources, scope, code_challenge: challenge, code_challenge_method: 'S256', state: 'st' });
  const { code } = await loginAndConsent(base, start, user, password);
  const answer = await token(base, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: clientId, resource: resources[0] });
  if (answer.status !== 200) throw new Error(`token answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return answer;
}

/**
 * A client put straight into the store, as an administrator would register
 * it: a confidential machine client (client_secret_basic with `secret`), or
 * with `secret` null a public interactive one (PKCE, redirect URI REDIRECT_URI).
 */
export async function adminClient(store: Store, id: string, grantTypes: string[], secret: string | null): Promise<void> {
  const now = Date.now();
  await store.identity.createClient({
    id,
    status: 'active',
    class: secret !== null ? 'machine' : 'interactive',
    source: 'admin',
    owner: null,
    metadata:
      secret !== null
        ? { client_name: id, grant_types: grantTypes, token_endpoint_auth_method: 'client_secret_basic', response_types: [], redirect_uris: [] }
        : { client_name: id, grant_types: grantTypes, token_endpoint_auth_method: 'none', response_types: ['code'], redirect_uris: [REDIRECT_URI] },
    secretHash: secret !== null ? hashSecret(secret) : null,
    registeredFrom: null,
    createdAt: now,
    updatedAt: now,
    lastUsedAt: null,
    decidedBy: null,
  });
}

/** A token endpoint refusal: HTTP 400 with this OAuth error, a description matching `description`, and no token. */
export function refusedWith(answer: Answer, error: string, description: RegExp): void {
  assert.equal(answer.status, 400, JSON.stringify(answer.body));
  assert.equal(answer.body.error, error, JSON.stringify(answer.body));
  assert.match(String(answer.body.error_description), description);
  assert.equal(answer.body.access_token, undefined);
}
