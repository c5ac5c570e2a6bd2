/**
 * Client registration intake (RFC 7591), in front of the authorization
 * server's own registration endpoint. Steps, in order:
 *   admit (mode, initial access token present) → limitRate → readJson →
 *   applyStatement (trusted software statement) → checkMetadata →
 *   spendToken (one use of the initial access token) → forwardable
 * A refusal answers with the RFC 7591 error and registers nothing.
 */
import type { Context, Next } from 'koa';
import type { Config } from '../config/load.ts';
import type { ClientClass, ClientStatus, Store } from '../store/types.ts';
import { requestNotes } from './context.ts';
import { isRoute, ROUTES } from './routes.ts';
import { hashSecret } from './secrets.ts';
import { OAuthRefusal } from './errors.ts';
import { TOOL_NAME, type Servers } from './scopes.ts';
import { bearerToken } from './verify.ts';
import { TOKEN_EXCHANGE } from './exchange-grant.ts';
import { JWT_BEARER } from './id-jag-grant.ts';
import { LOOPBACK_HOSTS } from '../config/loopback.ts';
import { createLocalJWKSet, decodeJwt, jwtVerify, type JSONWebKeySet } from 'jose';

/** A registration refused: answered as JSON (RFC 7591 §3.2.2). */
export class IntakeError extends OAuthRefusal {
  override name = 'IntakeError';
}

const AUTH_METHODS = new Set(['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt']);
const INTERACTIVE_GRANTS = new Set(['authorization_code', 'refresh_token']);
/** Grants either class may add, for a client that authenticates: token exchange (exchange-grant.ts) and ID-JAG (id-jag-grant.ts). */
const ADDED_GRANTS = new Set([TOKEN_EXCHANGE, JWT_BEARER]);

async function readJson(ctx: Context, maxBytes: number): Promise<Record<string, unknown>> {
  if (!ctx.is('application/json')) throw new IntakeError(400, 'invalid_client_metadata', 'the registration body must be application/json');
  const declared = ctx.request.length;
  if (declared !== undefined && declared > maxBytes) throw new IntakeError(413, 'invalid_client_metadata', `the registration body is larger than ${maxBytes} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new IntakeError(413, 'invalid_client_metadata', `the registration body is larger than ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  const raw = Buffer.concat(chunks);
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new IntakeError(400, 'invalid_client_metadata', 'the registration body is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new IntakeError(400, 'invalid_client_metadata', 'the registration body must be a JSON object');
  return value as Record<string, unknown>;
}

function stringList(metadata: Record<string, unknown>, key: string, fallback: string[]): string[] {
  const value = metadata[key];
  if (value === undefined) return fallback;
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) throw new IntakeError(400, 'invalid_client_metadata', `${key} must be an array of strings`);
  return value as string[];
}

/** https on an allowed origin, or http on a loopback host (native clients, RFC 8252). */
export function redirectUriAllowed(uri: string, allowedOrigins: readonly string[]): boolean {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return false;
  }
  if (url.hash || url.username || url.password) return false;
  if (url.protocol === 'http:') return LOOPBACK_HOSTS.has(url.hostname);
  if (url.protocol === 'https:') return LOOPBACK_HOSTS.has(url.hostname) || allowedOrigins.includes(url.origin);
  return false;
}

/** Which class the metadata asks for; refuses mixtures and unsafe combinations. */
export function classify(metadata: Record<string, unknown>): ClientClass {
  const grants = stringList(metadata, 'grant_types', ['authorization_code']);
  const method = metadata.token_endpoint_auth_method ?? 'client_secret_basic';
  if (typeof method !== 'string' || !AUTH_METHODS.has(method)) {
    throw new IntakeError(400, 'invalid_client_metadata', `token_endpoint_auth_method must be one of ${[...AUTH_METHODS].join(', ')}`);
  }
  // Token exchange (delegation) and the jwt-bearer grant (ID-JAG) may come with either class, for a client that authenticates.
  const added = grants.find((grant) => ADDED_GRANTS.has(grant));
  if (added !== undefined && method === 'none') throw new IntakeError(400, 'invalid_client_metadata', `${added} needs a confidential client (token_endpoint_auth_method other than none)`);
  if (grants.includes('client_credentials')) {
    if (grants.some((grant) => grant !== 'client_credentials' && !ADDED_GRANTS.has(grant))) {
      throw new IntakeError(400, 'invalid_client_metadata', 'a machine client uses client_credentials only (and token exchange or jwt-bearer)');
    }
    const responseTypes = stringList(metadata, 'response_types', []);
    if (responseTypes.length > 0) throw new IntakeError(400, 'invalid_client_metadata', 'a machine client has no response_types');
    if (method === 'none') throw new IntakeError(400, 'invalid_client_metadata', 'client_credentials needs a confidential client (token_endpoint_auth_method other than none)');
    return 'machine';
  }
  const unknown = grants.filter((grant) => !INTERACTIVE_GRANTS.has(grant) && !ADDED_GRANTS.has(grant));
  if (unknown.length > 0 || !grants.includes('authorization_code')) {
    throw new IntakeError(400, 'invalid_client_metadata', `grant_types must be authorization_code (and refresh_token), or client_credentials alone; either may add ${TOKEN_EXCHANGE} or ${JWT_BEARER}`);
  }
  const responseTypes = stringList(metadata, 'response_types', ['code']);
  if (responseTypes.length !== 1 || responseTypes[0] !== 'code') throw new IntakeError(400, 'invalid_client_metadata', 'response_types must be ["code"]');
  return 'interactive';
}

export interface IntakeDeps {
  config: Config;
  store: Store;
  servers: Servers;
}

type Rules = Config['identity']['registration'];

const TOKEN_CHALLENGE = { 'www-authenticate': 'Bearer error="invalid_token"' };

/** Step: the deployment's registration mode. Returns the hash of the initial access token the mode needs, or null. */
function admit(ctx: Context, rules: Rules): string | null {
  if (rules.mode === 'closed') throw new IntakeError(403, 'access_denied', 'client registration is closed here; ask an administrator to register the client');
  if (rules.mode !== 'initial-access-token') return null;
  const token = bearerToken(ctx.get('authorization'));
  if (token === null) throw new IntakeError(401, 'invalid_token', 'registration needs an initial access token (Authorization: Bearer …) from `mandate clients token create`', TOKEN_CHALLENGE);
  return hashSecret(token);
}

/** Step: spend one use of the initial access token, once everything else checked out (a refused registration costs none). */
async function spendToken(tokenHash: string, store: Store): Promise<void> {
  if (!(await store.identity.useRegistrationToken(tokenHash, Date.now()))) {
    throw new IntakeError(401, 'invalid_token', 'the initial access token is unknown, expired or used up', TOKEN_CHALLENGE);
  }
}

/** Step: at most so many registrations per address per hour. */
async function limitRate(address: string, rules: Rules, store: Store): Promise<void> {
  const recent = await store.identity.countClientsFrom(address, Date.now() - 3_600_000);
  if (recent >= rules.maxPerAddressPerHour) {
    throw new IntakeError(429, 'temporarily_unavailable', 'too many registrations from this address; try again later', { 'retry-after': '3600' });
  }
}

const STATEMENT_ALGS = ['ES256', 'ES384', 'PS256', 'RS256', 'EdDSA', 'Ed25519'];
/** Metadata a registration with a statement may carry only inside the statement. */
const VOUCHED_ONLY = ['redirect_uris', 'grant_types', 'response_types', 'token_endpoint_auth_method', 'jwks', 'jwks_uri', 'scope'];
/** Registered claims of the statement itself, not client metadata. */
const STATEMENT_ONLY = new Set(['iss', 'iat', 'exp', 'nbf', 'jti', 'aud', 'sub']);

/**
 * Step: a software statement (RFC 7591 §2.3) from a trusted publisher. Its
 * claims take precedence over the same fields sent in the clear. Returns the
 * metadata to use and the publisher, or null without a statement.
 */
async function applyStatement(metadata: Record<string, unknown>, rules: Rules): Promise<{ metadata: Record<string, unknown>; publisher: string } | null> {
  const statement = metadata.software_statement;
  if (statement === undefined) return null;
  if (typeof statement !== 'string') throw new IntakeError(400, 'invalid_software_statement', 'software_statement must be a signed JWT');
  let issuer: unknown;
  try {
    issuer = decodeJwt(statement).iss;
  } catch {
    throw new IntakeError(400, 'invalid_software_statement', 'software_statement is not a JWT');
  }
  const trusted = rules.softwareStatementIssuers.find((candidate) => candidate.issuer === issuer);
  if (!trusted) throw new IntakeError(400, 'unapproved_software_statement', 'the software statement is not from a publisher this deployment trusts');
  let claims: Record<string, unknown>;
  try {
    ({ payload: claims } = await jwtVerify(statement, createLocalJWKSet(trusted.jwks as unknown as JSONWebKeySet), { issuer: trusted.issuer, algorithms: STATEMENT_ALGS }));
  } catch {
    throw new IntakeError(400, 'invalid_software_statement', 'the software statement signature or validity period does not check out');
  }
  const { software_statement: _statement, ...plain } = metadata;
  const vouched = Object.fromEntries(Object.entries(claims).filter(([key]) => !STATEMENT_ONLY.has(key)));
  // A statement ships with the software and may be public: whoever sends it must not add
  // where codes go or how the client authenticates beyond what the publisher signed.
  const unvouched = VOUCHED_ONLY.filter((key) => key in plain && !(key in vouched));
  if (unvouched.length > 0) throw new IntakeError(400, 'invalid_software_statement', `the software statement does not vouch for ${unvouched.join(', ')}; send them inside it or not at all`);
  const grants = Array.isArray(vouched.grant_types) ? vouched.grant_types : [];
  if (!('redirect_uris' in vouched) && !grants.includes('client_credentials')) {
    throw new IntakeError(400, 'invalid_software_statement', 'the software statement must name the redirect_uris (or the client_credentials grant of a machine client)');
  }
  return { metadata: { ...plain, ...vouched }, publisher: trusted.issuer };
}

/** Step: class, redirect URIs and authentication method. */
function checkMetadata(metadata: Record<string, unknown>, rules: Rules): ClientClass {
  const clientClass = classify(metadata);
  if (!rules.allowedClasses.includes(clientClass)) throw new IntakeError(400, 'invalid_client_metadata', `${clientClass} clients may not register here`);
  const redirects = stringList(metadata, 'redirect_uris', []);
  if (clientClass === 'interactive' && redirects.length === 0) throw new IntakeError(400, 'invalid_redirect_uri', 'redirect_uris is required');
  if (clientClass === 'machine' && redirects.length > 0) throw new IntakeError(400, 'invalid_redirect_uri', 'a machine client has no redirect_uris');
  const refused = redirects.find((uri) => !redirectUriAllowed(uri, rules.allowedRedirectOrigins));
  if (refused !== undefined) {
    throw new IntakeError(400, 'invalid_redirect_uri', `redirect URI ${refused.slice(0, 200)} is not allowed: use http on a loopback address, or https on an allowed origin`);
  }
  return clientClass;
}

/**
 * Step: what the authorization server's own parser gets. MCP scopes are per
 * server (granted per resource at authorization), not client metadata it
 * knows: they stay out of what it validates; any other scope it still checks.
 * A machine client has no front channel: say so, or it asks for redirect URIs.
 */
function forwardable(metadata: Record<string, unknown>, clientClass: ClientClass, servers: Servers): Buffer {
  let forwarded = metadata;
  if (typeof metadata.scope === 'string') {
    const names = new Set(servers.list().map((server) => server.name));
    const isMcp = (word: string): boolean => {
      const match = /^mcp:([^:]+)(?::tool:(.+))?$/.exec(word);
      return !!match && names.has(match[1]!) && (match[2] === undefined || TOOL_NAME.test(match[2]));
    };
    const kept = metadata.scope.split(' ').filter((word) => word && !isMcp(word));
    const { scope: _scope, ...rest } = metadata;
    forwarded = kept.length > 0 ? { ...rest, scope: kept.join(' ') } : rest;
  }
  return Buffer.from(JSON.stringify(clientClass === 'machine' ? { ...forwarded, response_types: [], redirect_uris: [] } : forwarded));
}

/** The koa step; everything but POST to the registration route passes through. */
export function registrationIntake(deps: IntakeDeps): (ctx: Context, next: Next) => Promise<void> {
  const rules = deps.config.identity.registration;
  return async (ctx, next) => {
    if (!isRoute(ctx.path, ROUTES.registration)) return next();
    if (ctx.method !== 'POST') throw new IntakeError(405, 'invalid_request', 'registration accepts POST only', { allow: 'POST' });
    const notes = requestNotes.getStore();
    const tokenHash = admit(ctx, rules);
    await limitRate(notes?.address ?? ctx.ip, rules, deps.store);
    let metadata = await readJson(ctx, rules.maxBodyBytes);
    const vouched = await applyStatement(metadata, rules);
    if (vouched) metadata = vouched.metadata;
    const clientClass = checkMetadata(metadata, rules);
    if (tokenHash !== null) await spendToken(tokenHash, deps.store);
    const owner = vouched ? `software:${vouched.publisher}` : tokenHash !== null ? 'registration-token' : null;
    // A trusted publisher's statement skips approval; so do the stricter and the development modes.
    const status: ClientStatus = rules.mode === 'approval' && !vouched ? 'pending' : 'active';
    if (notes) notes.registration = { status, class: clientClass, owner, via: vouched ? 'software-statement' : rules.mode };
    // The body is read: hand the bytes to the authorization server's own parser.
    (ctx.req as unknown as { body: Buffer }).body = forwardable(metadata, clientClass, deps.servers);
    await next();
    if (ctx.status === 201 && ctx.body && typeof ctx.body === 'object') {
      (ctx.body as Record<string, unknown>).client_status = status;
    }
  };
}
