/**
 * The admin API, `{issuer}/admin/v1/...` (docs/catalog.md, "Admin API"): the
 * `mandate servers` commands over HTTP, JSON in and JSON out, acting as the
 * user a token of this gateway was issued to.
 *
 * Each request passes, in order (the first that fails answers):
 *   origin        a browser request from an origin not in gateway.allowedOrigins: 403
 *   token         a bearer token of this gateway for exactly {issuer}/admin/v1
 *                 (signature, issuer, type, lifetime, audience, revocation): else 401
 *   user          the token acts for a user (not a machine client) and holds
 *                 `mandate:admin`: else 403
 *   path, method  404, 405 (with Allow)
 *   parameters    route names and tool names bounded and checked: else 400
 *   role          `catalog.authorize(user, action)` against admin.roles: else 403
 *   body          application/json (415), at most 256 KiB (413), an object
 *                 with known fields of the right types (400)
 *   action        the catalog service, as this user: it checks the role again,
 *                 applies its rules (403 with the rule), writes the change and
 *                 its server.* event with the user as actor; a change that lost
 *                 a race or meets an open proposal is 409
 *
 * Refusals are evidence, counted so that a flood cannot fill the audit log
 * (src/audit/summary.ts): a refused token is `auth.rejected` and a refused
 * user, role, rule or origin is `authorization.denied`, each recorded as it
 * happens for the first of its kind (address or user, reason, action, route)
 * in an interval, then counted into one summary event. The same RefusalSummaries
 * the MCP endpoints use, so one interval and one cap cover both. Requests
 * without a valid token are also rate-limited per address, with the MCP
 * endpoints' limit (gateway.limits.addressRate).
 */
import { entryView } from '../catalog/view.ts';
import { isUtf8 } from 'node:buffer';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { JsonValue } from '../audit/events.ts';
import type { RefusalSummaries } from '../audit/summary.ts';
import { exportServerJson, parseServerJson, ServerJsonError } from '../catalog/server-json.ts';
import { CatalogError, type Catalog, type CatalogAction, type ProposalInput } from '../catalog/service.ts';
import { ENTRY_STATUSES, RISK_CLASSES, type CatalogEntry, type EntryStatus, type ExpectedIdentity, type RiskClass } from '../catalog/types.ts';
import type { Config } from '../config/load.ts';
import { SERVER_NAME } from '../config/schema.ts';
import { correlationId } from '../gateway/errors.ts';
import { TokenBuckets } from '../gateway/limits.ts';
import type { Identity } from '../identity/service.ts';
import { ADMIN_SCOPE, adminResource } from '../identity/scopes.ts';
import { AuthError, type Principal } from '../identity/verify.ts';
import type { Logger } from '../observability/log.ts';
import { CatalogConflictError } from '../store/catalog.ts';
import type { Store } from '../store/types.ts';

export interface AdminApiDeps {
  catalog: Catalog;
  store: Store;
  identity: Pick<Identity, 'verifier' | 'adminResourceMetadataUrl'>;
  /** The configured issuer: the API's resource is `{issuer}/admin/v1`. */
  issuer: string;
  /** The gateway settings in force (allowed origins, the per-address limit); a reload changes them. */
  settings: () => Pick<Config['gateway'], 'allowedOrigins' | 'limits'>;
  /** Counted refusals, shared with the MCP endpoints. */
  refusals: RefusalSummaries;
  log: Logger;
  /** After a change: this node re-reads the catalog now rather than at its next poll. */
  changed?: () => Promise<void>;
}

/** The largest request body, bytes. */
export const MAX_BODY_BYTES = 256 * 1024;
/** The longest tool name accepted in a path, UTF-8 bytes. */
const MAX_TOOL_BYTES = 256;
const MAX_REASON = 1000;
const MAX_TEXT = 200;
const DAY = 86_400_000;

/** A refusal answered as `{error, message, rule?}`. */
export class AdminError extends Error {
  override readonly name = 'AdminError';
  readonly status: number;
  readonly code: string;
  readonly rule: string | undefined;
  readonly headers: Record<string, string>;
  constructor(status: number, code: string, message: string, options: { rule?: string; headers?: Record<string, string> } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.rule = options.rule;
    this.headers = options.headers ?? {};
  }
}

const badRequest = (message: string): AdminError => new AdminError(400, 'invalid_request', message);

/** What one request is known to be so far, for its answer and its refusal record. */
interface Call {
  deps: AdminApiDeps;
  req: IncomingMessage;
  address: string;
  principal: Principal | null;
  action: CatalogAction | null;
  route: string | null;
}

// ---------------------------------------------------------------------------
// Answers

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) {
    if (!res.writableEnded) res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

function sendError(res: ServerResponse, error: AdminError): void {
  send(res, error.status, { error: error.code, message: error.message, ...(error.rule !== undefined ? { rule: error.rule } : {}) }, error.headers);
}

// ---------------------------------------------------------------------------
// Refusals on record

/** Only RFC 6750's characters go into a challenge. */
const headerSafe = (value: string): string => value.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '?');

function tokenFacts(principal: Principal | null): { [key: string]: JsonValue } {
  return principal === null ? {} : { client_id: principal.clientId, token: principal.tokenRef };
}

/** A refused token: auth.rejected (counted), and 401 with the challenge. */
function refuseToken(call: Call, error: AuthError): AdminError {
  const { deps, req, address } = call;
  const known = error.principal;
  const holder = known ? `${known.sub}\n${known.clientId}` : '';
  deps.refusals.record(`auth.rejected\n${address}\n${error.reason}\nadmin\n${holder}`, {
    type: 'auth.rejected',
    actor: known?.sub ?? null,
    outcome: 'denied',
    reason: error.reason,
    data: { detail: error.message, resource: adminResource(deps.issuer), method: req.method ?? null, address, ...tokenFacts(known) },
  });
  const message =
    error.reason === 'wrong_audience'
      ? `the token was issued for another resource: the admin API takes tokens issued for ${adminResource(deps.issuer)} with the scope ${ADMIN_SCOPE}`
      : error.reason === 'missing'
        ? `a bearer token for ${adminResource(deps.issuer)} (scope ${ADMIN_SCOPE}) is required`
        : error.message;
  const metadata = `resource_metadata="${deps.identity.adminResourceMetadataUrl()}", scope="${ADMIN_SCOPE}"`;
  const challenge =
    error.reason === 'missing'
      ? `Bearer ${metadata}`
      : `Bearer error="${error.reason === 'malformed' ? 'invalid_request' : 'invalid_token'}", error_description="${headerSafe(message)}", ${metadata}`;
  const code = error.reason === 'missing' ? 'unauthorized' : error.reason === 'malformed' ? 'invalid_request' : 'invalid_token';
  return new AdminError(401, code, message, { headers: { 'www-authenticate': challenge } });
}

/**
 * A refused request by someone identified (or a refused origin):
 * authorization.denied, counted per user (or address), reason, action and
 * route, so that each refusal of a kind is on record once per interval and
 * the rest are counted.
 */
function refuse(call: Call, error: AdminError, reason: string): AdminError {
  const { deps, req, address, principal, action, route } = call;
  const who = principal?.user ?? address;
  deps.refusals.record(`authorization.denied\nadmin\n${who}\n${reason}\n${action ?? ''}\n${route ?? ''}`, {
    type: 'authorization.denied',
    actor: principal?.user ?? principal?.sub ?? null,
    server: route,
    outcome: 'denied',
    reason,
    data: { detail: error.message, resource: adminResource(deps.issuer), action, method: req.method ?? null, address, ...tokenFacts(principal) },
  });
  return error;
}

// ---------------------------------------------------------------------------
// The edge: origin, token, user

/** Requests without a valid token, per address: one set of buckets per API (its deps), with the gateway's limit. */
const unauthenticated = new WeakMap<AdminApiDeps, TokenBuckets>();

function single(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  if (Array.isArray(value)) throw badRequest(`the ${name} header must appear once`);
  return value;
}

/** A page of another site could replay a token it got hold of: a browser request from an origin not allowed is refused. */
function checkOrigin(call: Call): void {
  const origin = single(call.req, 'origin');
  if (origin === undefined) return;
  const allowed = call.deps.settings().allowedOrigins;
  if (allowed.includes('*') || allowed.includes(origin)) return;
  throw refuse(call, new AdminError(403, 'forbidden', `origin ${origin.slice(0, 100)} is not allowed (gateway.allowedOrigins)`), 'origin');
}

async function authenticate(call: Call): Promise<Principal> {
  const { deps, req, address } = call;
  let principal: Principal;
  try {
    // Always a token, whatever identity.requireToken says: nobody administers the catalog anonymously.
    principal = await deps.identity.verifier.verifyResource(req.headers.authorization ?? '', adminResource(deps.issuer));
  } catch (error) {
    if (!(error instanceof AuthError)) throw error;
    let buckets = unauthenticated.get(deps);
    if (buckets === undefined) {
      buckets = new TokenBuckets(() => deps.settings().limits.addressRate);
      unauthenticated.set(deps, buckets);
    }
    if (!buckets.take(address)) {
      const retryAfter = buckets.retryAfter(address);
      deps.refusals.record(`limit.exceeded\n${address}\ngateway.limits.addressRate`, {
        type: 'limit.exceeded',
        outcome: 'denied',
        reason: 'gateway.limits.addressRate',
        data: { address, method: req.method ?? null, resource: adminResource(deps.issuer) },
      });
      throw new AdminError(429, 'rate_limited', `too many requests without a valid token (gateway.limits.addressRate); try again in ${retryAfter} s`, { headers: { 'retry-after': String(retryAfter) } });
    }
    throw refuseToken(call, error);
  }
  call.principal = principal;
  // Roles are held by users: a token that acts for no user (client credentials) can take no action here.
  if (principal.user === null) throw refuse(call, new AdminError(403, 'forbidden', 'the admin API acts for users only: this token acts for no user (a machine client holds no admin role)'), 'not_a_user');
  if (!principal.scopes.includes(ADMIN_SCOPE)) {
    const message = `the token does not hold the scope ${ADMIN_SCOPE}`;
    const challenge = `Bearer error="insufficient_scope", scope="${ADMIN_SCOPE}", resource_metadata="${deps.identity.adminResourceMetadataUrl()}", error_description="${message}"`;
    throw refuse(call, new AdminError(403, 'insufficient_scope', message, { headers: { 'www-authenticate': challenge } }), 'insufficient_scope');
  }
  return principal;
}

// ---------------------------------------------------------------------------
// Input

/** `[a-z0-9-]`, at most 63: checked before it names anything. */
function routeParam(value: string): string {
  if (!SERVER_NAME.test(value)) throw badRequest(`a route is lowercase letters, digits and hyphens ([a-z0-9-], at most 63), not "${printable(value, 80)}"`);
  return value;
}

function toolParam(value: string): string {
  if (value.length === 0 || Buffer.byteLength(value) > MAX_TOOL_BYTES || /[\p{Cc}\p{Cf}]/u.test(value)) {
    throw badRequest(`a tool name is 1 to ${MAX_TOOL_BYTES} bytes of printable characters`);
  }
  return value;
}

/** A value echoed in a message: control and format characters shown as `?`, bounded. */
function printable(value: string, max: number): string {
  const shown = value.replace(/[\p{Cc}\p{Cf}]/gu, '?');
  return shown.length > max ? `${shown.slice(0, max)}…` : shown;
}

function mediaType(value: string | undefined): { type: string; charset: string | undefined } {
  const [type = '', ...parameters] = (value ?? '').split(';');
  const charset = parameters.map((p) => /^\s*charset\s*=\s*"?([^";\s]*)"?\s*$/i.exec(p)?.[1]).find((c) => c !== undefined);
  return { type: type.trim().toLowerCase(), charset: charset?.toLowerCase() };
}

/** The body as a JSON object: application/json in UTF-8, at most MAX_BODY_BYTES. */
async function readJsonObject(req: IncomingMessage): Promise<Record<string, unknown>> {
  const { type, charset } = mediaType(single(req, 'content-type'));
  if (type !== 'application/json') throw new AdminError(415, 'unsupported_media_type', 'the body must be application/json');
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') throw new AdminError(415, 'unsupported_media_type', 'the body must be UTF-8');
  const tooLarge = () => new AdminError(413, 'payload_too_large', `the body exceeds ${MAX_BODY_BYTES} bytes`, { headers: { connection: 'close' } });
  const declared = Number(single(req, 'content-length'));
  if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) throw tooLarge();
  const bytes = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.off('data', onData);
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks, size)));
    req.once('error', () => reject(badRequest('the request body could not be read')));
  });
  if (!isUtf8(bytes)) throw badRequest('the body is not valid UTF-8');
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw badRequest('the body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw badRequest('the body must be a JSON object');
  return value as Record<string, unknown>;
}

/** Refuses any field not in `known`, naming the first few. */
function onlyFields(body: Record<string, unknown>, known: readonly string[]): void {
  const unknown = Object.keys(body).filter((key) => !known.includes(key));
  if (unknown.length > 0) {
    throw badRequest(`unknown field${unknown.length > 1 ? 's' : ''} ${unknown.slice(0, 5).map((key) => `"${printable(key, 40)}"`).join(', ')}${unknown.length > 5 ? ', …' : ''}: the fields are ${known.join(', ')}`);
  }
}

function text(body: Record<string, unknown>, field: string, max: number): string | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length === 0 || value.length > max || /[\p{Cc}\p{Cf}]/u.test(value)) {
    throw badRequest(`${field} takes 1 to ${max} printable characters`);
  }
  return value;
}

function reasonOf(body: Record<string, unknown>): string {
  const reason = text(body, 'reason', MAX_REASON);
  if (reason === undefined) throw badRequest('reason is required: say why');
  return reason;
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DATE_TIME = /^(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;

/** `expiresAt` (a date, read as midnight UTC, or an RFC 3339 date-time with an offset) or `ttl` (`30d`, `12h`, `90m`, `3600s`): exactly one. */
function expiryOf(body: Record<string, unknown>, now = Date.now()): Date {
  const { expiresAt, ttl } = body;
  if ((expiresAt === undefined) === (ttl === undefined)) throw badRequest('give exactly one of expiresAt (a date or date-time) or ttl (such as "30d")');
  if (ttl !== undefined) {
    const match = typeof ttl === 'string' ? /^(\d{1,7})([smhd])$/.exec(ttl) : null;
    const ms = match ? Number(match[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: DAY }[match[2] as 's' | 'm' | 'h' | 'd'] : Number.NaN;
    if (!(ms >= 1000 && ms <= 3650 * DAY)) throw badRequest('ttl takes a duration from 1s to 3650d, such as "30d", "12h", "90m"');
    return new Date(now + ms);
  }
  const value = typeof expiresAt === 'string' && expiresAt.length <= 40 ? expiresAt : '';
  const date = DATE.test(value) ? new Date(`${value}T00:00:00Z`) : DATE_TIME.test(value) ? new Date(value) : new Date(Number.NaN);
  // A day that does not exist (2027-02-30) is refused rather than rolled over.
  const day = DATE.exec(value)?.[0] ?? DATE_TIME.exec(value)?.[1];
  if (Number.isNaN(date.getTime()) || (DATE.test(value) && date.toISOString().slice(0, 10) !== day)) {
    throw badRequest('expiresAt takes a date (2027-03-01) or an RFC 3339 date-time with an offset (2027-03-01T12:00:00Z)');
  }
  return date;
}

function riskOf(body: Record<string, unknown>): RiskClass {
  const { risk } = body;
  if (typeof risk !== 'string' || !(RISK_CLASSES as readonly string[]).includes(risk)) throw badRequest(`risk is required: one of ${RISK_CLASSES.join(', ')}`);
  return risk as RiskClass;
}

function signatureOf(body: Record<string, unknown>): string | undefined {
  const { signature } = body;
  if (signature === undefined) return undefined;
  if (typeof signature !== 'string' || signature.length > 16_384 || !/^[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+$/.test(signature)) {
    throw badRequest('signature takes a detached compact JWS (header..signature)');
  }
  return signature;
}

/** `{spkiSha256?: [base64 SHA-256, …], spiffeId?: "spiffe://…"}`; a package identity comes from the server.json, never from here. */
function expectedIdentityOf(body: Record<string, unknown>): ExpectedIdentity | undefined {
  const value = body.expectedIdentity;
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw badRequest('expectedIdentity must be an object: {spkiSha256?, spiffeId?}');
  const identity = value as Record<string, unknown>;
  const keys = Object.keys(identity);
  const unknown = keys.filter((key) => key !== 'spkiSha256' && key !== 'spiffeId');
  if (unknown.length > 0) throw badRequest(`expectedIdentity: unknown field "${printable(unknown[0]!, 40)}": the fields are spkiSha256, spiffeId`);
  if (keys.length === 0) throw badRequest('expectedIdentity names nothing: give spkiSha256 or spiffeId, or leave it out');
  const result: ExpectedIdentity = {};
  if (identity.spkiSha256 !== undefined) {
    const pins = identity.spkiSha256;
    if (!Array.isArray(pins) || pins.length === 0 || pins.length > 16 || !pins.every((pin) => typeof pin === 'string' && /^[A-Za-z0-9+/]{43}=$/.test(pin))) {
      throw badRequest('expectedIdentity.spkiSha256 takes 1 to 16 base64 SHA-256 digests of a certificate\'s public key (44 characters ending in =)');
    }
    result.spkiSha256 = [...(pins as string[])];
  }
  if (identity.spiffeId !== undefined) {
    const id = identity.spiffeId;
    if (typeof id !== 'string' || id.length > 2048 || !/^spiffe:\/\/[a-z0-9.-]+(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$/.test(id)) {
      throw badRequest('expectedIdentity.spiffeId takes a SPIFFE ID (spiffe://trust-domain/path)');
    }
    result.spiffeId = id;
  }
  return result;
}

const PROPOSAL_FIELDS = ['serverJson', 'route', 'owner', 'risk', 'environment', 'expiresAt', 'ttl', 'team', 'contact', 'tenant', 'classification', 'signature', 'expectedIdentity', 'auth', 'reason'] as const;

/** The whole proposed record: a field left out is left out of the proposal (its `changes` show what differs from the entry in force). */
function proposalOf(body: Record<string, unknown>): { input: ProposalInput; reason: string } {
  onlyFields(body, PROPOSAL_FIELDS);
  if (body.serverJson === undefined) throw badRequest('serverJson is required: the server.json to admit');
  let serverJson;
  try {
    serverJson = parseServerJson(body.serverJson, 'serverJson');
  } catch (error) {
    if (error instanceof ServerJsonError) throw badRequest(error.message);
    throw error;
  }
  if (typeof body.route !== 'string') throw badRequest('route is required: the name the gateway serves it at ({issuer}/mcp/ROUTE)');
  const route = routeParam(body.route);
  const optional = (field: 'owner' | 'team' | 'contact' | 'tenant' | 'classification' | 'environment') => {
    const value = text(body, field, field === 'owner' ? 128 : MAX_TEXT);
    return value === undefined ? {} : { [field]: value };
  };
  const signature = signatureOf(body);
  const expectedIdentity = expectedIdentityOf(body);
  const input: ProposalInput = {
    serverJson,
    route,
    risk: riskOf(body),
    expiresAt: expiryOf(body),
    ...optional('owner'),
    ...optional('environment'),
    ...optional('team'),
    ...optional('contact'),
    ...optional('tenant'),
    ...optional('classification'),
    ...(signature !== undefined ? { signature } : {}),
    ...(expectedIdentity !== undefined ? { expectedIdentity } : {}),
    ...(body.auth !== undefined ? { auth: body.auth } : {}),
  };
  return { input, reason: reasonOf(body) };
}

// ---------------------------------------------------------------------------
// Endpoints

interface Answer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  /** The answer follows a change: this node re-reads the catalog. */
  changed?: boolean;
}

interface Endpoint {
  method: 'GET' | 'POST';
  action: CatalogAction;
  /** Query parameters it takes (any other is refused). */
  query?: readonly string[];
  run(user: string, body: Record<string, unknown> | null, query: URLSearchParams): Promise<Answer>;
}

type Decision = 'approve' | 'reject' | 'suspend' | 'retire';
const DECISIONS: readonly string[] = ['approve', 'reject', 'suspend', 'retire'];

/** The endpoints at `segments` (after /admin/v1), by method; null for an unknown path. */
function endpointsAt(deps: AdminApiDeps, segments: string[], call: Call): Endpoint[] | null {
  const { catalog, store } = deps;
  if (segments[0] !== 'servers') return null;
  if (segments.length === 1) {
    return [
      {
        method: 'GET',
        action: 'read',
        query: ['status'],
        run: async (_user, _body, query) => {
          const statuses = query.getAll('status');
          if (statuses.length > 1) throw badRequest('status may be given once');
          const status = statuses[0];
          if (status !== undefined && !(ENTRY_STATUSES as readonly string[]).includes(status)) throw badRequest(`status is one of ${ENTRY_STATUSES.join(', ')}`);
          const entries = (await store.catalog.listEntries()).filter((entry) => status === undefined || entry.governance.status === (status as EntryStatus));
          return { status: 200, body: { servers: entries.map(entryView) } };
        },
      },
      {
        method: 'POST',
        action: 'propose',
        run: async (user, body) => {
          const { input, reason } = proposalOf(body!);
          call.route = input.route;
          const proposal = await catalog.propose(input, user, reason);
          return { status: 201, body: proposal, headers: { location: `${adminResource(deps.issuer)}/servers/${input.route}` }, changed: true };
        },
      },
    ];
  }
  const route = routeParam(segments[1]!);
  call.route = route;
  if (segments.length === 2) {
    return [
      {
        method: 'GET',
        action: 'read',
        run: async () => {
          const entry = await catalog.get(route);
          const openProposal = await store.catalog.openProposal(route);
          const history = await catalog.history(route);
          return { status: 200, body: { ...entryView(entry), serverJson: entry.serverJson, openProposal, history } };
        },
      },
    ];
  }
  const verb = segments[2]!;
  if (segments.length === 3 && DECISIONS.includes(verb)) {
    const decision = verb as Decision;
    return [
      {
        method: 'POST',
        action: decision,
        run: async (user, body) => {
          onlyFields(body!, ['reason']);
          const reason = reasonOf(body!);
          const result = decision === 'reject' ? await catalog.reject(route, user, reason) : entryView(await catalog[decision](route, user, reason));
          return { status: 200, body: result, changed: true };
        },
      },
    ];
  }
  if (segments.length === 3 && verb === 'renew') {
    return [
      {
        method: 'POST',
        action: 'renew',
        run: async (user, body) => {
          onlyFields(body!, ['expiresAt', 'ttl', 'reason']);
          const expiresAt = expiryOf(body!);
          const entry = await catalog.renew(route, expiresAt, user, reasonOf(body!));
          return { status: 200, body: entryView(entry), changed: true };
        },
      },
    ];
  }
  if (segments.length === 3 && verb === 'export') {
    const run = async (): Promise<Answer> => {
      const entry = await catalog.get(route);
      return { status: 200, body: exportServerJson(entry.serverJson, entry.governance) };
    };
    return [{ method: 'GET', action: 'read', run }];
  }
  if (segments.length === 3 && verb === 'pins') {
    const run = async (): Promise<Answer> => {
      const entry = await catalog.get(route);
      return { status: 200, body: { route, pins: entry.pins.map((pin) => ({ name: pin.name, hash: pin.hash })) } };
    };
    return [{ method: 'GET', action: 'read', run }];
  }
  if (segments.length === 3 && verb === 'drift') {
    const run = async (): Promise<Answer> => {
      await catalog.get(route);
      const drift = (await store.catalog.listDrift(route)).map((d) => ({ name: d.tool, hash: d.hash, kind: d.kind, diff: d.diff, detectedAt: d.detectedAt }));
      return { status: 200, body: { route, drift } };
    };
    return [{ method: 'GET', action: 'read', run }];
  }
  if (segments.length === 5 && verb === 'pins' && segments[4] === 'approve') {
    const tool = toolParam(segments[3]!);
    return [
      {
        method: 'POST',
        action: 'pins',
        run: async (user, body) => {
          onlyFields(body!, ['hash', 'reason']);
          const { hash } = body!;
          if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) throw badRequest('hash is required: the reviewed definition\'s SHA-256, 64 lowercase hex digits (GET …/drift)');
          const entry = await catalog.approvePin(route, tool, hash, user, reasonOf(body!));
          return { status: 200, body: { route, tool, hash, pinnedTools: entry.pins.length }, changed: true };
        },
      },
    ];
  }
  return null;
}

/** Catalog rules about the state of an entry or its proposal: the request conflicts with what is there now. */
const CONFLICT_RULES = new Set(['proposal', 'status']);

/** A refusal by the catalog service, as an answer (and on record when it is a refusal of authority). */
function catalogRefusal(call: Call, error: CatalogError): AdminError {
  if (error.rule === 'unknown') return new AdminError(404, 'not_found', error.message, { rule: error.rule });
  if (CONFLICT_RULES.has(error.rule)) return new AdminError(409, 'conflict', error.message, { rule: error.rule });
  const code = error.rule === 'roles' ? 'forbidden' : 'refused';
  return refuse(call, new AdminError(403, code, error.message, { rule: error.rule }), error.rule);
}

async function answer(call: Call, pathAndQuery: string): Promise<Answer> {
  const { deps, req } = call;
  checkOrigin(call);
  const principal = await authenticate(call);
  const user = principal.user!;
  const at = pathAndQuery.indexOf('?');
  const path = at === -1 ? pathAndQuery : pathAndQuery.slice(0, at);
  const query = new URLSearchParams(at === -1 ? '' : pathAndQuery.slice(at + 1));
  const rest = path.startsWith('/admin/v1/') ? path.slice('/admin/v1/'.length) : '';
  if (rest.length > 2048) throw new AdminError(404, 'not_found', 'no such path in the admin API');
  let segments: string[];
  try {
    segments = rest.split('/').map((segment) => decodeURIComponent(segment));
  } catch {
    throw badRequest('the path has a malformed percent-escape');
  }
  if (segments.some((segment) => segment === '')) throw new AdminError(404, 'not_found', 'no such path in the admin API');
  const endpoints = endpointsAt(deps, segments, call);
  if (endpoints === null) throw new AdminError(404, 'not_found', 'no such path in the admin API');
  const endpoint = endpoints.find((candidate) => candidate.method === req.method);
  if (endpoint === undefined) {
    throw new AdminError(405, 'method_not_allowed', `method ${printable(String(req.method), 16)} is not allowed here`, { headers: { allow: endpoints.map((e) => e.method).join(', ') } });
  }
  call.action = endpoint.action;
  for (const name of new Set(query.keys())) {
    if (!(endpoint.query ?? []).includes(name)) throw badRequest(`unknown query parameter "${printable(name, 40)}"${endpoint.query ? `: the parameters are ${endpoint.query.join(', ')}` : ''}`);
  }
  // The role first: a user who may not take the action is refused before the body is read.
  await deps.catalog.authorize(user, endpoint.action);
  const body = endpoint.method === 'POST' ? await readJsonObject(req) : null;
  const result = await endpoint.run(user, body, query);
  if (result.changed && deps.changed) {
    // The change is made and on record; the poll would find it within a second anyway.
    await deps.changed().catch((error: unknown) => deps.log.warn({ err: String(error) }, 'could not re-read the catalog after an admin API change'));
  }
  return result;
}

/**
 * One request under `{issuer}/admin/v1`. `pathAndQuery` is the request
 * target after the issuer's path (`/admin/v1/servers?status=approved`);
 * `address` the client's address (trusted proxies applied).
 */
export async function handleAdminRequest(deps: AdminApiDeps, req: IncomingMessage, res: ServerResponse, pathAndQuery: string, address: string): Promise<void> {
  const call: Call = { deps, req, address, principal: null, action: null, route: null };
  try {
    const result = await answer(call, pathAndQuery);
    send(res, result.status, result.body, result.headers);
  } catch (error) {
    if (error instanceof AdminError) return sendError(res, error);
    if (error instanceof CatalogError) return sendError(res, catalogRefusal(call, error));
    if (error instanceof CatalogConflictError) return sendError(res, new AdminError(409, 'conflict', `${error.message}: the entry changed meanwhile; read it again and retry`, { rule: 'conflict' }));
    // Anything else: a generic answer, the detail in the operational log under one correlation id.
    const id = correlationId();
    deps.log.error({ correlationId: id, err: error instanceof Error ? `${error.name}: ${error.message}` : String(error), stack: error instanceof Error ? error.stack : undefined }, 'internal error in the admin API');
    sendError(res, new AdminError(500, 'internal_error', `internal error (correlation id ${id})`));
  }
}
