/**
 * The MCP registry's `server.json` (schema 2025-12-11), read and written the
 * way the catalog needs it (docs/catalog.md, "server.json").
 *
 * - Reading checks what identifies a server and what the gateway would act
 *   on: the name, the exact version, every URL, the packages and their
 *   transports, arguments and environment variables. Every field — unknown
 *   ones and `_meta` included — is kept exactly as given: the schema allows
 *   additional properties, and an export must give back what was imported.
 * - The input is attacker controlled (a file or a registry answer): sizes,
 *   nesting and array lengths are bounded before anything else is looked at,
 *   and a value that is not plain JSON is refused rather than normalised.
 * - Mandate's own record travels under `_meta["dev.mandate/governance"]` on
 *   export only. A server.json that arrives with one is refused: governance
 *   is decided by approval here, never taken from a file.
 * - `upstreamOf` says how the gateway reaches a server: a Streamable HTTP
 *   remote, or an npm or PyPI package started over stdio at its exact
 *   version. Everything else is refused with the reason.
 */
import { readLimited } from '../http/bounded.ts';
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import type { JsonValue } from '../audit/events.ts';
import { GOVERNANCE_META_KEY, PUBLISHER_META_KEY, type Governance, type JsonObject, type ServerJson } from './types.ts';

/** The schema version whose rules are checked. */
export const SERVER_JSON_SCHEMA_VERSION = '2025-12-11';

/** Bounds on hostile input. Beyond the schema's own limits, each is far above what a real server.json uses. */
export const SERVER_JSON_LIMITS = {
  /** One server.json, serialised as JSON (UTF-8). */
  serverBytes: 256 * 1024,
  /** A whole document read by loadServerJson (a list answer holds up to 100 servers a page). */
  documentBytes: 4 * 1024 * 1024,
  /** Nesting of objects and arrays, `_meta` included. */
  depth: 32,
  /** Servers in one list answer. */
  listServers: 1000,
  remotes: 32,
  packages: 32,
  icons: 16,
  iconSizes: 16,
  /** Runtime or package arguments of one package. */
  arguments: 128,
  environmentVariables: 128,
  headers: 64,
  /** Keys of one `variables` map. */
  variables: 64,
  choices: 256,
  /** Any URL other than an icon's (whose schema limit is 255). */
  urlLength: 2048,
  /** The registry's own limit on the publisher-provided `_meta` extension. */
  publisherProvidedBytes: 4096,
  /** Issues spelled out in one error message; the rest are counted. */
  issuesShown: 20,
} as const;

/** The schema's own limits (2025-12-11). */
const NAME_MIN = 3;
const NAME_MAX = 200;
const VERSION_MAX = 255;
const TEXT_MAX = 100;
const ICON_SRC_MAX = 255;
/** Schema dates from which field names are camelCase; older files name every field differently. */
const OLDEST_SCHEMA_DATE = '2025-09-16';

/** Set in Mandate's record when export had to create `_meta`, so that stripGovernance removes it again. */
export const META_ADDED_FIELD = 'metaAdded';

export interface ServerJsonIssue {
  /** Where, e.g. `remotes[0].url`; empty for the document as a whole. */
  path: string;
  message: string;
}

/** A server.json (or a document holding some) that is refused; the message names the source and each bad field. */
export class ServerJsonError extends Error {
  readonly source: string;
  readonly issues: ServerJsonIssue[];
  constructor(source: string, issues: ServerJsonIssue[], total = issues.length) {
    super(formatIssues(source, issues, total));
    this.name = 'ServerJsonError';
    this.source = source;
    this.issues = issues;
  }
}

function formatIssues(source: string, issues: ServerJsonIssue[], total: number): string {
  const shown = issues.slice(0, SERVER_JSON_LIMITS.issuesShown).map((issue) => `${source}: ${issue.path ? `${issue.path}: ` : ''}${issue.message}`);
  if (total > shown.length) shown.push(`${source}: … and ${total - shown.length} more`);
  return shown.join('\n');
}

/** Collects issues; keeps a bounded number (a hostile document can have millions) but counts them all. */
class Issues {
  readonly list: ServerJsonIssue[] = [];
  count = 0;
  add(path: string, message: string): void {
    this.count += 1;
    if (this.list.length < 100) this.list.push({ path, message });
  }
  throwIfAny(source: string): void {
    if (this.count > 0) throw new ServerJsonError(source, this.list, this.count);
  }
}

type Obj = { [key: string]: JsonValue };

function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `a.b[0]["c/d"]`: the path of a key or index below `base`. */
function at(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`;
  if (IDENTIFIER.test(key)) return base ? `${base}.${key}` : key;
  return `${base}[${JSON.stringify(key)}]`;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (value === undefined) return 'undefined';
  return `a ${typeof value}`;
}

// ---------------------------------------------------------------------------
// Plain JSON, size and depth

/**
 * Checks that `value` is plain JSON within the depth limit, taking a lower
 * bound of its serialised size from `budget` as it goes: a huge value is
 * refused without serialising it, and the walk stops once the budget is spent.
 */
function checkPlainJson(value: unknown, path: string, depth: number, issues: Issues, budget: { bytes: number }): void {
  if (budget.bytes < 0) return;
  switch (typeof value) {
    case 'string':
      budget.bytes -= value.length + 2;
      return;
    case 'boolean':
      budget.bytes -= 4;
      return;
    case 'number':
      budget.bytes -= 1;
      if (!Number.isFinite(value)) issues.add(path, 'must be a finite number (JSON has no NaN or Infinity)');
      return;
    case 'object':
      break;
    default:
      issues.add(path, `is ${describe(value)}, not a JSON value`);
      return;
  }
  if (value === null) {
    budget.bytes -= 4;
    return;
  }
  if (depth >= SERVER_JSON_LIMITS.depth) {
    issues.add(path, `nests deeper than ${SERVER_JSON_LIMITS.depth} levels`);
    budget.bytes = -1;
    return;
  }
  budget.bytes -= 2;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length && budget.bytes >= 0; i++) {
      // A hole would serialise as null: the value would not come back unchanged.
      if (!(i in value)) issues.add(at(path, i), 'is missing (a sparse array is not JSON)');
      else checkPlainJson(value[i], at(path, i), depth + 1, issues, budget);
      budget.bytes -= 1;
    }
    return;
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) {
    issues.add(path, 'is not a plain JSON object');
    return;
  }
  for (const key of Object.keys(value)) {
    if (budget.bytes < 0) return;
    // A `__proto__` member turns into a prototype in any naive copy or merge further on.
    if (key === '__proto__') {
      issues.add(at(path, key), 'is not allowed as a key');
      continue;
    }
    budget.bytes -= key.length + 3;
    checkPlainJson((value as Obj)[key], at(path, key), depth + 1, issues, budget);
  }
}

/** Refuses what is not plain JSON, too deep or too large (as serialised UTF-8); true when the value passes. */
function checkBounds(value: unknown, path: string, maxBytes: number, issues: Issues): boolean {
  const before = issues.count;
  const budget = { bytes: maxBytes };
  checkPlainJson(value, path, 0, issues, budget);
  if (issues.count > before) return false;
  const size = budget.bytes < 0 ? Infinity : Buffer.byteLength(JSON.stringify(value), 'utf8');
  if (size > maxBytes) {
    issues.add(path, `is larger than ${maxBytes} bytes as JSON`);
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Field checks

function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

interface StringRule {
  required?: boolean;
  min?: number;
  max?: number;
}

/** A string member: its value when present and well typed, otherwise undefined (and an issue when it is wrong). */
function str(obj: Obj, key: string, base: string, issues: Issues, rule: StringRule = {}): string | undefined {
  const path = at(base, key);
  if (!Object.hasOwn(obj, key)) {
    if (rule.required) issues.add(path, 'is required');
    return undefined;
  }
  const value = obj[key];
  if (typeof value !== 'string') {
    issues.add(path, `must be a string, not ${describe(value)}`);
    return undefined;
  }
  // The schema counts characters (code points), not UTF-16 units or bytes.
  const length = rule.min !== undefined || rule.max !== undefined ? codePoints(value) : 0;
  if (rule.min !== undefined && length < rule.min) {
    issues.add(path, rule.min === 1 ? 'must not be empty' : `must be at least ${rule.min} characters`);
    return undefined;
  }
  if (rule.max !== undefined && length > rule.max) {
    issues.add(path, `must be at most ${rule.max} characters (it has ${length})`);
    return undefined;
  }
  return value;
}

function bool(obj: Obj, key: string, base: string, issues: Issues): void {
  if (Object.hasOwn(obj, key) && typeof obj[key] !== 'boolean') issues.add(at(base, key), `must be true or false, not ${describe(obj[key])}`);
}

function oneOf(obj: Obj, key: string, base: string, issues: Issues, allowed: readonly string[], required = false): string | undefined {
  const value = str(obj, key, base, issues, { required });
  if (value === undefined) return undefined;
  if (!allowed.includes(value)) {
    issues.add(at(base, key), `must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, not ${JSON.stringify(value.slice(0, 40))}`);
    return undefined;
  }
  return value;
}

function arr(obj: Obj, key: string, base: string, issues: Issues, max: number): JsonValue[] | undefined {
  if (!Object.hasOwn(obj, key)) return undefined;
  const value = obj[key];
  if (!Array.isArray(value)) {
    issues.add(at(base, key), `must be an array, not ${describe(value)}`);
    return undefined;
  }
  if (value.length > max) {
    issues.add(at(base, key), `has ${value.length} items; at most ${max} are accepted`);
    return undefined;
  }
  return value;
}

function obj(parent: Obj, key: string, base: string, issues: Issues, required = false): Obj | undefined {
  const path = at(base, key);
  if (!Object.hasOwn(parent, key)) {
    if (required) issues.add(path, 'is required');
    return undefined;
  }
  const value = parent[key];
  if (!isObject(value)) {
    issues.add(path, `must be an object, not ${describe(value)}`);
    return undefined;
  }
  return value;
}

/** `{name}` placeholders of a URL template or a value. */
function placeholders(text: string): string[] {
  return [...text.matchAll(/\{([^{}]+)\}/g)].map((m) => m[1] as string);
}

/** Whether `url` is an absolute URL with one of `schemes` and a host; a template's placeholders get stand-in values first. */
function isAbsoluteUrl(url: string, schemes: readonly string[], template = false): boolean {
  if (/[\s\u0000-\u001f\u007f]/.test(url)) return false;
  // The schema's pattern for transport URLs: a literal lowercase http:// or https:// start.
  if (template && !/^https?:\/\//.test(url)) return false;
  // Give each placeholder a value that parses (a port where a port goes).
  const filled = template ? url.replace(/:\{[^{}]+\}(?=\/|$)/g, ':1').replace(/\{[^{}]+\}/g, 'x') : url;
  let parsed: URL;
  try {
    parsed = new URL(filled);
  } catch {
    return false;
  }
  return schemes.includes(parsed.protocol) && parsed.host !== '';
}

const WEB = ['https:', 'http:'] as const;

function urlField(parent: Obj, key: string, base: string, issues: Issues, opts: { required?: boolean; httpsOnly?: boolean; max?: number; template?: boolean }): string | undefined {
  const value = str(parent, key, base, issues, { required: opts.required ?? false });
  if (value === undefined) return undefined;
  const max = opts.max ?? SERVER_JSON_LIMITS.urlLength;
  if (value.length > max) {
    issues.add(at(base, key), `must be at most ${max} characters`);
    return undefined;
  }
  if (!isAbsoluteUrl(value, opts.httpsOnly ? ['https:'] : WEB, opts.template ?? false)) {
    issues.add(at(base, key), opts.httpsOnly ? 'must be an absolute https URL' : 'must be an absolute https or http URL');
    return undefined;
  }
  return value;
}

/** Placeholders of a transport URL must name a variable the server.json defines. */
function checkTemplate(url: string, path: string, available: Set<string>, where: string, issues: Issues): void {
  for (const name of placeholders(url)) {
    if (!available.has(name)) issues.add(path, `uses {${name}}, which is not defined in ${where}`);
  }
}

// ---------------------------------------------------------------------------
// Versions

/** Whether a version string is a range or a tag rather than one exact version (as the registry refuses them). */
export function isVersionRange(version: string): boolean {
  const v = version.trim();
  if (v.toLowerCase() === 'latest') return true;
  if (/^(\^|~|>|<|=|!)/.test(v)) return true;
  if (v.includes('||')) return true;
  // A hyphen range: "1.2.3 - 2.0.0".
  if (/\s-\s/.test(v)) return true;
  // A wildcard in the dotted part: "*", "x", "1.x", "1.2.*".
  const core = v.split(/[-+]/, 1)[0] as string;
  return core.split('.').some((part) => part === '*' || part === 'x' || part === 'X');
}

function version(parent: Obj, key: string, base: string, issues: Issues, required: boolean): string | undefined {
  const value = str(parent, key, base, issues, { required, min: 1, max: VERSION_MAX });
  if (value === undefined) return undefined;
  if (value.trim().toLowerCase() === 'latest') {
    issues.add(at(base, key), '"latest" is not a version: give the exact version');
    return undefined;
  }
  if (isVersionRange(value)) {
    issues.add(at(base, key), `must be one exact version, not a range (${JSON.stringify(value.slice(0, 40))})`);
    return undefined;
  }
  return value;
}

// ---------------------------------------------------------------------------
// The parts of a server.json

/** Registry rule: each part starts and ends with a letter or digit. */
const SERVER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9.-]*[a-zA-Z0-9]\/[a-zA-Z0-9][a-zA-Z0-9._-]*[a-zA-Z0-9]$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const SHA256_HEX = /^[a-f0-9]{64}$/;
const FORMATS = ['string', 'number', 'boolean', 'filepath'] as const;
const ICON_TYPES = ['image/png', 'image/jpeg', 'image/jpg', 'image/svg+xml', 'image/webp'] as const;

/** An `Input`: what a user (or later the credential broker) may be asked for. */
function checkInput(value: JsonValue, path: string, issues: Issues, withVariables: boolean): Obj | undefined {
  if (!isObject(value)) {
    issues.add(path, `must be an object, not ${describe(value)}`);
    return undefined;
  }
  for (const key of ['description', 'default', 'placeholder', 'value']) str(value, key, path, issues);
  oneOf(value, 'format', path, issues, FORMATS);
  bool(value, 'isRequired', path, issues);
  bool(value, 'isSecret', path, issues);
  const choices = arr(value, 'choices', path, issues, SERVER_JSON_LIMITS.choices);
  choices?.forEach((choice, i) => {
    if (typeof choice !== 'string') issues.add(at(at(path, 'choices'), i), `must be a string, not ${describe(choice)}`);
  });
  if (withVariables) checkVariables(value, path, issues);
  return value;
}

/** A `variables` map: name to `Input`. */
function checkVariables(parent: Obj, base: string, issues: Issues): Set<string> {
  const names = new Set<string>();
  const variables = obj(parent, 'variables', base, issues);
  if (variables === undefined) return names;
  const keys = Object.keys(variables);
  if (keys.length > SERVER_JSON_LIMITS.variables) {
    issues.add(at(base, 'variables'), `has ${keys.length} variables; at most ${SERVER_JSON_LIMITS.variables} are accepted`);
    return names;
  }
  for (const key of keys) {
    if (key === '') issues.add(at(base, 'variables'), 'has a variable with an empty name');
    checkInput(variables[key] as JsonValue, at(at(base, 'variables'), key), issues, false);
    names.add(key);
  }
  return names;
}

/** Headers or environment variables: `KeyValueInput`s. Returns their names. */
function checkKeyValues(parent: Obj, key: 'headers' | 'environmentVariables', base: string, issues: Issues): string[] {
  const names: string[] = [];
  const max = key === 'headers' ? SERVER_JSON_LIMITS.headers : SERVER_JSON_LIMITS.environmentVariables;
  arr(parent, key, base, issues, max)?.forEach((item, i) => {
    const path = at(at(base, key), i);
    const input = checkInput(item, path, issues, true);
    if (input === undefined) return;
    const name = str(input, 'name', path, issues, { required: true, min: 1, max: 256 });
    if (name === undefined) return;
    if (key === 'headers' && !HEADER_NAME.test(name)) issues.add(at(path, 'name'), 'must be an HTTP header name (letters, digits and !#$%&\'*+.^_`|~-)');
    // `=` or NUL would split or cut the environment entry the spawned process sees.
    if (key === 'environmentVariables' && /[=\u0000]/.test(name)) issues.add(at(path, 'name'), 'must not contain "=" or NUL');
    names.push(name);
  });
  return names;
}

/** A runtime or package argument. Returns the names it makes available to a transport URL template. */
function checkArgument(value: JsonValue, path: string, issues: Issues): string[] {
  const input = checkInput(value, path, issues, true);
  if (input === undefined) return [];
  bool(input, 'isRepeated', path, issues);
  const hint = str(input, 'valueHint', path, issues);
  const type = oneOf(input, 'type', path, issues, ['positional', 'named'], true);
  const names = hint !== undefined ? [hint] : [];
  if (type === 'named') {
    const name = str(input, 'name', path, issues, { required: true, min: 1, max: 256 });
    // Registry rule: a flag name with a space, <, > or $ carries a value or a description inside it.
    if (name !== undefined && /[\s<>$]/.test(name)) issues.add(at(path, 'name'), 'must be a flag name such as --port (no spaces, <, > or $)');
    if (name !== undefined) names.push(name);
  } else if (type === 'positional' && !Object.hasOwn(input, 'value') && !Object.hasOwn(input, 'valueHint')) {
    issues.add(path, 'a positional argument needs a value or a valueHint');
  }
  return names;
}

/** A transport of a remote or a package. */
function checkTransport(transport: Obj, path: string, issues: Issues, allowed: readonly string[], available: Set<string>, where: string): void {
  const type = oneOf(transport, 'type', path, issues, allowed, true);
  if (type === 'stdio') {
    // Registry rule: a stdio transport has no URL.
    if (Object.hasOwn(transport, 'url')) issues.add(at(path, 'url'), 'must be absent for the stdio transport');
  } else if (type !== undefined) {
    const url = urlField(transport, 'url', path, issues, { required: true, template: true });
    if (url !== undefined) checkTemplate(url, at(path, 'url'), available, where, issues);
    checkKeyValues(transport, 'headers', path, issues);
  }
}

function checkRemote(value: JsonValue, path: string, issues: Issues): void {
  if (!isObject(value)) {
    issues.add(path, `must be an object, not ${describe(value)}`);
    return;
  }
  const variables = checkVariables(value, path, issues);
  checkTransport(value, path, issues, ['streamable-http', 'sse'], variables, `${path}.variables`);
}

function checkPackage(value: JsonValue, path: string, issues: Issues): void {
  if (!isObject(value)) {
    issues.add(path, `must be an object, not ${describe(value)}`);
    return;
  }
  const registryType = str(value, 'registryType', path, issues, { required: true, min: 1, max: 64 });
  const identifier = str(value, 'identifier', path, issues, { required: true, min: 1, max: SERVER_JSON_LIMITS.urlLength });
  // Registry rule: no spaces (a space would make it two words on a command line).
  if (identifier !== undefined && /\s/.test(identifier)) issues.add(at(path, 'identifier'), 'must not contain spaces');
  // Optional since 2025-10-11 (an OCI image carries its tag, an MCPB its URL); when given, it is exact.
  version(value, 'version', path, issues, false);
  urlField(value, 'registryBaseUrl', path, issues, {});
  const sha = str(value, 'fileSha256', path, issues);
  if (sha !== undefined && !SHA256_HEX.test(sha)) issues.add(at(path, 'fileSha256'), 'must be 64 lowercase hex digits (a SHA-256)');
  // The schema: required for MCPB packages, whose file is fetched by URL and checked against it.
  if (registryType === 'mcpb' && !Object.hasOwn(value, 'fileSha256')) issues.add(at(path, 'fileSha256'), 'is required for mcpb packages');
  str(value, 'runtimeHint', path, issues, { max: 64 });
  const available = new Set<string>();
  for (const key of ['runtimeArguments', 'packageArguments'] as const) {
    arr(value, key, path, issues, SERVER_JSON_LIMITS.arguments)?.forEach((argument, i) => {
      for (const name of checkArgument(argument, at(at(path, key), i), issues)) available.add(name);
    });
  }
  for (const name of checkKeyValues(value, 'environmentVariables', path, issues)) available.add(name);
  const transport = obj(value, 'transport', path, issues, true);
  if (transport !== undefined) checkTransport(transport, at(path, 'transport'), issues, ['stdio', 'streamable-http', 'sse'], available, `${path}'s arguments and environment variables`);
}

function checkIcon(value: JsonValue, path: string, issues: Issues): void {
  if (!isObject(value)) {
    issues.add(path, `must be an object, not ${describe(value)}`);
    return;
  }
  urlField(value, 'src', path, issues, { required: true, httpsOnly: true, max: ICON_SRC_MAX });
  oneOf(value, 'mimeType', path, issues, ICON_TYPES);
  oneOf(value, 'theme', path, issues, ['light', 'dark']);
  arr(value, 'sizes', path, issues, SERVER_JSON_LIMITS.iconSizes)?.forEach((size, i) => {
    if (typeof size !== 'string' || !/^(\d+x\d+|any)$/.test(size)) issues.add(at(at(path, 'sizes'), i), 'must be WxH (e.g. 48x48) or "any"');
  });
}

/** Registry rule: a clean relative path inside the repository. */
function isCleanSubfolder(subfolder: string): boolean {
  if (!/^[a-zA-Z0-9\-_./]+$/.test(subfolder)) return false;
  return subfolder.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..');
}

function checkRepository(server: Obj, issues: Issues): void {
  const repository = obj(server, 'repository', '', issues);
  if (repository === undefined) return;
  urlField(repository, 'url', 'repository', issues, { required: true });
  str(repository, 'source', 'repository', issues, { required: true, min: 1, max: 64 });
  str(repository, 'id', 'repository', issues, { max: 256 });
  const subfolder = str(repository, 'subfolder', 'repository', issues);
  if (subfolder !== undefined && !isCleanSubfolder(subfolder)) issues.add('repository.subfolder', 'must be a clean relative path (no leading or trailing /, no . or .. segments)');
}

function checkMeta(server: Obj, base: string, issues: Issues): void {
  const meta = obj(server, '_meta', base, issues);
  if (meta === undefined) return;
  const metaPath = at(base, '_meta');
  if (Object.hasOwn(meta, GOVERNANCE_META_KEY)) {
    // Safe choice: a file cannot bring its own approval; the caller strips it knowingly (stripGovernance).
    issues.add(at(metaPath, GOVERNANCE_META_KEY), "is Mandate's governance record, which is never taken from a file: remove it (stripGovernance) before importing");
  }
  const provided = obj(meta, PUBLISHER_META_KEY, metaPath, issues);
  if (provided !== undefined && Buffer.byteLength(JSON.stringify(provided), 'utf8') > SERVER_JSON_LIMITS.publisherProvidedBytes) {
    issues.add(at(metaPath, PUBLISHER_META_KEY), `is larger than ${SERVER_JSON_LIMITS.publisherProvidedBytes} bytes as JSON (the registry's limit)`);
  }
}

function checkSchemaUri(server: Obj, issues: Issues): void {
  const schema = urlField(server, '$schema', '', issues, {});
  const date = schema === undefined ? undefined : /\/schemas\/(\d{4}-\d{2}-\d{2})\/server\.schema\.json$/.exec(schema)?.[1];
  if (date !== undefined && date < OLDEST_SCHEMA_DATE) {
    issues.add('$schema', `names schema ${date}, whose snake_case field names this reader does not take: update the file to schema ${SERVER_JSON_SCHEMA_VERSION}`);
  }
}

/** All checks of one server.json; `base` prefixes every path (a list answer's `servers[3].server`). */
function checkServer(value: unknown, base: string, issues: Issues): value is ServerJson {
  const before = issues.count;
  if (!isObject(value)) {
    issues.add(base, `must be a JSON object, not ${describe(value)}`);
    return false;
  }
  if (!checkBounds(value, base, SERVER_JSON_LIMITS.serverBytes, issues)) return false;
  // Paths below are relative to the server; prefix them once at the end.
  const own = new Issues();
  const name = str(value, 'name', '', own, { required: true, min: NAME_MIN, max: NAME_MAX });
  if (name !== undefined && !SERVER_NAME.test(name)) {
    own.add('name', 'must be reverse-DNS "namespace/name" (e.g. io.example/weather): one slash, letters, digits, dots and hyphens (underscores after the slash), each part starting and ending with a letter or digit');
  }
  version(value, 'version', '', own, true);
  str(value, 'description', '', own, { required: true, min: 1, max: TEXT_MAX });
  const title = str(value, 'title', '', own, { min: 1, max: TEXT_MAX });
  if (title !== undefined && title.trim() === '') own.add('title', 'must not be only whitespace');
  urlField(value, 'websiteUrl', '', own, { httpsOnly: true });
  checkSchemaUri(value, own);
  checkRepository(value, own);
  arr(value, 'icons', '', own, SERVER_JSON_LIMITS.icons)?.forEach((icon, i) => checkIcon(icon, at('icons', i), own));
  arr(value, 'remotes', '', own, SERVER_JSON_LIMITS.remotes)?.forEach((remote, i) => checkRemote(remote, at('remotes', i), own));
  arr(value, 'packages', '', own, SERVER_JSON_LIMITS.packages)?.forEach((pkg, i) => checkPackage(pkg, at('packages', i), own));
  checkMeta(value, '', own);
  for (const issue of own.list) issues.add(base ? (issue.path.startsWith('[') ? base + issue.path : `${base}.${issue.path}`) : issue.path, issue.message);
  issues.count += own.count - own.list.length;
  return issues.count === before;
}

// ---------------------------------------------------------------------------
// Reading

/**
 * One server.json, checked against the 2025-12-11 rules that matter for
 * identification and safety. Returns a copy of the value itself: same keys in
 * the same order, same values, nothing added or normalised.
 */
export function parseServerJson(value: unknown, source: string): ServerJson {
  const issues = new Issues();
  checkServer(value, '', issues);
  issues.throwIfAny(source);
  return structuredClone(value) as ServerJson;
}

/**
 * The server.json objects of a document: one server.json, a registry list
 * answer (`{servers: [{server, _meta}], metadata}`) or a one-server answer
 * (`{server, _meta}`). The registry's wrapper `_meta` (its status fields) is
 * not part of a server.json and is dropped; a server's own `_meta` is kept.
 */
export function readServerJsonDocument(value: unknown, source: string): ServerJson[] {
  const issues = new Issues();
  if (!isObject(value)) {
    issues.add('', `must be a JSON object, not ${describe(value)}`);
    issues.throwIfAny(source);
  }
  const doc = value as Obj;
  // A server.json always has a name; only the registry's answers lack one.
  if (!Object.hasOwn(doc, 'name') && Object.hasOwn(doc, 'servers')) {
    const list = arr(doc, 'servers', '', issues, SERVER_JSON_LIMITS.listServers);
    if (Object.hasOwn(doc, 'metadata') && !isObject(doc.metadata)) issues.add('metadata', `must be an object, not ${describe(doc.metadata)}`);
    const servers: ServerJson[] = [];
    list?.forEach((item, i) => {
      const path = at('servers', i);
      if (!isObject(item)) return issues.add(path, `must be an object, not ${describe(item)}`);
      if (!Object.hasOwn(item, 'server')) return issues.add(at(path, 'server'), 'is required');
      if (checkServer(item.server, at(path, 'server'), issues)) servers.push(structuredClone(item.server) as ServerJson);
    });
    issues.throwIfAny(source);
    return servers;
  }
  if (!Object.hasOwn(doc, 'name') && Object.hasOwn(doc, 'server')) {
    checkServer(doc.server, 'server', issues);
    issues.throwIfAny(source);
    return [structuredClone(doc.server) as ServerJson];
  }
  return [parseServerJson(doc, source)];
}

export interface LoadServerJsonOptions {
  /** The gateway's guarded fetch; without one, URLs are refused. */
  fetch?: (url: string) => Promise<Response>;
  /** What a relative path is resolved against (default: the process's working directory). */
  cwd?: string;
  /** The largest document read, in bytes (default SERVER_JSON_LIMITS.documentBytes). */
  maxBytes?: number;
}

export interface LoadedServerJson {
  servers: ServerJson[];
  /** The absolute path, or the URL as given. */
  source: string;
  /** Hex SHA-256 of the bytes read. */
  sha256: string;
}

function refuse(source: string, message: string): never {
  throw new ServerJsonError(source, [{ path: '', message }]);
}

function readBody(response: Response, source: string, maxBytes: number): Promise<Buffer> {
  return readLimited(response, maxBytes, () => new ServerJsonError(source, [{ path: '', message: `answer is larger than ${maxBytes} bytes` }]));
}

async function readUrl(url: URL, source: string, options: LoadServerJsonOptions, maxBytes: number): Promise<Buffer> {
  if (url.protocol !== 'https:' && url.protocol !== 'http:') refuse(source, 'only https and http URLs (or file paths) are read');
  // A URL with credentials would put them into every message and log line naming the source.
  if (url.username !== '' || url.password !== '') refuse(source, 'the URL must not carry a user name or password');
  if (options.fetch === undefined) refuse(source, 'reading a URL needs the gateway\'s guarded fetch, and none was given');
  let response: Response;
  try {
    response = await options.fetch(url.href);
  } catch (error) {
    refuse(source, `fetch failed: ${(error as Error).message}`);
  }
  if (response.status !== 200) {
    await response.body?.cancel().catch(() => {});
    refuse(source, `answered HTTP ${response.status}, not 200`);
  }
  return readBody(response, source, maxBytes);
}

async function readFile(file: string, maxBytes: number): Promise<Buffer> {
  let handle;
  try {
    // Checked before opening: opening a FIFO or a device could block or never end.
    const info = await stat(file);
    if (!info.isFile()) refuse(file, 'is not a regular file');
    if (info.size > maxBytes) refuse(file, `is ${info.size} bytes; at most ${maxBytes} are read`);
    handle = await open(file, 'r');
  } catch (error) {
    if (error instanceof ServerJsonError) throw error;
    refuse(file, `cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  try {
    // Read at most one byte past the limit: a file that grew since stat is still bounded.
    const buffer = Buffer.alloc(maxBytes + 1);
    let total = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, total, buffer.length - total, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > maxBytes) refuse(file, `is larger than ${maxBytes} bytes`);
    }
    return buffer.subarray(0, total);
  } finally {
    await handle.close();
  }
}

/**
 * Reads a server.json document (see readServerJsonDocument) from a file or an
 * https/http URL. URLs go through `options.fetch` only (the caller's guarded
 * fetch); the size is bounded while reading.
 */
export async function loadServerJson(fileOrUrl: string, options: LoadServerJsonOptions = {}): Promise<LoadedServerJson> {
  const maxBytes = options.maxBytes ?? SERVER_JSON_LIMITS.documentBytes;
  let source: string;
  let bytes: Buffer;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(fileOrUrl)) {
    source = fileOrUrl;
    let url: URL;
    try {
      url = new URL(fileOrUrl);
    } catch {
      refuse(source, 'is not a valid URL');
    }
    bytes = await readUrl(url, source, options, maxBytes);
  } else {
    source = path.resolve(options.cwd ?? process.cwd(), fileOrUrl);
    bytes = await readFile(source, maxBytes);
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  let text: string;
  try {
    // Fatal: bad UTF-8 is refused rather than silently replaced. A leading BOM is dropped.
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    refuse(source, 'is not UTF-8 text');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    refuse(source, `is not valid JSON (${(error as Error).message})`);
  }
  return { servers: readServerJsonDocument(value, source), source, sha256 };
}

// ---------------------------------------------------------------------------
// Export

/**
 * The server.json as imported, plus Mandate's record under
 * `_meta["dev.mandate/governance"]` when `governance` is given: the
 * governance fields, then `extra`'s members (e.g. revision, pins). Every
 * other `_meta` key stays as it was, in its place; the record comes last.
 * When the server.json had no `_meta`, one is added as its last member and
 * the record says `metaAdded: true`, so that stripGovernance gives back the
 * original exactly.
 */
export function exportServerJson(serverJson: ServerJson, governance: Governance | null, extra?: JsonObject): ServerJson {
  const copy = structuredClone(serverJson);
  if (governance === null) {
    if (extra !== undefined) throw new TypeError('exportServerJson: extra members need a governance record');
    return copy;
  }
  // Through JSON: optional fields left undefined disappear instead of travelling as undefined.
  const record = JSON.parse(JSON.stringify(governance)) as JsonObject;
  for (const [key, value] of Object.entries(extra ?? {})) {
    if (Object.hasOwn(record, key) || key === META_ADDED_FIELD) throw new TypeError(`exportServerJson: extra member "${key}" would overwrite the governance record's own`);
    record[key] = structuredClone(value);
  }
  const meta = copy._meta;
  if (meta === undefined) {
    record[META_ADDED_FIELD] = true;
    return { ...copy, _meta: { [GOVERNANCE_META_KEY]: record } };
  }
  if (!isObject(meta)) throw new TypeError('exportServerJson: _meta is not an object');
  if (Object.hasOwn(meta, GOVERNANCE_META_KEY)) throw new TypeError(`exportServerJson: _meta already carries ${GOVERNANCE_META_KEY}`);
  meta[GOVERNANCE_META_KEY] = record;
  return copy;
}

/**
 * The server.json without Mandate's record: removes exactly
 * `_meta["dev.mandate/governance"]`, and `_meta` itself only when nothing
 * else is left in it and the record says export added it (`metaAdded`).
 * stripGovernance(exportServerJson(x, g)) deep-equals x, key order included.
 */
export function stripGovernance(serverJson: ServerJson): ServerJson {
  const copy = structuredClone(serverJson);
  const meta = copy._meta;
  if (!isObject(meta) || !Object.hasOwn(meta, GOVERNANCE_META_KEY)) return copy;
  const record = meta[GOVERNANCE_META_KEY];
  delete meta[GOVERNANCE_META_KEY];
  if (Object.keys(meta).length === 0 && isObject(record) && record[META_ADDED_FIELD] === true) delete copy._meta;
  return copy;
}

// ---------------------------------------------------------------------------
// Upstream

export interface HttpUpstream {
  transport: 'http';
  url: string;
  /** Headers the server.json fixes (a `value`, or a `default`). */
  headers: Record<string, string>;
  /** Required headers without a value: the credential broker must supply them. */
  requiredHeaders: string[];
}

export interface UpstreamPackage {
  registryType: string;
  identifier: string;
  version: string;
  fileSha256?: string;
}

export interface StdioUpstream {
  transport: 'stdio';
  command: string;
  args: string[];
  /** Environment variables the server.json fixes (a `value`, or a `default`). */
  env: Record<string, string>;
  /** Required environment variables without a value: the credential broker must supply them. */
  requiredEnv: string[];
  /** What is started: the identity to check at spawn (ExpectedIdentity.package). */
  package: UpstreamPackage;
  /** The registry the server.json names, when it names one; the runtime's own configuration decides where it fetches from. */
  registryBaseUrl?: string;
}

export type Upstream = HttpUpstream | StdioUpstream;

export interface UpstreamChoice {
  /** Index into `remotes`. */
  remote?: number;
  /** Index into `packages`. */
  package?: number;
}

/** A step of derivation that cannot go on: where and why. */
class Refusal {
  readonly path: string;
  readonly message: string;
  constructor(path: string, message: string) {
    this.path = path;
    this.message = message;
  }
}

const NEEDS_INPUT = Symbol('needs input');

/** Whether a value uses one of its own `{variables}`: then it needs input and is not fixed. */
function usesVariables(input: Obj, text: string): boolean {
  const variables = isObject(input.variables) ? input.variables : {};
  return placeholders(text).some((name) => Object.hasOwn(variables, name));
}

/** The value a header or environment variable gets without asking anyone: `value`, else `default`. */
function fixedKeyValue(input: Obj): string | typeof NEEDS_INPUT {
  if (typeof input.value === 'string') return usesVariables(input, input.value) ? NEEDS_INPUT : input.value;
  if (typeof input.default === 'string' && !usesVariables(input, input.default)) return input.default;
  return NEEDS_INPUT;
}

function noNul(text: string, path: string): string {
  // A NUL cannot reach a process's argv or environment (spawn throws); refuse it here with a path.
  if (text.includes('\u0000')) throw new Refusal(path, 'contains a NUL character');
  return text;
}

function keyValues(list: JsonValue, base: string): { values: Record<string, string>; required: string[] } {
  const values: Record<string, string> = {};
  const required: string[] = [];
  (Array.isArray(list) ? list : []).forEach((item, i) => {
    if (!isObject(item) || typeof item.name !== 'string') throw new Refusal(at(base, i), 'is not a name and value');
    const value = fixedKeyValue(item);
    if (value !== NEEDS_INPUT) values[item.name] = noNul(value, at(base, i));
    else if (item.isRequired === true) required.push(item.name);
  });
  return { values, required };
}

function remoteUpstream(remote: JsonValue, path: string): HttpUpstream {
  if (!isObject(remote)) throw new Refusal(path, 'is not an object');
  if (remote.type === 'sse') throw new Refusal(path, 'the sse transport is not supported (only streamable-http)');
  if (remote.type !== 'streamable-http') throw new Refusal(at(path, 'type'), `transport ${JSON.stringify(remote.type)} is not supported`);
  const url = remote.url;
  if (typeof url !== 'string' || !isAbsoluteUrl(url, WEB, true)) throw new Refusal(at(path, 'url'), 'is not an absolute https or http URL');
  const vars = placeholders(url);
  if (vars.length > 0) throw new Refusal(at(path, 'url'), `is a template ({${vars.join('}, {')}}) that needs values; templated remotes are not supported`);
  const { values, required } = keyValues(remote.headers ?? [], at(path, 'headers'));
  return { transport: 'http', url, headers: values, requiredHeaders: required };
}

/** npm package names (scoped or not); nothing that npx would take as a path, URL, git spec or flag. */
const NPM_NAME = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/i;
/** An exact semantic version, as npm publishes them. */
const SEMVER = /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$/;
/** A PyPI project name (PEP 508). */
const PYPI_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;
/** One PEP 440 version: no operator, comma, wildcard or space can get in. */
const PEP440 = /^v?(\d+!)?\d+(\.\d+)*[0-9A-Za-z.+_-]*$/;

const RUNNERS: Record<string, { command: string; name: RegExp; version: RegExp; spec: (id: string, v: string) => string[] }> = {
  npm: { command: 'npx', name: NPM_NAME, version: SEMVER, spec: (id, v) => ['-y', `${id}@${v}`] },
  pypi: { command: 'uvx', name: PYPI_NAME, version: PEP440, spec: (id, v) => [`${id}==${v}`] },
};

/** Package arguments with fixed values, in order; optional ones without a value are left out. */
function fixedArguments(list: JsonValue, base: string): string[] {
  const args: string[] = [];
  (Array.isArray(list) ? list : []).forEach((item, i) => {
    const path = at(base, i);
    if (!isObject(item)) throw new Refusal(path, 'is not an argument');
    const value = typeof item.value === 'string' && !usesVariables(item, item.value) ? item.value : undefined;
    if (value === undefined) {
      // Only a `value` is fixed: a default or a hint is a suggestion for someone who is asked.
      if (item.isRequired === true) throw new Refusal(path, `needs a value (${JSON.stringify(item.valueHint ?? item.name ?? 'unnamed')}) that Mandate cannot supply yet`);
      return;
    }
    if (item.type === 'named') {
      if (typeof item.name !== 'string') throw new Refusal(path, 'a named argument has no name');
      args.push(noNul(item.name, path), noNul(value, path));
    } else {
      args.push(noNul(value, path));
    }
  });
  return args;
}

function packageUpstream(pkg: JsonValue, path: string): StdioUpstream {
  if (!isObject(pkg)) throw new Refusal(path, 'is not an object');
  const transport = isObject(pkg.transport) ? pkg.transport.type : undefined;
  if (transport !== 'stdio') throw new Refusal(at(path, 'transport'), `a package reached over ${JSON.stringify(transport)} is not supported yet (only stdio packages are started)`);
  const registryType = pkg.registryType;
  const runner = typeof registryType === 'string' && Object.hasOwn(RUNNERS, registryType) ? RUNNERS[registryType] : undefined;
  if (runner === undefined) throw new Refusal(at(path, 'registryType'), `${JSON.stringify(registryType)} packages are not supported yet (npm and pypi are)`);
  const identifier = pkg.identifier;
  if (typeof identifier !== 'string' || !runner.name.test(identifier)) throw new Refusal(at(path, 'identifier'), `is not a ${registryType} package name`);
  const version = pkg.version;
  if (typeof version !== 'string') throw new Refusal(at(path, 'version'), 'is required to start a package: without it, what runs could change after approval');
  if (!runner.version.test(version) || isVersionRange(version)) throw new Refusal(at(path, 'version'), `is not one exact ${registryType} version`);
  // Runtime arguments reach npx or uvx themselves and can change what is fetched (another registry, another package).
  if (Array.isArray(pkg.runtimeArguments) && pkg.runtimeArguments.length > 0) throw new Refusal(at(path, 'runtimeArguments'), 'are not supported yet: they go to the runtime and can change what it fetches');
  const args = [...runner.spec(identifier, version), ...fixedArguments(pkg.packageArguments ?? [], at(path, 'packageArguments'))];
  const { values, required } = keyValues(pkg.environmentVariables ?? [], at(path, 'environmentVariables'));
  const identity: UpstreamPackage = { registryType: registryType as string, identifier, version };
  if (typeof pkg.fileSha256 === 'string') identity.fileSha256 = pkg.fileSha256;
  return {
    transport: 'stdio',
    command: runner.command,
    args,
    env: values,
    requiredEnv: required,
    package: identity,
    ...(typeof pkg.registryBaseUrl === 'string' ? { registryBaseUrl: pkg.registryBaseUrl } : {}),
  };
}

function derive(fn: () => Upstream): Upstream | Refusal {
  try {
    return fn();
  } catch (error) {
    if (error instanceof Refusal) return error;
    throw error;
  }
}

/**
 * How the gateway reaches a server: a chosen remote or package, or by
 * default the first Streamable HTTP remote that can be used, else the first
 * package that can be started (npm through `npx -y NAME@VERSION`, PyPI
 * through `uvx NAME==VERSION`, each followed by the package arguments that
 * have fixed values). Values are never invented: required headers and
 * environment variables without one are listed for the credential broker,
 * and a required argument without one is refused.
 */
export function upstreamOf(serverJson: ServerJson, choice: UpstreamChoice = {}): Upstream {
  const source = typeof serverJson.name === 'string' ? serverJson.name : 'server.json';
  const remotes = Array.isArray(serverJson.remotes) ? serverJson.remotes : [];
  const packages = Array.isArray(serverJson.packages) ? serverJson.packages : [];
  const fail = (refusals: Refusal[]): never => {
    throw new ServerJsonError(source, refusals.map((r) => ({ path: r.path, message: r.message })));
  };
  if (choice.remote !== undefined && choice.package !== undefined) fail([new Refusal('', 'choose a remote or a package, not both')]);
  for (const [key, list] of [['remote', remotes], ['package', packages]] as const) {
    const index = choice[key];
    if (index === undefined) continue;
    const field = key === 'remote' ? 'remotes' : 'packages';
    if (!Number.isInteger(index) || index < 0 || index >= list.length) fail([new Refusal(at(field, index), `there is no such ${key} (the server.json has ${list.length})`)]);
    const result = derive(() => (key === 'remote' ? remoteUpstream(list[index] as JsonValue, at(field, index)) : packageUpstream(list[index] as JsonValue, at(field, index))));
    if (result instanceof Refusal) fail([result]);
    return result as Upstream;
  }
  if (remotes.length === 0 && packages.length === 0) fail([new Refusal('', 'has no remotes and no packages: there is nothing to reach')]);
  const refusals: Refusal[] = [];
  const candidates = [
    ...remotes.map((remote, i) => () => remoteUpstream(remote, at('remotes', i))),
    ...packages.map((pkg, i) => () => packageUpstream(pkg, at('packages', i))),
  ];
  for (const candidate of candidates) {
    const result = derive(candidate);
    if (!(result instanceof Refusal)) return result;
    refusals.push(result);
  }
  return fail(refusals);
}
