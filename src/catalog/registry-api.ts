/**
 * The catalog as a read-only MCP sub-registry: the approved, unexpired
 * versions answered in the shape of the MCP registry's stable `/v0.1` API
 * (docs/catalog.md, "The catalog as a sub-registry"), so that a client written for the registry
 * can list what this organization allows.
 *
 * A pure function of the request, the versions the caller may see and the
 * time: no server, no store. The gateway serves it at `{issuer}/v0.1/...`
 * and passes only the versions the caller is allowed to see; this module
 * decides which of them are servable (approved, not expired) and how they
 * are paged.
 *
 * What follows the registry, and what does not:
 * - `GET` (and `HEAD`, which the registry's router answers like `GET`
 *   without a body) on three paths; another method on one of them is 405
 *   with `Allow`, an unknown path 404.
 * - List parameters `cursor`, `limit` (default 30, 1 to 100: out of range or
 *   not an integer is 422 "validation failed", as the registry answers),
 *   `search` (case-insensitive substring of the name, taken literally),
 *   `updated_since` (RFC 3339; strictly after; a bad one is 400) and
 *   `version` (`latest`, or an exact version). An empty parameter is as if
 *   absent; of a repeated one the first counts. Others (`include_deleted`)
 *   are ignored: nothing deleted is ever served.
 * - `metadata.count` is the number of items in this page; `nextCursor` is
 *   there only when another page has items (the registry sends one whenever
 *   a page is full, so its last page can be empty; "absent or empty means
 *   done" holds for both).
 * - Errors are RFC 9457 problem documents (`title`, `status`, `detail`, and
 *   `errors` for a parameter that failed validation) with the content type
 *   `application/problem+json`, as the registry sends them.
 * - Each item's status fields travel under `dev.mandate/registry`, not the
 *   registry's `io.modelcontextprotocol.registry/official`: same field names,
 *   plus the governance a client may act on (route, environment, risk,
 *   owner, expiry).
 */
import { Buffer } from 'node:buffer';
import type { JsonValue } from '../audit/events.ts';
import { GOVERNANCE_META_KEY, type EntryStatus, type Governance, type RiskClass, type ServerJson } from './types.ts';

/** The `_meta` key of Mandate's status fields on each item (the registry's own is `OFFICIAL_META_KEY`). */
export const REGISTRY_META_KEY = 'dev.mandate/registry';
/** The path prefix answered: the registry's stable API version. */
export const REGISTRY_API_PREFIX = '/v0.1';
/** Items per page when `limit` is not given, and the most a page holds: the registry's numbers. */
export const DEFAULT_LIMIT = 30;
export const MAX_LIMIT = 100;
/** The registry's bound on a server name (server.json `name`, at most 200 characters). */
export const MAX_NAME_LENGTH = 200;
/** The registry's bound on a version string. */
export const MAX_VERSION_LENGTH = 255;
/** `search` is a substring of a name: a longer one is refused rather than scanned for. */
export const MAX_SEARCH_LENGTH = MAX_NAME_LENGTH;
/** A cursor holds one sort key (name, version, time, route): anything much longer is not one of ours. */
const MAX_CURSOR_LENGTH = 2048;

/** The methods answered; every path answered takes both. */
const ALLOWED = 'GET, HEAD';

/** One approved version of a server, as the catalog hands it over. */
export interface ApprovedVersion {
  /** The server.json as submitted. */
  serverJson: ServerJson;
  /** Mandate's record: only `approved` and unexpired versions are served. */
  governance: Governance;
  /** ISO 8601: when this version was approved. */
  publishedAt: string;
  /** ISO 8601: the last change of this version's record (`updated_since` filters on it). */
  updatedAt: string;
  /** The newest approved version of this server name (see `latest` below when it is not servable). */
  isLatest: boolean;
}

/** An HTTP answer for the gateway to write as it is (for `HEAD`, `body` is null: write none). */
export interface RegistryAnswer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/** Mandate's status fields of one item: the registry's names, and the governance a client may act on. */
export interface RegistryItemMeta {
  status: EntryStatus;
  publishedAt: string;
  updatedAt: string;
  isLatest: boolean;
  route: string;
  environment: string;
  risk: RiskClass;
  owner: string;
  expiresAt: string | null;
}

/** One item: the server.json as submitted (less Mandate's governance `_meta`), and its status fields. */
export interface RegistryServerResponse {
  server: ServerJson;
  _meta: { [REGISTRY_META_KEY]: RegistryItemMeta };
}

export interface RegistryServerList {
  servers: RegistryServerResponse[];
  metadata: { nextCursor?: string; count: number };
}

/** The error body: an RFC 9457 problem document, as the registry sends it. */
export interface RegistryProblem {
  title: string;
  status: number;
  detail: string;
  errors?: { message: string; location: string; value?: JsonValue }[];
}

// ---------------------------------------------------------------------------
// Version order.
//
// Items are listed by name, then version, then route; the cursor is the last
// item's key, and the next page starts after it. That needs a total order on
// keys that does not depend on what else is listed, so versions compare as:
// semantic versions first, by SemVer 2.0.0 precedence; then every other
// version string, by publishedAt; remaining ties by the version string
// itself (build metadata, equal times). Comparing semver "when both parse,
// else by publishedAt" pair by pair would not be transitive (1.0.0 < 2.0.0
// by precedence, yet both could sit either side of a non-semver version by
// time), and a page boundary could then skip or repeat items.
// ---------------------------------------------------------------------------

interface SemVer {
  core: [string, string, string];
  pre: string[];
}

const SEMVER_IDENTIFIER = '(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)';
const SEMVER = new RegExp(
  `^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)` +
    `(?:-(${SEMVER_IDENTIFIER}(?:\\.${SEMVER_IDENTIFIER})*))?` +
    `(?:\\+[0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*)?$`,
);

function parseSemVer(version: string): SemVer | null {
  const match = SEMVER.exec(version);
  if (!match) return null;
  return { core: [match[1] as string, match[2] as string, match[3] as string], pre: match[4] === undefined ? [] : match[4].split('.') };
}

const NUMERIC = /^[0-9]+$/;

/** Decimal strings without leading zeros (as SemVer requires) compare by length, then digit by digit: no size limit. */
function compareNumeric(a: string, b: string): number {
  return a.length !== b.length ? Math.sign(a.length - b.length) : compareText(a, b);
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareSemVer(a: SemVer, b: SemVer): number {
  for (let i = 0; i < 3; i++) {
    const order = compareNumeric(a.core[i] as string, b.core[i] as string);
    if (order !== 0) return order;
  }
  // A release ranks above its pre-releases.
  if (a.pre.length === 0 || b.pre.length === 0) return Math.sign(b.pre.length - a.pre.length);
  for (let i = 0; i < Math.min(a.pre.length, b.pre.length); i++) {
    const x = a.pre[i] as string;
    const y = b.pre[i] as string;
    const xNumeric = NUMERIC.test(x);
    const yNumeric = NUMERIC.test(y);
    const order = xNumeric && yNumeric ? compareNumeric(x, y) : xNumeric ? -1 : yNumeric ? 1 : compareText(x, y);
    if (order !== 0) return order;
  }
  return Math.sign(a.pre.length - b.pre.length);
}

/** The sort key of an item, and what a cursor carries. */
interface SortKey {
  name: string;
  version: string;
  /** publishedAt in milliseconds (0 when unparseable): orders the versions that are not semantic versions. */
  published: number;
  route: string;
  semver: SemVer | null;
}

function compareVersions(a: SortKey, b: SortKey): number {
  if (a.semver && b.semver) {
    const order = compareSemVer(a.semver, b.semver);
    if (order !== 0) return order;
  } else if (a.semver || b.semver) {
    return a.semver ? -1 : 1;
  } else if (a.published !== b.published) {
    return Math.sign(a.published - b.published);
  }
  return compareText(a.version, b.version);
}

function compareKeys(a: SortKey, b: SortKey): number {
  return compareText(a.name, b.name) || compareVersions(a, b) || compareText(a.route, b.route);
}

// ---------------------------------------------------------------------------
// What is served.
// ---------------------------------------------------------------------------

interface Served extends SortKey {
  entry: ApprovedVersion;
  updated: number;
  /** Whether this version is the name's latest among the servable ones (see `markLatest`). */
  latest: boolean;
}

function millis(iso: string): number {
  const value = Date.parse(iso);
  return Number.isNaN(value) ? 0 : value;
}

/**
 * The servable versions: approved, and either without expiry or expiring
 * after `now` (an expiry that cannot be read counts as passed).
 */
function servable(versions: readonly ApprovedVersion[], now: Date): Served[] {
  const at = now.getTime();
  const served: Served[] = [];
  for (const entry of versions) {
    const { status, expiresAt, route } = entry.governance;
    if (status !== 'approved') continue;
    if (expiresAt !== null && !(Date.parse(expiresAt) > at)) continue;
    const { name, version } = entry.serverJson;
    served.push({ entry, name, version, route, published: millis(entry.publishedAt), updated: Date.parse(entry.updatedAt), semver: parseSemVer(version), latest: false });
  }
  markLatest(served);
  return served;
}

/**
 * A name's latest version is the one the catalog marks latest when that one
 * is servable; when it is not (suspended, expired), the servable version
 * approved most recently, so that `latest` never points at nothing while
 * older versions are served. Every servable entry of that version string is
 * latest (the same version may be approved under more than one route).
 */
function markLatest(served: Served[]): void {
  const byName = new Map<string, Served[]>();
  for (const item of served) {
    const group = byName.get(item.name);
    if (group) group.push(item);
    else byName.set(item.name, [item]);
  }
  for (const group of byName.values()) {
    const marked = group.filter((item) => item.entry.isLatest);
    const candidates = marked.length > 0 ? marked : group;
    let newest = candidates[0] as Served;
    for (const item of candidates) if (item.published > newest.published || (item.published === newest.published && compareVersions(item, newest) > 0)) newest = item;
    for (const item of group) item.latest = item.version === newest.version;
  }
}

/** The answer's item: the server.json as submitted, less the governance `_meta` (and `_meta` itself if that was all it held). */
function toResponse(served: Served): RegistryServerResponse {
  const { entry } = served;
  const server = structuredClone(entry.serverJson);
  const meta = server._meta;
  if (typeof meta === 'object' && meta !== null && !Array.isArray(meta) && Object.hasOwn(meta, GOVERNANCE_META_KEY)) {
    delete meta[GOVERNANCE_META_KEY];
    if (Object.keys(meta).length === 0) delete server._meta;
  }
  const { governance } = entry;
  return {
    server,
    _meta: {
      [REGISTRY_META_KEY]: {
        status: governance.status,
        publishedAt: entry.publishedAt,
        updatedAt: entry.updatedAt,
        isLatest: served.latest,
        route: governance.route,
        environment: governance.environment,
        risk: governance.risk,
        owner: governance.owner,
        expiresAt: governance.expiresAt,
      },
    },
  };
}

// ---------------------------------------------------------------------------
// Cursor: base64url of the JSON array [1, name, version, publishedMs, route],
// the key of the last item of the page. Opaque to clients; the leading 1 is
// the format, so that a later one can be told apart.
// ---------------------------------------------------------------------------

function encodeCursor(key: SortKey): string {
  return Buffer.from(JSON.stringify([1, key.name, key.version, key.published, key.route]), 'utf8').toString('base64url');
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

function decodeCursor(cursor: string): SortKey | null {
  if (cursor.length > MAX_CURSOR_LENGTH || !BASE64URL.test(cursor)) return null;
  const bytes = Buffer.from(cursor, 'base64url');
  // Only the exact text this module wrote: no stray trailing bits, no padding variants.
  if (bytes.toString('base64url') !== cursor) return null;
  let value: unknown;
  try {
    value = JSON.parse(STRICT_UTF8.decode(bytes));
  } catch {
    return null;
  }
  if (!Array.isArray(value) || value.length !== 5 || value[0] !== 1) return null;
  const [, name, version, published, route] = value as unknown[];
  if (typeof name !== 'string' || typeof version !== 'string' || typeof route !== 'string') return null;
  if (typeof published !== 'number' || !Number.isFinite(published)) return null;
  return { name, version, published, route, semver: parseSemVer(version) };
}

// ---------------------------------------------------------------------------
// Parameters.
// ---------------------------------------------------------------------------

const RFC3339 = /^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))$/;

/**
 * An RFC 3339 date-time (full date, `T`, full time with seconds, offset) in
 * milliseconds, fractions past the millisecond dropped: exact for "strictly
 * after" against millisecond times. Null when it is not one (a date alone,
 * a missing offset, a 13th month, a 31st of April).
 */
export function parseRfc3339(text: string): number | null {
  const match = RFC3339.exec(text);
  if (!match) return null;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const daysInMonth = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1] ?? 0;
  if (day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) return null;
  let offset = 0;
  if (match[8] === undefined) {
    const offsetHours = Number(match[10]);
    const offsetMinutes = Number(match[11]);
    if (offsetHours > 23 || offsetMinutes > 59) return null;
    offset = (match[9] === '-' ? -1 : 1) * (offsetHours * 60 + offsetMinutes) * 60_000;
  }
  const millisecond = Number((match[7] ?? '.').slice(1, 4).padEnd(3, '0'));
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day); // not Date.UTC: it maps years 0–99 to 1900–1999
  date.setUTCHours(hour, minute, second, millisecond);
  return date.getTime() - offset;
}

/** The query's parameters, decoded (`+` is a space); of a repeated one the first counts. Null when an escape is malformed. */
function parseQuery(query: string): Map<string, string> | null {
  const params = new Map<string, string>();
  for (const pair of query.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = decode((eq < 0 ? pair : pair.slice(0, eq)).replaceAll('+', ' '));
    const value = decode((eq < 0 ? '' : pair.slice(eq + 1)).replaceAll('+', ' '));
    if (key === null || value === null) return null;
    if (!params.has(key)) params.set(key, value);
  }
  return params;
}

function decode(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Answers.
// ---------------------------------------------------------------------------

/*
 * Never cached, by anyone: the list reflects approvals, suspensions and
 * expiries that change at any moment (an entry drops out the second it
 * expires), and what is listed depends on who asks.
 */
const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' } as const;
const PROBLEM_HEADERS = { 'content-type': 'application/problem+json', 'cache-control': 'no-store' } as const;

const TITLES: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 422: 'Unprocessable Entity' };

function ok(body: RegistryServerList | RegistryServerResponse): RegistryAnswer {
  return { status: 200, headers: { ...JSON_HEADERS }, body };
}

function problem(status: number, detail: string, extra: { errors?: RegistryProblem['errors']; headers?: Record<string, string> } = {}): RegistryAnswer {
  const body: RegistryProblem = { title: TITLES[status] ?? 'Error', status, detail };
  if (extra.errors) body.errors = extra.errors;
  return { status, headers: { ...PROBLEM_HEADERS, ...extra.headers }, body };
}

/** A parameter that failed validation: 422, as the registry answers for `limit`. */
function invalid(location: string, message: string, value: JsonValue): RegistryAnswer {
  return problem(422, 'validation failed', { errors: [{ message, location, value }] });
}

const SERVER_NOT_FOUND = 'Server not found';

type Route = { kind: 'list' } | { kind: 'versions'; name: string } | { kind: 'version'; name: string; version: string };

/**
 * The route of a path: each segment is decoded on its own, so a name's `/`
 * arrives as `%2F` and a bare `/` makes another segment (and no route).
 * Empty segments (`//`, a trailing `/`) match nothing.
 */
function route(path: string): Route | 'unknown' | RegistryAnswer {
  if (!path.startsWith(`${REGISTRY_API_PREFIX}/`)) return 'unknown';
  const segments = path.slice(REGISTRY_API_PREFIX.length + 1).split('/');
  if (segments[0] !== 'servers' || segments.some((segment) => segment === '')) return 'unknown';
  if (segments.length === 1) return { kind: 'list' };
  if (segments[2] !== 'versions' || segments.length > 4) return 'unknown';
  const name = decode(segments[1] as string);
  if (name === null) return problem(400, 'Invalid server name encoding');
  if (name.length > MAX_NAME_LENGTH) return problem(400, `Invalid server name: longer than ${MAX_NAME_LENGTH} characters`);
  if (segments.length === 3) return { kind: 'versions', name };
  const version = decode(segments[3] as string);
  if (version === null) return problem(400, 'Invalid version encoding');
  if (version.length > MAX_VERSION_LENGTH) return problem(400, `Invalid version: longer than ${MAX_VERSION_LENGTH} characters`);
  return { kind: 'version', name, version };
}

function list(params: Map<string, string>, versions: readonly ApprovedVersion[], now: Date): RegistryAnswer {
  let limit = DEFAULT_LIMIT;
  const limitText = params.get('limit') ?? '';
  if (limitText !== '') {
    if (!/^[+-]?[0-9]{1,15}$/.test(limitText)) return invalid('query.limit', 'expected an integer', limitText);
    limit = Number(limitText);
    if (limit < 1) return invalid('query.limit', 'expected number >= 1', limit);
    if (limit > MAX_LIMIT) return invalid('query.limit', `expected number <= ${MAX_LIMIT}`, limit);
  }

  let since: number | null = null;
  const sinceText = params.get('updated_since') ?? '';
  if (sinceText !== '') {
    since = parseRfc3339(sinceText);
    if (since === null) return problem(400, 'Invalid updated_since: expected an RFC 3339 date-time, such as 2025-08-07T13:15:04.280Z');
  }

  const search = (params.get('search') ?? '').toLowerCase();
  if (search.length > MAX_SEARCH_LENGTH) return problem(400, `Invalid search: longer than ${MAX_SEARCH_LENGTH} characters`);

  const version = params.get('version') ?? '';
  if (version.length > MAX_VERSION_LENGTH) return problem(400, `Invalid version: longer than ${MAX_VERSION_LENGTH} characters`);

  let after: SortKey | null = null;
  const cursorText = params.get('cursor') ?? '';
  if (cursorText !== '') {
    after = decodeCursor(cursorText);
    if (after === null) return problem(400, 'Invalid cursor: pass the metadata.nextCursor of a previous page as it is');
  }

  const matching = servable(versions, now)
    .filter(
      (item) =>
        (search === '' || item.name.toLowerCase().includes(search)) &&
        (since === null || item.updated > since) &&
        (version === '' || (version === 'latest' ? item.latest : item.version === version)),
    )
    .sort(compareKeys);

  // The first item after the cursor's key: the keys are sorted, so a binary search.
  let start = 0;
  if (after !== null) {
    let end = matching.length;
    while (start < end) {
      const middle = (start + end) >>> 1;
      if (compareKeys(matching[middle] as Served, after) > 0) end = middle;
      else start = middle + 1;
    }
  }
  const page = matching.slice(start, start + limit);
  const body: RegistryServerList = { servers: page.map(toResponse), metadata: { count: page.length } };
  if (start + limit < matching.length) body.metadata = { nextCursor: encodeCursor(page[page.length - 1] as Served), count: page.length };
  return ok(body);
}

/** Every servable version of a name, newest approval first (as the registry orders them), 404 when there is none. */
function versionsOf(name: string, versions: readonly ApprovedVersion[], now: Date): RegistryAnswer {
  const found = servable(versions, now)
    .filter((item) => item.name === name)
    .sort((a, b) => Math.sign(b.published - a.published) || -compareKeys(a, b));
  if (found.length === 0) return problem(404, SERVER_NOT_FOUND);
  return ok({ servers: found.map(toResponse), metadata: { count: found.length } });
}

/** One version, or the latest; when the same version is approved under several routes, the first route by name. */
function versionOf(name: string, version: string, versions: readonly ApprovedVersion[], now: Date): RegistryAnswer {
  const found = servable(versions, now)
    .filter((item) => item.name === name && (version === 'latest' ? item.latest : item.version === version))
    .sort(compareKeys);
  const first = found[0];
  return first ? ok(toResponse(first)) : problem(404, SERVER_NOT_FOUND);
}

/**
 * Answers one request to the sub-registry.
 *
 * @param method the HTTP method, as received (methods are case-sensitive).
 * @param pathAndQuery the request target after the gateway's base, starting with `/v0.1`, still percent-encoded.
 * @param versions the versions this caller may see (visibility is the caller's to apply); any status: only
 *   approved, unexpired ones are served.
 * @param now the time expiry is judged against.
 */
export function answerRegistryRequest(method: string, pathAndQuery: string, versions: readonly ApprovedVersion[], now: Date): RegistryAnswer {
  const mark = pathAndQuery.indexOf('?');
  const path = mark < 0 ? pathAndQuery : pathAndQuery.slice(0, mark);
  const query = mark < 0 ? '' : pathAndQuery.slice(mark + 1);

  let answer: RegistryAnswer;
  const matched = route(path);
  if (matched === 'unknown') answer = problem(404, 'Not found');
  else if (method !== 'GET' && method !== 'HEAD') answer = problem(405, `Method ${method} not allowed: this registry is read-only`, { headers: { allow: ALLOWED } });
  else if ('status' in matched) answer = matched;
  else {
    const params = parseQuery(query);
    if (params === null) answer = problem(400, 'Invalid query string encoding');
    else if (matched.kind === 'list') answer = list(params, versions, now);
    else if (matched.kind === 'versions') answer = versionsOf(matched.name, versions, now);
    else answer = versionOf(matched.name, matched.version, versions, now);
  }
  return method === 'HEAD' ? { ...answer, body: null } : answer;
}
