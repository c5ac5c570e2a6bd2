/**
 * `mandate scan [PATH…] [--json | --sarif | --fix]`: finds hard-coded
 * credentials in MCP client configurations, offline.
 *
 * PATHs are files, or directories searched (depth-bounded, without
 * `node_modules` and `.git`, each real directory once however symlinks lead
 * back to it) for the configuration file names of Claude Desktop, Claude
 * Code, VS Code, Cursor, Windsurf and Mandate itself. Without a PATH: the
 * usual locations in the home directory and in the current directory.
 * Files over 5 MiB are skipped.
 *
 * Exit 1 when something is found, 0 when nothing is, 2 on bad usage (an
 * unknown option, a PATH that cannot be read). A finding shows where the
 * secret is (file, line, server, location), its kind and a masked form
 * (`ghp_…x9`); the value itself is never printed, in no output and no error.
 *
 * `--fix` moves each secret into Mandate's secret store (a `FixTarget`) and
 * rewrites the client's file so that the server is reached through Mandate's
 * endpoint for it, then prints the `servers:` entry to add to mandate.yaml.
 * The file is replaced atomically; the old one is kept as
 * `FILE.mandate-backup` (mode 0600). See docs/credentials-scan.md.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fsyncSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, writeSync, type Stats } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { VERSION } from '../version.ts';
import { UsageError } from '../cli/common.ts';
import { cleanLines, printJson, printLine, printNote } from '../cli/output.ts';
import { detect, detectField, isPlaceholder, isSecretName, KINDS, type Detection, type Field, type Kind, type Severity } from './detect.ts';
import { formatOf, JsonSyntaxError, parseJson, readConfig, remoteEntry, spliceJson, YamlSyntaxError, type ClientFormat, type ConfigFile, type ServerEntry } from './formats.ts';

// ---------------------------------------------------------------- contracts

/** One hard-coded credential: where it is and what it looks like, never what it is. */
export interface Finding {
  file: string;
  /** The server's name; `(inputs)` for VS Code's inputs, `(unparsed)` in a file that did not parse. */
  server: string;
  /** `env.GITHUB_TOKEN`, `headers.Authorization`, `args[3]`, `url`, `inputs.ID.default`. */
  location: string;
  kind: Kind;
  /** At most the first 4 and last 2 characters of the secret: `ghp_…x9`. */
  masked: string;
  severity: Severity;
  /** 1-based line in the file, when known. */
  line?: number;
  /** `~/.claude.json`: the project whose `mcpServers` hold the server. */
  project?: string;
}

/** Where `--fix` puts what it moves. */
export interface FixTarget {
  /** Stores a secret value under a name (never logged). */
  storeSecret(name: string, value: string): Promise<void>;
  /** Mandate's MCP endpoint for a server name: {issuer}/mcp/NAME. */
  endpoint(server: string): string;
}

export interface ScanFlags {
  json?: boolean;
  sarif?: boolean;
  fix?: boolean;
}

/** What the command would otherwise take from the process: for tests, and for the store once it exists. */
export interface ScanDeps {
  cwd?: string;
  home?: string;
  platform?: NodeJS.Platform;
  env?: NodeJS.ProcessEnv;
  /** `--fix`: where secrets go and what endpoint a server gets. */
  fixTarget?: FixTarget | (() => Promise<FixTarget>);
}

// ---------------------------------------------------------------- limits

/** Larger files are skipped (a configuration is a few KiB; `~/.claude.json` can reach a few MiB). */
export const MAX_FILE_BYTES = 5 * 1024 * 1024;
/** Directories below a PATH searched at most this deep. */
export const MAX_DEPTH = 10;
/** At most this many directories are searched per PATH. */
export const MAX_DIRECTORIES = 20_000;
const SKIPPED_DIRECTORIES = new Set(['node_modules', '.git']);

// ---------------------------------------------------------------- finding the files

interface Candidate {
  /** As it is shown: the PATH given, joined with what was found below it. */
  file: string;
  /** Absolute. */
  full: string;
  format: ClientFormat | null;
  /** Named on the command line: not being able to read it is bad usage. */
  explicit: boolean;
}

/** The usual places of each client's configuration, in the home directory and the current project. */
export function defaultLocations(home: string, cwd: string, platform: NodeJS.Platform, env: NodeJS.ProcessEnv): string[] {
  const appData = env.APPDATA || path.join(home, 'AppData', 'Roaming');
  const xdg = env.XDG_CONFIG_HOME || path.join(home, '.config');
  const settings = platform === 'darwin' ? path.join(home, 'Library', 'Application Support') : platform === 'win32' ? appData : xdg;
  return [
    path.join(settings, 'Claude', 'claude_desktop_config.json'),
    path.join(home, '.claude.json'),
    path.join(settings, 'Code', 'User', 'mcp.json'),
    path.join(home, '.cursor', 'mcp.json'),
    path.join(home, '.codeium', 'windsurf', 'mcp_config.json'),
    path.join(cwd, '.mcp.json'),
    path.join(cwd, '.vscode', 'mcp.json'),
    path.join(cwd, '.cursor', 'mcp.json'),
    path.join(cwd, 'mandate.yaml'),
  ];
}

const codeOf = (error: unknown) => (error as NodeJS.ErrnoException).code ?? 'error';

/** The configuration files below a directory, by name; bounded in depth and count, each real directory once. */
function walk(root: string, notes: string[]): Candidate[] {
  const found: Candidate[] = [];
  const visited = new Set<string>();
  let directories = 0;
  const visit = (dir: string, depth: number) => {
    let real: string;
    try {
      real = realpathSync(dir);
    } catch (error) {
      notes.push(`${dir}: skipped (${codeOf(error)})`);
      return;
    }
    if (visited.has(real)) return;
    visited.add(real);
    if ((directories += 1) > MAX_DIRECTORIES) {
      if (directories === MAX_DIRECTORIES + 1) notes.push(`${root}: stopped after ${MAX_DIRECTORIES} directories`);
      return;
    }
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    } catch (error) {
      notes.push(`${dir}: skipped (${codeOf(error)})`);
      return;
    }
    for (const entry of entries) {
      const full = path.join(dir, entry.name);
      let isDirectory = entry.isDirectory();
      let isFile = entry.isFile();
      if (entry.isSymbolicLink()) {
        // Followed, but each real directory is searched once: a link back up cannot loop.
        try {
          const target = statSync(full);
          isDirectory = target.isDirectory();
          isFile = target.isFile();
        } catch {
          continue;
        }
      }
      if (isDirectory) {
        if (!SKIPPED_DIRECTORIES.has(entry.name) && depth < MAX_DEPTH) visit(full, depth + 1);
      } else if (isFile) {
        const format = formatOf(full);
        if (format !== null) found.push({ file: full, full, format, explicit: false });
      }
    }
  };
  visit(root, 0);
  return found;
}

/** The files a scan reads: each PATH (a file, or a directory searched), or the default locations that exist. */
function candidates(paths: readonly string[], deps: Required<Omit<ScanDeps, 'fixTarget'>>, notes: string[]): Candidate[] {
  if (paths.length === 0) {
    return defaultLocations(deps.home, deps.cwd, deps.platform, deps.env).map((file) => ({ file, full: file, format: formatOf(file), explicit: false }));
  }
  const found: Candidate[] = [];
  for (const given of paths) {
    if (given === '') throw new UsageError('a PATH must not be empty');
    const full = path.resolve(deps.cwd, given);
    let stats: Stats;
    try {
      stats = statSync(full);
    } catch (error) {
      throw new UsageError(`cannot read ${given} (${codeOf(error)})`);
    }
    if (stats.isDirectory()) {
      try {
        readdirSync(full);
      } catch (error) {
        throw new UsageError(`cannot read ${given} (${codeOf(error)})`);
      }
      for (const candidate of walk(full, notes)) found.push({ ...candidate, file: path.join(given, path.relative(full, candidate.full)) });
    } else found.push({ file: given, full, format: formatOf(full), explicit: true });
  }
  return found;
}

// ---------------------------------------------------------------- reading and detecting

/** A finding with what `--fix` needs (the detection holds the secret: never printed). */
interface Item {
  finding: Finding;
  detection: Detection;
  entry: ServerEntry | null;
}

interface ScannedFile {
  file: string;
  /** Absolute, symlinks resolved: where --fix writes. */
  real: string;
  format: ClientFormat | null;
  text: string;
  config: ConfigFile | null;
  items: Item[];
}

function finding(file: string, server: string, detection: Detection, project?: string): Finding {
  const out: Finding = { file, server, location: detection.field.location, kind: detection.kind, masked: detection.masked, severity: detection.severity };
  if (detection.field.line !== undefined) out.line = detection.field.line;
  if (project !== undefined) out.project = project;
  return out;
}

/** Everything found in one configuration. */
function detectConfig(file: string, config: ConfigFile): Item[] {
  const items: Item[] = [];
  for (const entry of config.servers) {
    // Values that belong together are looked at together (an AWS key ID makes its neighbour's 40 characters a secret key).
    const groups: Field[][] = [entry.fields.filter((f) => f.role === 'env'), entry.fields.filter((f) => f.role === 'header'), entry.fields.filter((f) => f.role !== 'env' && f.role !== 'header')];
    for (const group of groups) {
      for (const detection of detect(group)) items.push({ finding: finding(file, entry.name, detection, entry.project), detection, entry });
    }
  }
  for (const detection of detect(config.other)) items.push({ finding: finding(file, '(inputs)', detection), detection, entry: null });
  return items.sort((a, b) => (a.finding.line ?? 0) - (b.finding.line ?? 0));
}

/** A file that did not parse is still searched, line by line, for tokens of known formats and URLs with credentials. */
function detectText(file: string, text: string): Item[] {
  const items: Item[] = [];
  text.split('\n').forEach((line, index) => {
    for (const detection of detectField({ location: 'text', role: 'arg', value: line, line: index + 1 })) {
      items.push({ finding: finding(file, '(unparsed)', detection), detection, entry: null });
    }
  });
  return items;
}

/** Reads one candidate; null (with a note) when it is skipped. */
function scanFile(candidate: Candidate, notes: string[]): ScannedFile | null {
  const { file } = candidate;
  let real: string;
  let bytes: Buffer;
  try {
    real = realpathSync(candidate.full);
    const stats = statSync(real);
    if (!stats.isFile()) {
      if (candidate.explicit) throw new UsageError(`cannot read ${file} (not a file)`);
      return null;
    }
    if (stats.size > MAX_FILE_BYTES) {
      notes.push(`${file}: skipped (larger than ${MAX_FILE_BYTES / 1024 / 1024} MiB)`);
      return null;
    }
    bytes = readFileSync(real);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    if (candidate.explicit) throw new UsageError(`cannot read ${file} (${codeOf(error)})`);
    if (codeOf(error) !== 'ENOENT') notes.push(`${file}: skipped (${codeOf(error)})`);
    return null;
  }
  const text = bytes.toString('utf8');
  try {
    const config = readConfig(text, candidate.format, file);
    if (config === null) {
      notes.push(`${file}: not an MCP client configuration (no mcpServers or servers)`);
      return { file, real, format: null, text, config: null, items: detectText(file, text) };
    }
    return { file, real, format: config.format, text, config, items: detectConfig(file, config) };
  } catch (error) {
    if (!(error instanceof JsonSyntaxError || error instanceof YamlSyntaxError)) throw error;
    notes.push(`${file}: ${error.message}; searched as plain text (known token formats and URLs only)`);
    return { file, real, format: candidate.format, text, config: null, items: detectText(file, text) };
  }
}

// ---------------------------------------------------------------- output

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

function serverLabel(f: Finding): string {
  return f.project === undefined ? f.server : `${f.server} (project ${f.project})`;
}

function printText(findings: readonly Finding[], scanned: number): void {
  for (const f of findings) printLine(`${f.file}${f.line === undefined ? '' : `:${f.line}`}  ${serverLabel(f)}  ${f.location}  ${f.kind}  ${f.masked}`);
  const files = new Set(findings.map((f) => f.file)).size;
  if (findings.length === 0) printLine(`no hard-coded credentials found (${plural(scanned, 'file', 'files')} scanned)`);
  else printLine(`${plural(findings.length, 'hard-coded credential', 'hard-coded credentials')} in ${plural(files, 'file', 'files')} (${plural(scanned, 'file', 'files')} scanned)`);
}

const SARIF_LEVEL: Record<Severity, 'error' | 'warning' | 'note'> = { high: 'error', medium: 'warning', low: 'note' };

/** A file as a SARIF artifact URI: relative to the current directory when inside it, else a file: URI. */
function artifactUri(file: string, cwd: string): string {
  const full = path.resolve(cwd, file);
  const relative = path.relative(cwd, full);
  if (relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative)) return relative.split(path.sep).map(encodeURIComponent).join('/');
  return pathToFileURL(full).href;
}

/** The findings as a SARIF 2.1.0 log: one rule per kind found, one result per finding, no secret in any message. */
export function toSarif(findings: readonly Finding[], cwd = process.cwd()): Record<string, unknown> {
  const kinds = [...new Set(findings.map((f) => f.kind))].sort();
  const rules = kinds.map((kind) => ({
    id: kind,
    name: kind.replace(/(^|-)([a-z])/g, (_, _dash: string, c: string) => c.toUpperCase()),
    shortDescription: { text: `Hard-coded ${KINDS[kind].title}` },
    fullDescription: { text: `A ${KINDS[kind].title} is written in an MCP client configuration, readable by anything that can read the file.` },
    help: { text: 'Move the secret out of the file: `mandate scan --fix` stores it in Mandate and points the client at Mandate, or reference an environment variable instead.' },
    defaultConfiguration: { level: SARIF_LEVEL[KINDS[kind].severity] },
  }));
  const results = findings.map((f) => {
    const region = f.line === undefined ? {} : { region: { startLine: f.line } };
    const where = f.project === undefined ? '' : ` (project ${f.project})`;
    return {
      ruleId: f.kind,
      ruleIndex: kinds.indexOf(f.kind),
      level: SARIF_LEVEL[f.severity],
      message: { text: `${KINDS[f.kind].title} hard-coded in server "${f.server}"${where} at ${f.location} (${f.masked})` },
      locations: [
        {
          physicalLocation: { artifactLocation: { uri: artifactUri(f.file, cwd) }, ...region },
          logicalLocations: [{ name: f.location, fullyQualifiedName: `${f.server}.${f.location}`, kind: 'member' }],
        },
      ],
    };
  });
  return { version: '2.1.0', runs: [{ tool: { driver: { name: 'mandate-scan', version: VERSION, rules } }, results }] };
}

// ---------------------------------------------------------------- --fix

/** `[a-z0-9-]`: lowercase, every run of other characters one hyphen, at most `max` characters. */
export function slug(text: string, fallback = 'server', max = 63): string {
  const out = text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, max)
    .replace(/-+$/, '');
  return out === '' ? fallback : out;
}

/** The secret store's name for one value of a server: `github-github-token` (at most 64 characters). */
export function secretName(server: string, key: string): string {
  return slug(`${slug(server)}-${slug(key, 'value')}`, 'secret', 60);
}

/** A YAML scalar: plain when it is safe so, else JSON-quoted (JSON strings are YAML). */
function yamlScalar(text: string): string {
  return /^[A-Za-z0-9_./][A-Za-z0-9_./@+=-]*$/.test(text) && !/^(?:true|false|yes|no|on|off|y|n|null|~|[-+]?[\d.][\d._eE+-]*)$/i.test(text) ? text : JSON.stringify(text);
}

/** An error's message with the secret taken out, should a store have echoed it. */
function redacted(error: unknown, secret: string): string {
  const message = error instanceof Error ? error.message : String(error);
  return secret === '' ? message : message.split(secret).join('[redacted]');
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Largest value the secret store holds. */
const MAX_SECRET_BYTES = 16 * 1024;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/;

/** What --fix does for one server: its one secret goes into the store, and the gateway presents it as `auth` says. */
interface Move {
  field: Field;
  /** What is stored: an environment variable's whole value; a header's value without its scheme. */
  value: string;
  via: 'env' | 'header';
  /** The environment variable or header name. */
  key: string;
  /** A header's scheme (`Bearer`), which the gateway puts back before the secret. */
  scheme?: string;
}

/** How one server's secret can be moved, or why it cannot (the secret is never part of the reason). */
function planMove(entry: ServerEntry | null, items: readonly Item[]): { move: Move } | { why: string } {
  if (entry === null) return { why: 'it is not in a server entry' };
  const via = entry.transport === 'stdio' ? 'env' : entry.transport === 'remote' ? 'header' : null;
  if (via === null) return { why: 'the entry has neither a command nor a URL' };
  if (via === 'header' && entry.type === 'sse') return { why: 'it uses the older HTTP+SSE transport, and Mandate reaches upstreams over Streamable HTTP' };
  const misplaced = items.find((i) => i.detection.field.role !== via);
  if (misplaced !== undefined) {
    const where = misplaced.detection.field.location;
    return {
      why:
        via === 'env'
          ? `the secret in ${where} is not an environment variable: give it to the server in env instead, then run --fix again`
          : `the secret in ${where} is not in a header: send it in a header instead, then run --fix again`,
    };
  }
  const fields = [...new Set(items.map((i) => i.detection.field))];
  if (fields.length > 1) return { why: `it has ${fields.length} secrets (${fields.map((f) => f.location).join(', ')}), and a server's auth in mandate.yaml carries one` };
  const field = fields[0]!;
  const key = field.name ?? '';
  if (!(via === 'env' ? ENV_NAME : HEADER_NAME).test(key)) return { why: `${field.location} is not a name the gateway can set` };
  let value = field.value;
  let scheme: string | undefined;
  const schemed = via === 'header' ? /^([A-Za-z][A-Za-z0-9._-]{0,31}) +(\S+)$/.exec(value) : null;
  if (schemed && /^(?:bearer|token|basic|apikey|api-key)$/i.test(schemed[1]!)) {
    scheme = schemed[1];
    value = schemed[2]!;
  }
  if (/[\r\n\0]/.test(value)) return { why: `the value of ${field.location} has a line break, which no secret in the store can hold: move it by hand` };
  if (Buffer.byteLength(value) > MAX_SECRET_BYTES) return { why: `the value of ${field.location} is larger than the secret store holds (16 KiB)` };
  return { move: { field, value, via, key, scheme } };
}

/** `auth:` for a moved secret, in mandate.yaml's flow style. */
function authLine(name: string, move: Move): string {
  const where = move.via === 'env' ? `env: ${yamlScalar(move.key)}` : `header: ${yamlScalar(move.key)}${move.scheme === undefined ? '' : `, scheme: ${yamlScalar(move.scheme)}`}`;
  return `{ kind: secret, secret: ${name}, ${where} }`;
}

interface FixState {
  target: FixTarget;
  /** Route names used in this run, with what they were made from: the same server in two files is one route. */
  routes: Map<string, string>;
  /** Secret names stored in this run, with a hash of their value: a name is reused only for the same value. */
  stored: Map<string, string>;
  /** Findings left where they are. */
  remaining: number;
}

/** What makes two entries the same server (in memory only: it hashes secrets too). */
function fingerprintOf(entry: ServerEntry): string {
  return sha256(JSON.stringify([entry.command ?? null, entry.args, entry.env, entry.url?.value ?? null, entry.headers]));
}

/** The route name for a server, unique in this run unless it is the same server (same fingerprint). */
function routeFor(entry: ServerEntry, state: FixState): { route: string; seen: boolean } {
  const fingerprint = fingerprintOf(entry);
  const base = slug(entry.name);
  for (let n = 1; ; n += 1) {
    const route = n === 1 ? base : `${base.slice(0, 58)}-${n}`;
    const known = state.routes.get(route);
    if (known === undefined) {
      state.routes.set(route, fingerprint);
      return { route, seen: false };
    }
    if (known === fingerprint) return { route, seen: true };
  }
}

/** Stores a server's secret under a name of its own (another name when this run stored another value under it); the name, or null after saying why not. */
async function store(route: string, move: Move, state: FixState, label: string): Promise<string | null> {
  const base = secretName(route, move.key);
  const hash = sha256(move.value);
  let name = base;
  for (let n = 2; state.stored.has(name) && state.stored.get(name) !== hash; n += 1) name = `${base}-${n}`;
  if (state.stored.has(name)) return name;
  try {
    await state.target.storeSecret(name, move.value);
  } catch (error) {
    printNote(`mandate: ${label}: could not store secret ${name}: ${redacted(redacted(error, move.value), move.field.value)}`);
    return null;
  }
  state.stored.set(name, hash);
  return name;
}

/** The mandate.yaml `servers:` entry for a migrated server (lines, not yet cleaned). */
function mandateEntry(route: string, entry: ServerEntry, name: string, move: Move): string[] {
  const lines = [`  - name: ${route}`];
  if (entry.transport === 'stdio') {
    lines.push(`    command: ${yamlScalar(entry.command ?? '')}`);
    if (entry.args.length > 0) lines.push(`    args: [${entry.args.map(yamlScalar).join(', ')}]`);
    const env = entry.env.filter(([key]) => key !== move.key);
    // A value named like a secret is not printed even when it was not found to be one (too short to tell): it is copied by hand.
    const shown = env.map(([key, value]) => `${yamlScalar(key)}: ${isSecretName(key) && !isPlaceholder(value) ? '"<copy it from the client file>"' : yamlScalar(value)}`);
    if (shown.length > 0) lines.push(`    env: { ${shown.join(', ')} }`);
  } else {
    lines.push(`    url: ${yamlScalar(entry.url?.value ?? '')}`);
  }
  lines.push(`    auth: ${authLine(name, move)}`);
  return lines;
}

/** Writes a file atomically: a temporary file beside it, synced, renamed over it, with the old file's mode. */
function writeAtomically(file: string, text: string, mode: number): void {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.mandate-tmp`);
  const fd = openSync(temp, 'wx', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temp);
    throw error;
  }
  closeSync(fd);
  try {
    chmodSync(temp, mode);
    renameSync(temp, file);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // already gone
    }
    throw error;
  }
}

/** Keeps the file as it was in FILE.mandate-backup (FILE.mandate-backup.2… when that exists), mode 0600; returns its path. */
function backUp(file: string, bytes: Buffer): string {
  for (let n = 1; ; n += 1) {
    const backup = n === 1 ? `${file}.mandate-backup` : `${file}.mandate-backup.${n}`;
    let fd: number;
    try {
      fd = openSync(backup, 'wx', 0o600);
    } catch (error) {
      if (codeOf(error) === 'EEXIST') continue;
      throw error;
    }
    try {
      writeSync(fd, bytes);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(backup, 0o600);
    return backup;
  }
}

/** Groups a file's items by the server entry they are in. */
function byEntry(items: readonly Item[]): { entry: ServerEntry | null; items: Item[] }[] {
  const groups: { entry: ServerEntry | null; items: Item[] }[] = [];
  for (const item of items) {
    const group = item.entry === null ? undefined : groups.find((g) => g.entry === item.entry);
    if (group) group.items.push(item);
    else groups.push({ entry: item.entry, items: [item] });
  }
  return groups;
}

function entryLabel(file: string, entry: ServerEntry | null, items: readonly Item[]): string {
  const project = entry?.project === undefined ? '' : ` (project ${entry.project})`;
  return `${file}, server ${entry?.name ?? items[0]!.finding.server}${project}`;
}

/** mandate.yaml is not rewritten: each server's secret is stored and what to change is printed. */
async function fixMandateYaml(scanned: ScannedFile, state: FixState): Promise<void> {
  for (const { entry, items } of byEntry(scanned.items)) {
    const label = entryLabel(scanned.file, entry, items);
    // Left in the file either way, until the user changes it.
    state.remaining += items.length;
    const plan = planMove(entry, items);
    if ('why' in plan || entry === null) {
      printLine(`${label}: not changed: ${'why' in plan ? plan.why : 'it is not in a server entry'}`);
      continue;
    }
    const name = await store(slug(entry.name), plan.move, state, label);
    if (name === null) continue;
    printLine(`${label}: stored secret ${name}; mandate.yaml is not rewritten: remove ${plan.move.field.location} and add`);
    printLine(`    auth: ${authLine(name, plan.move)}`);
  }
}

/** Moves the secrets of one client file: store them, then rewrite the file with each migrated server pointing at Mandate. */
async function fixClientFile(scanned: ScannedFile, state: FixState): Promise<void> {
  const { config } = scanned;
  if (config === null || scanned.format === null) {
    printLine(`${scanned.file}: not changed: it could not be read as a client configuration; move its secrets by hand`);
    state.remaining += scanned.items.length;
    return;
  }
  if (config.comments) {
    printLine(`${scanned.file}: not changed: it has comments, which rewriting it would lose; move its secrets by hand (or remove the comments and run --fix again)`);
    state.remaining += scanned.items.length;
    return;
  }
  const replacements: { span: { start: number; end: number }; value: unknown }[] = [];
  const moved: string[] = [];
  const yaml: string[] = [];
  let movedItems = 0;
  for (const { entry, items } of byEntry(scanned.items)) {
    const label = entryLabel(scanned.file, entry, items);
    const plan = planMove(entry, items);
    if ('why' in plan || entry === null || entry.span === undefined) {
      printLine(`${label}: not changed: ${'why' in plan ? plan.why : 'its place in the file is unknown'}`);
      state.remaining += items.length;
      continue;
    }
    const { route, seen } = routeFor(entry, state);
    const name = await store(route, plan.move, state, label);
    if (name === null) {
      state.remaining += items.length;
      continue;
    }
    const endpoint = state.target.endpoint(route);
    replacements.push({ span: entry.span, value: remoteEntry(config.format, endpoint, entry.extra) });
    moved.push(`${label}: now ${endpoint}; its ${plan.move.field.location} is the secret ${name}`);
    movedItems += items.length;
    if (!seen) yaml.push(...mandateEntry(route, entry, name, plan.move));
  }
  if (replacements.length === 0) return;

  const current = readFileSync(scanned.real);
  if (current.toString('utf8') !== scanned.text) {
    printNote(`mandate: ${scanned.file}: not changed: it changed while it was scanned; run --fix again (the secrets are stored)`);
    state.remaining += movedItems;
    return;
  }
  const rewritten = spliceJson(scanned.text, replacements);
  // The new text must read as a configuration of the same client.
  if (readConfig(rewritten, config.format, scanned.file) === null) throw new Error(`${scanned.file}: the rewritten file would not be a client configuration; not changed`);
  const mode = statSync(scanned.real).mode & 0o777;
  const backup = backUp(scanned.real, current);
  writeAtomically(scanned.real, rewritten, mode);
  for (const line of moved) printLine(line);
  printLine(`  the file as it was, secrets included, is kept in ${backup} (mode 0600): delete it once the migration works`);
  if (yaml.length > 0) {
    printLine('add to mandate.yaml:');
    printLine('servers:');
    for (const line of yaml) printLine(line);
  }
}

async function resolveTarget(given: ScanDeps['fixTarget']): Promise<FixTarget> {
  if (given === undefined) throw new UsageError("--fix needs Mandate's secret store, which this build does not have yet");
  return typeof given === 'function' ? given() : given;
}

// ---------------------------------------------------------------- the command

/**
 * `mandate scan`: returns the exit code (1 found, 0 none); bad usage throws
 * UsageError (exit 2 through the CLI's `run`). With --fix: 0 when every
 * finding was moved, 1 when some are left where they were.
 */
export async function scan(paths: readonly string[], flags: ScanFlags = {}, deps: ScanDeps = {}): Promise<number> {
  if (flags.json && flags.sarif) throw new UsageError('give --json or --sarif, not both');
  if (flags.fix && (flags.json || flags.sarif)) throw new UsageError('--fix prints what it did as text: drop --json and --sarif');
  const env = deps.env ?? process.env;
  const context = { cwd: deps.cwd ?? process.cwd(), home: deps.home ?? os.homedir(), platform: deps.platform ?? process.platform, env };
  const target = flags.fix ? await resolveTarget(deps.fixTarget) : null;

  const notes: string[] = [];
  const scanned: ScannedFile[] = [];
  const seen = new Set<string>();
  for (const candidate of candidates(paths, context, notes)) {
    let real: string;
    try {
      real = realpathSync(candidate.full);
    } catch {
      real = candidate.full;
    }
    if (seen.has(real)) continue;
    seen.add(real);
    const file = scanFile(candidate, notes);
    if (file !== null) scanned.push(file);
  }
  for (const note of notes) printNote(`mandate: ${note}`);

  const findings = scanned.flatMap((file) => file.items.map((item) => item.finding));
  if (flags.sarif) printJson(toSarif(findings, context.cwd));
  else if (flags.json) printJson(findings);
  else if (paths.length === 0 && scanned.length === 0) printLine('no MCP client configuration found in the usual locations (name files or directories to scan)');
  else printText(findings, scanned.length);

  if (target === null || findings.length === 0) return findings.length > 0 ? 1 : 0;
  const state: FixState = { target, routes: new Map(), stored: new Map(), remaining: 0 };
  // The gateway's own servers keep their names: a client's server gets another, unless it is the same server.
  for (const file of scanned) if (file.format === 'mandate') for (const entry of file.config?.servers ?? []) state.routes.set(slug(entry.name), fingerprintOf(entry));
  for (const file of scanned) {
    if (file.items.length === 0) continue;
    if (file.format === 'mandate') await fixMandateYaml(file, state);
    else await fixClientFile(file, state);
  }
  printLine(state.remaining === 0 ? 'every finding was moved' : `${plural(state.remaining, 'finding is', 'findings are')} left where they were`);
  return state.remaining === 0 ? 0 : 1;
}

/**
 * The command from its arguments, as the CLI runs it, to an exit code:
 * 0 nothing found, 1 found, 2 bad usage (an unknown option, a PATH that
 * cannot be read). Errors print one line on stderr, as `run` does.
 */
export async function scanArgv(argv: readonly string[], deps: ScanDeps = {}): Promise<number> {
  try {
    const flags: ScanFlags = {};
    const paths: string[] = [];
    let options = true;
    for (const arg of argv) {
      if (options && arg === '--') options = false;
      else if (options && arg === '--json') flags.json = true;
      else if (options && arg === '--sarif') flags.sarif = true;
      else if (options && arg === '--fix') flags.fix = true;
      else if (options && arg.startsWith('-') && arg !== '-') throw new UsageError(`unknown option '${arg}'`);
      else paths.push(arg);
    }
    return await scan(paths, flags, deps);
  } catch (error) {
    process.stderr.write(`mandate: ${cleanLines(error instanceof Error ? error.message : String(error))}\n`);
    return error instanceof UsageError ? 2 : 1;
  }
}
