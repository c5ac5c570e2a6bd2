/**
 * Reading each MCP client's configuration file into the same shape: its
 * servers, and for each the values `detect.ts` looks at (env, headers,
 * args, URL), with their lines.
 *
 * | client | file | servers under | remote entry |
 * |---|---|---|---|
 * | Claude Desktop | `claude_desktop_config.json` | `mcpServers` | (stdio only) |
 * | Claude Code, project | `.mcp.json` | `mcpServers` | `{"type": "http", "url", "headers"}` |
 * | Claude Code, user | `~/.claude.json` | `mcpServers`, `projects.*.mcpServers` | as `.mcp.json` |
 * | VS Code | `.vscode/mcp.json` (JSON with comments) | `servers` (and `inputs`) | `{"type": "http", "url", "headers"}` |
 * | Cursor | `.cursor/mcp.json`, `~/.cursor/mcp.json` | `mcpServers` | `{"url", "headers"}` |
 * | Windsurf | `~/.codeium/windsurf/mcp_config.json` | `mcpServers` | `{"serverUrl", "headers"}` |
 * | Mandate | `mandate.yaml` | `servers[]` (`name`, `env`, `args`, `url`) | |
 *
 * JSON is read by a small parser of its own that keeps where every value is
 * (for line numbers, and so that `--fix` can replace one server's entry in
 * the text and leave every other byte as it was); it accepts comments and
 * trailing commas (VS Code's JSON with comments) and says whether it saw any.
 */
import path from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { argFields, type Field } from './detect.ts';

export type ClientFormat = 'claude-desktop' | 'claude-code' | 'claude-user' | 'vscode' | 'cursor' | 'windsurf' | 'mcp-json' | 'mandate';

/** What each format is called in messages. */
export const FORMAT_NAMES: Record<ClientFormat, string> = {
  'claude-desktop': 'Claude Desktop',
  'claude-code': 'Claude Code (project)',
  'claude-user': 'Claude Code (user)',
  vscode: 'VS Code',
  cursor: 'Cursor',
  windsurf: 'Windsurf',
  'mcp-json': 'MCP client (mcpServers)',
  mandate: 'Mandate',
};

// ---------------------------------------------------------------- JSON with positions

interface Span {
  /** Offset of the value's first character in the text. */
  start: number;
  /** Offset just after its last character. */
  end: number;
}

export type JsonNode =
  | (Span & { type: 'object'; members: { key: string; value: JsonNode }[] })
  | (Span & { type: 'array'; items: JsonNode[] })
  | (Span & { type: 'string'; value: string })
  | (Span & { type: 'number' | 'boolean' | 'null'; raw: string });

export interface ParsedJson {
  root: JsonNode;
  /** Whether the text has comments (`//`, `/* *\/`), which rewriting it would have to keep. */
  comments: boolean;
}

/** A JSON text that does not parse; the message names the line and column, never the text there. */
export class JsonSyntaxError extends Error {
  override readonly name = 'JsonSyntaxError';
  readonly line: number;
  constructor(message: string, line: number) {
    super(message);
    this.line = line;
  }
}

/** Deepest nesting the parser follows (a hostile file must not exhaust the stack). */
const MAX_JSON_DEPTH = 256;

/** Offsets where each line starts, to turn an offset into a 1-based line. */
export function lineStarts(text: string): number[] {
  const starts = [0];
  for (let i = 0; i < text.length; i += 1) if (text.charCodeAt(i) === 10) starts.push(i + 1);
  return starts;
}

export function lineAt(starts: readonly number[], offset: number): number {
  let low = 0;
  let high = starts.length - 1;
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    if (starts[mid]! <= offset) low = mid;
    else high = mid - 1;
  }
  return low + 1;
}

/** Parses JSON, or JSON with comments and trailing commas, keeping each value's span. */
export function parseJson(text: string): ParsedJson {
  let i = 0;
  let comments = false;
  const starts = lineStarts(text);
  const fail = (what: string, at = i): never => {
    const line = lineAt(starts, at);
    throw new JsonSyntaxError(`${what} at line ${line}, column ${at - starts[line - 1]! + 1}`, line);
  };

  const skip = () => {
    for (;;) {
      const c = text[i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\uFEFF') i += 1;
      else if (c === '/' && text[i + 1] === '/') {
        comments = true;
        while (i < text.length && text[i] !== '\n') i += 1;
      } else if (c === '/' && text[i + 1] === '*') {
        comments = true;
        const close = text.indexOf('*/', i + 2);
        if (close < 0) fail('unterminated comment');
        i = close + 2;
      } else return;
    }
  };

  const string = (): string => {
    const start = i;
    i += 1;
    let out = '';
    for (;;) {
      const c = text[i];
      if (c === undefined) return fail('unterminated string', start);
      if (c === '"') {
        i += 1;
        return out;
      }
      if (c === '\\') {
        const e = text[i + 1];
        const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e !== undefined && e in simple) {
          out += simple[e];
          i += 2;
        } else if (e === 'u' && /^[0-9A-Fa-f]{4}$/.test(text.slice(i + 2, i + 6))) {
          out += String.fromCharCode(Number.parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else fail('invalid escape in a string');
      } else {
        out += c;
        i += 1;
      }
    }
  };

  const value = (depth: number): JsonNode => {
    if (depth > MAX_JSON_DEPTH) fail('nesting too deep');
    skip();
    const start = i;
    const c = text[i];
    if (c === '{') {
      i += 1;
      const members: { key: string; value: JsonNode }[] = [];
      skip();
      while (text[i] !== '}') {
        if (text[i] !== '"') fail('expected a key in double quotes');
        const key = string();
        skip();
        if (text[i] !== ':') fail("expected ':'");
        i += 1;
        members.push({ key, value: value(depth + 1) });
        skip();
        if (text[i] === ',') {
          i += 1;
          skip();
        } else if (text[i] !== '}') fail("expected ',' or '}'");
      }
      i += 1;
      return { type: 'object', members, start, end: i };
    }
    if (c === '[') {
      i += 1;
      const items: JsonNode[] = [];
      skip();
      while (text[i] !== ']') {
        items.push(value(depth + 1));
        skip();
        if (text[i] === ',') {
          i += 1;
          skip();
        } else if (text[i] !== ']') fail("expected ',' or ']'");
      }
      i += 1;
      return { type: 'array', items, start, end: i };
    }
    if (c === '"') {
      const parsed = string();
      return { type: 'string', value: parsed, start, end: i };
    }
    const literal = /^(?:true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(text.slice(i, i + 400));
    if (literal === null) return fail(c === undefined ? 'unexpected end of text' : 'unexpected character');
    i += literal[0].length;
    const raw = literal[0];
    return { type: raw === 'null' ? 'null' : raw === 'true' || raw === 'false' ? 'boolean' : 'number', raw, start, end: i };
  };

  const root = value(0);
  skip();
  if (i < text.length) fail('unexpected text after the end');
  return { root, comments };
}

/** A member of an object node (the last one, when a key is repeated, as JSON.parse does). */
export function member(node: JsonNode | undefined, key: string): JsonNode | undefined {
  if (node?.type !== 'object') return undefined;
  for (let k = node.members.length - 1; k >= 0; k -= 1) if (node.members[k]!.key === key) return node.members[k]!.value;
  return undefined;
}

/** A JSON node as a plain value (what JSON.parse would give). */
export function plain(node: JsonNode): unknown {
  switch (node.type) {
    case 'object':
      return Object.fromEntries(node.members.map((m) => [m.key, plain(m.value)]));
    case 'array':
      return node.items.map(plain);
    case 'string':
      return node.value;
    case 'null':
      return null;
    case 'boolean':
      return node.raw === 'true';
    case 'number':
      return Number(node.raw);
  }
}

// ---------------------------------------------------------------- the common shape

/** One server entry of a configuration. */
export interface ServerEntry {
  /** Its name (the key under `mcpServers`/`servers`, or mandate.yaml's `name`). */
  name: string;
  /** `~/.claude.json`: the project directory whose `mcpServers` hold it. */
  project?: string;
  transport: 'stdio' | 'remote' | 'unknown';
  /** The entry's `type` as written (`stdio`, `http`, `sse`…), when it has one. */
  type?: string;
  command?: string;
  /** The remote URL and the key it is under (`url`, or Windsurf's `serverUrl`). */
  url?: { key: string; value: string };
  /** The values looked at: env, headers, args, url (raw values: never print them). */
  fields: Field[];
  /** Its non-secret settings for the mandate.yaml entry `--fix` prints: args as given, env as given. */
  args: string[];
  env: [string, string][];
  headers: [string, string][];
  /** JSON only: its other settings (`disabled`, `autoApprove`, `timeout`…), which `--fix` keeps in the new entry. */
  extra: [string, unknown][];
  /** JSON only: where its entry's value is in the text (what `--fix` replaces). */
  span?: Span;
}

export interface ConfigFile {
  format: ClientFormat;
  servers: ServerEntry[];
  /** Values outside any server (VS Code's `inputs[].default`), under the pseudo-server `(inputs)`. */
  other: Field[];
  /** JSON with comments: `--fix` refuses to rewrite it. */
  comments: boolean;
}

/** The client format a file name says, or null (a directory walk skips it). */
export function formatOf(file: string): ClientFormat | null {
  const base = path.basename(file);
  const parent = path.basename(path.dirname(file));
  if (base === 'claude_desktop_config.json') return 'claude-desktop';
  if (base === '.mcp.json') return 'claude-code';
  if (base === '.claude.json') return 'claude-user';
  if (base === 'mcp_config.json') return 'windsurf';
  if (base === 'mandate.yaml' || base === 'mandate.yml') return 'mandate';
  if (base === 'mcp.json' && parent === '.vscode') return 'vscode';
  if (base === 'mcp.json' && parent === '.cursor') return 'cursor';
  // VS Code's user profile: Code/User/mcp.json (and Code - Insiders, VSCodium).
  if (base === 'mcp.json' && parent === 'User') return 'vscode';
  return null;
}

const stringOf = (node: JsonNode | undefined): string | undefined => (node?.type === 'string' ? node.value : undefined);

/** The keys of an entry that say how to reach the server: what `--fix` replaces (the others are kept). */
const TRANSPORT_KEYS = new Set(['type', 'transport', 'command', 'args', 'env', 'envFile', 'cwd', 'url', 'serverUrl', 'headers']);

/** A JSON server entry in the common shape. */
function jsonServer(name: string, node: JsonNode, starts: readonly number[], project?: string): ServerEntry {
  const line = (n: JsonNode) => lineAt(starts, n.start);
  const fields: Field[] = [];
  const env: [string, string][] = [];
  const headers: [string, string][] = [];
  const args: string[] = [];
  const envNode = member(node, 'env');
  if (envNode?.type === 'object') {
    for (const m of envNode.members) {
      if (m.value.type === 'number' || m.value.type === 'boolean') env.push([m.key, m.value.raw]);
      if (m.value.type !== 'string') continue;
      env.push([m.key, m.value.value]);
      fields.push({ location: `env.${m.key}`, role: 'env', name: m.key, value: m.value.value, line: line(m.value) });
    }
  }
  const headerNode = member(node, 'headers');
  if (headerNode?.type === 'object') {
    for (const m of headerNode.members) {
      if (m.value.type !== 'string') continue;
      headers.push([m.key, m.value.value]);
      fields.push({ location: `headers.${m.key}`, role: 'header', name: m.key, value: m.value.value, line: line(m.value) });
    }
  }
  const argNode = member(node, 'args');
  if (argNode?.type === 'array') {
    const items = argNode.items.map((item) => ({ value: stringOf(item) ?? '', line: line(item) }));
    for (const item of items) args.push(item.value);
    fields.push(...argFields(items).filter((f) => f.value !== ''));
  }
  let url: ServerEntry['url'];
  for (const key of ['url', 'serverUrl']) {
    const urlNode = member(node, key);
    const value = stringOf(urlNode);
    if (value === undefined || urlNode === undefined) continue;
    url ??= { key, value };
    fields.push({ location: key, role: 'url', value, line: line(urlNode) });
  }
  const command = stringOf(member(node, 'command'));
  const type = stringOf(member(node, 'type'));
  const transport = command !== undefined || type === 'stdio' ? 'stdio' : url !== undefined ? 'remote' : 'unknown';
  const extra = node.type === 'object' ? node.members.filter((m) => !TRANSPORT_KEYS.has(m.key)).map((m): [string, unknown] => [m.key, plain(m.value)]) : [];
  return { name, project, transport, type, command, url, fields, args, env, headers, extra, span: { start: node.start, end: node.end } };
}

function jsonServers(container: JsonNode | undefined, starts: readonly number[], project?: string): ServerEntry[] {
  if (container?.type !== 'object') return [];
  return container.members.filter((m) => m.value.type === 'object').map((m) => jsonServer(m.key, m.value, starts, project));
}

/** VS Code's `inputs`: a literal `default` of an input is a value like any other (a password input's is named like a secret). */
function vscodeInputs(node: JsonNode | undefined, starts: readonly number[]): Field[] {
  if (node?.type !== 'array') return [];
  const fields: Field[] = [];
  node.items.forEach((input, index) => {
    const id = stringOf(member(input, 'id')) ?? String(index);
    const defaultNode = member(input, 'default');
    if (defaultNode?.type !== 'string') return;
    const password = member(input, 'password');
    const name = password?.type === 'boolean' && password.raw === 'true' ? `${id}_secret` : id;
    fields.push({ location: `inputs.${id}.default`, role: 'input', name, value: defaultNode.value, line: lineAt(starts, defaultNode.start) });
  });
  return fields;
}

/** Reads a JSON client configuration (JsonSyntaxError if it does not parse). `format` null: told by its keys. */
export function readJsonConfig(text: string, format: ClientFormat | null): ConfigFile | null {
  const { root, comments } = parseJson(text);
  if (root.type !== 'object') return null;
  const starts = lineStarts(text);
  const hasServers = member(root, 'servers')?.type === 'object';
  const hasMcpServers = member(root, 'mcpServers')?.type === 'object' || member(root, 'projects')?.type === 'object';
  const chosen = format ?? (hasMcpServers ? 'mcp-json' : hasServers ? 'vscode' : null);
  if (chosen === null || chosen === 'mandate') return null;
  if (chosen === 'vscode') {
    return { format: chosen, servers: jsonServers(member(root, 'servers'), starts), other: vscodeInputs(member(root, 'inputs'), starts), comments };
  }
  const servers = jsonServers(member(root, 'mcpServers'), starts);
  const projects = member(root, 'projects');
  if (projects?.type === 'object') {
    for (const project of projects.members) servers.push(...jsonServers(member(project.value, 'mcpServers'), starts, project.key));
  }
  return { format: chosen, servers, other: [], comments };
}

// ---------------------------------------------------------------- mandate.yaml

/** A YAML text that does not parse; the message names the line. */
export class YamlSyntaxError extends Error {
  override readonly name = 'YamlSyntaxError';
  readonly line: number | undefined;
  constructor(message: string, line: number | undefined) {
    super(message);
    this.line = line;
  }
}

/** Reads mandate.yaml's servers: `servers[].env`, `servers[].args`, `servers[].url`. */
export function readMandateYaml(text: string): ConfigFile {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const line = first.linePos?.[0]?.line;
    throw new YamlSyntaxError(`not valid YAML${line === undefined ? '' : ` at line ${line}`}`, line);
  }
  const lineOf = (node: YamlNode | null | undefined) => (node?.range ? lines.linePos(node.range[0]).line : undefined);
  const scalar = (node: unknown): string | undefined => (isScalar(node) && typeof node.value === 'string' ? node.value : undefined);
  const servers: ServerEntry[] = [];
  const root = doc.contents;
  const list = isMap(root) ? root.get('servers', true) : undefined;
  if (!isSeq(list)) return { format: 'mandate', servers, other: [], comments: false };
  list.items.forEach((item, index) => {
    if (!isMap(item)) return;
    const name = scalar(item.get('name', true)) ?? `servers[${index}]`;
    const fields: Field[] = [];
    const env: [string, string][] = [];
    const args: string[] = [];
    const envNode = item.get('env', true);
    if (isMap(envNode)) {
      for (const pair of envNode.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
        const value = scalar(pair.value);
        if (key === undefined || value === undefined) continue;
        env.push([key, value]);
        fields.push({ location: `env.${key}`, role: 'env', name: key, value, line: lineOf(pair.value as YamlNode) });
      }
    }
    const argNode = item.get('args', true);
    if (isSeq(argNode)) {
      const items = argNode.items.map((arg) => ({ value: scalar(arg) ?? '', line: lineOf(arg as YamlNode) }));
      for (const arg of items) args.push(arg.value);
      fields.push(...argFields(items).filter((f) => f.value !== ''));
    }
    const urlNode = item.get('url', true);
    const urlValue = scalar(urlNode);
    if (urlValue !== undefined) fields.push({ location: 'url', role: 'url', value: urlValue, line: lineOf(urlNode as YamlNode) });
    const command = scalar(item.get('command', true));
    servers.push({
      name,
      transport: command !== undefined ? 'stdio' : urlValue !== undefined ? 'remote' : 'unknown',
      command,
      url: urlValue === undefined ? undefined : { key: 'url', value: urlValue },
      fields,
      args,
      env,
      headers: [],
      extra: [],
    });
  });
  return { format: 'mandate', servers, other: [], comments: false };
}

/** Reads a configuration of a known format, or told by its content (`format` null); null when it is none. */
export function readConfig(text: string, format: ClientFormat | null, file: string): ConfigFile | null {
  if (format === 'mandate' || (format === null && /\.ya?ml$/i.test(file))) return readMandateYaml(text);
  return readJsonConfig(text, format);
}

// ---------------------------------------------------------------- rewriting (--fix)

/** The entry that points a client at Mandate's endpoint for a server, in that client's own format; `extra` settings follow. */
export function remoteEntry(format: ClientFormat, endpoint: string, extra: readonly [string, unknown][] = []): Record<string, unknown> {
  return { ...transportOf(format, endpoint), ...Object.fromEntries(extra) };
}

function transportOf(format: ClientFormat, endpoint: string): Record<string, unknown> {
  switch (format) {
    case 'cursor':
      return { url: endpoint };
    case 'windsurf':
      return { serverUrl: endpoint };
    case 'claude-desktop':
      // Claude Desktop's file starts local (stdio) servers only: a bridge connects it to a remote one.
      return { command: 'npx', args: ['-y', 'mcp-remote', endpoint] };
    case 'claude-code':
    case 'claude-user':
    case 'vscode':
    case 'mcp-json':
    case 'mandate':
      return { type: 'http', url: endpoint };
  }
}

/** The indentation unit a JSON text uses (two spaces when it cannot tell). */
function indentUnit(text: string): string {
  const match = /\n([ \t]+)\S/.exec(text);
  if (match === null) return '  ';
  return match[1]!.startsWith('\t') ? '\t' : ' '.repeat(Math.min(match[1]!.length, 8));
}

/**
 * The text with some values replaced, every other byte kept: each new value
 * is written with the file's indentation unit, indented like the line it
 * starts on, with the file's line breaks.
 */
export function spliceJson(text: string, replacements: { span: Span; value: unknown }[]): string {
  const unit = indentUnit(text);
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  let out = text;
  for (const { span, value } of [...replacements].sort((a, b) => b.span.start - a.span.start)) {
    const lineStart = out.lastIndexOf('\n', span.start - 1) + 1;
    const indent = /^[ \t]*/.exec(out.slice(lineStart, span.start))![0];
    const rendered = JSON.stringify(value, null, unit).split('\n').join(`${eol}${indent}`);
    out = out.slice(0, span.start) + rendered + out.slice(span.end);
  }
  return out;
}
