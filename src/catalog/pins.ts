/**
 * Tool pins and drift. When a catalog entry is approved, each of its tools is
 * pinned: the SHA-256 (lowercase hex) of the RFC 8785 form of the six fields
 * of its `tools/list` item that say what the tool is and does — `name`,
 * `title`, `description`, `inputSchema`, `outputSchema`, `annotations`. A
 * field the upstream left out stays out (it is not set to null), so "absent"
 * and "present but empty" pin differently.
 *
 * Every other field of the item is outside the pin on purpose: `_meta` is the
 * protocol's free-form side channel and may legitimately differ from one
 * answer to the next (trace ids, per-session data), `icons` is presentation,
 * and `execution` (task support) says how a call is run, not what the tool
 * is. Pinning them would quarantine tools for changes nobody reviews.
 *
 * At run time each `tools/list` answer is held against the pins
 * (compareTools): an unchanged tool passes, a changed or new one is
 * quarantined — hidden and refused — with a readable diff until someone
 * approves its hash (approvePin), and a pinned tool no longer listed is
 * simply gone. Tool definitions come from the upstream and are attacker
 * controlled: the diff text escapes every character that could steer a
 * terminal or a log reader, and its size is bounded.
 */
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { JsonValue } from '../audit/events.ts';
import type { JsonObject, ToolPin } from './types.ts';

/** The fields of a `tools/list` item that a pin covers, in the order diffs show them. */
export const PINNED_FIELDS = ['name', 'title', 'description', 'inputSchema', 'outputSchema', 'annotations'] as const;

/** The longest tool name accepted, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 256;
/** How deep a pinned definition may nest (objects and arrays); deeper ones are refused, not pinned. */
export const MAX_DEFINITION_DEPTH = 64;
/** Change lines in one diff text; the rest are counted ("… and K more changes"). */
export const MAX_CHANGE_LINES = 200;
/** How deep a diff descends; below it a differing subtree is reported as one change. */
export const MAX_DIFF_DEPTH = 24;
/** Characters of a string value shown in a diff line before it is shortened. */
const SHOWN_STRING_CHARS = 160;
/** Characters of an object or array value shown in a diff line before it is shortened. */
const SHOWN_VALUE_CHARS = 200;
/** Characters of a path shown in a diff line before it is shortened. */
const SHOWN_PATH_CHARS = 300;
/** Hex digits of a hash shown in messages. */
const SHORT_HASH = 12;

/** A tool item that cannot be pinned: not an object, a bad name, or a field that is not plain JSON. */
export class ToolDefinitionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ToolDefinitionError';
  }
}

/** An approval of a hash that is no longer the live definition's: the tool changed again after review. */
export class StalePinError extends Error {
  readonly tool: string;
  readonly reviewedHash: string;
  readonly liveHash: string;
  constructor(tool: string, reviewedHash: string, liveHash: string) {
    super(
      `tool ${quoteName(tool)}: the definition changed since the reviewed hash (reviewed ${shortHash(reviewedHash)}, live ${shortHash(liveHash)}); ` +
        'review the live definition and approve its hash',
    );
    this.name = 'StalePinError';
    this.tool = tool;
    this.reviewedHash = reviewedHash;
    this.liveHash = liveHash;
  }
}

/** One difference between a pinned and a live definition. */
export interface FieldChange {
  /** Where: dotted keys, `[i]` for array items, `["…"]` for keys that are not plain words (e.g. `inputSchema.properties.city.type`). */
  path: string;
  /** The pinned value; absent for an addition. Full, never shortened. */
  before?: JsonValue;
  /** The live value; absent for a removal. Full, never shortened. */
  after?: JsonValue;
}

/** A tool held back: changed since its pin, new, or listed more than once. */
export interface Drift {
  name: string;
  /** The live definition's hash: what an approval must name. */
  hash: string;
  kind: 'changed' | 'new';
  /** The pin's hash, for a pinned tool. */
  pinnedHash?: string;
  /** Readable and terminal-safe: a heading line, then one line per change. */
  diff: string;
  changes: FieldChange[];
}

/** A listed item that could not be pinned at all (so it is neither allowed nor approvable): hidden like a quarantined tool. */
export interface InvalidTool {
  /** Its position in the list. */
  index: number;
  /** Its name, when it has a string one. */
  name?: string;
  /** Why, terminal-safe. */
  reason: string;
}

/** A `tools/list` answer held against the pins. */
export interface ToolReview {
  /** Names whose live definition equals the pin, in list order. */
  allowed: string[];
  /** Changed, new and ambiguous (duplicate-name) tools, in list order. */
  quarantined: Drift[];
  /** Pinned names the list no longer has, in pin order. */
  removed: string[];
  /** Items that cannot be pinned (no valid name, not plain JSON, too deep). */
  invalid: InvalidTool[];
}

// ---------------------------------------------------------------------------
// Definitions and hashes

type Plain = Record<string, unknown>;

function isPlainObject(value: unknown): value is Plain {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** An own property, never one inherited (`__proto__` included). */
function own(object: Plain, key: string): unknown {
  return Object.hasOwn(object, key) ? object[key] : undefined;
}

/** Sets a key as an own data property, so a `__proto__` key stays a key. */
function setOwn(object: JsonObject, key: string, value: JsonValue): void {
  Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
}

/** A deep copy of a JSON value, refusing what RFC 8785 cannot hash or is nested too deep. */
function copyJson(value: unknown, path: Array<string | number>, depth: number): JsonValue {
  const where = () => showPath(formatPath(path));
  if (value === null || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new ToolDefinitionError(`${where()} is not a finite number`);
    return value;
  }
  if (typeof value === 'string') {
    if (!value.isWellFormed()) throw new ToolDefinitionError(`${where()} holds a lone surrogate (not valid Unicode)`);
    return value;
  }
  if (Array.isArray(value) || isPlainObject(value)) {
    if (depth >= MAX_DEFINITION_DEPTH) throw new ToolDefinitionError(`${where()} nests deeper than ${MAX_DEFINITION_DEPTH} levels`);
  }
  if (Array.isArray(value)) {
    const out: JsonValue[] = [];
    for (let i = 0; i < value.length; i++) {
      path.push(i);
      if (value[i] === undefined) throw new ToolDefinitionError(`${where()} is not a JSON value`);
      out.push(copyJson(value[i], path, depth + 1));
      path.pop();
    }
    return out;
  }
  if (isPlainObject(value)) {
    const out: JsonObject = {};
    for (const key of Object.keys(value)) {
      path.push(key);
      if (!key.isWellFormed()) throw new ToolDefinitionError(`${where()}: the key holds a lone surrogate (not valid Unicode)`);
      const item = value[key];
      // As in JSON.stringify, an undefined member is an absent one.
      if (item !== undefined) setOwn(out, key, copyJson(item, path, depth + 1));
      path.pop();
    }
    return out;
  }
  throw new ToolDefinitionError(`${where()} is not a JSON value (${typeof value})`);
}

/**
 * The part of a `tools/list` item that is pinned: its six fields, absent ones
 * left out, as a fresh copy. Throws ToolDefinitionError when the item is not
 * an object, its name is not a non-empty string of at most 256 UTF-8 bytes,
 * or a field is not plain JSON (or nests deeper than MAX_DEFINITION_DEPTH).
 */
export function pinDefinition(tool: unknown): JsonObject {
  if (!isPlainObject(tool)) {
    const what = tool === null ? 'null' : Array.isArray(tool) ? 'an array' : typeof tool;
    throw new ToolDefinitionError(`a tool definition must be a JSON object, not ${what}`);
  }
  const name = own(tool, 'name');
  if (typeof name !== 'string') throw new ToolDefinitionError(`a tool definition needs a string "name" (found ${name === undefined ? 'none' : name === null ? 'null' : typeof name})`);
  if (name.length === 0) throw new ToolDefinitionError('a tool name must not be empty');
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_NAME_BYTES) throw new ToolDefinitionError(`a tool name must be at most ${MAX_NAME_BYTES} bytes (this one has ${bytes}: ${quoteName(name)})`);
  const definition: JsonObject = {};
  for (const field of PINNED_FIELDS) {
    const value = own(tool, field);
    if (value === undefined) continue;
    try {
      setOwn(definition, field, copyJson(value, [field], 0));
    } catch (error) {
      if (error instanceof ToolDefinitionError) throw new ToolDefinitionError(`tool ${quoteName(name)}: ${error.message}`);
      throw error;
    }
  }
  return definition;
}

/** SHA-256 (lowercase hex) of the RFC 8785 form of a definition as pinDefinition returns it. */
export function definitionHash(definition: JsonObject): string {
  const text = canonicalize(definition);
  if (text === undefined) throw new ToolDefinitionError('the definition has no JSON form');
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** The pin hash of a `tools/list` item (see pinDefinition for what it covers and refuses). */
export function toolHash(tool: unknown): string {
  return definitionHash(pinDefinition(tool));
}

/** The pin of a `tools/list` item: its name, hash and pinned definition. */
export function pinOf(tool: unknown): ToolPin {
  const definition = pinDefinition(tool);
  return { name: definition.name as string, hash: definitionHash(definition), definition };
}

// ---------------------------------------------------------------------------
// Terminal-safe text

/**
 * Characters escaped in diff text: C0 controls (ESC, CR, LF…), DEL, C1
 * controls, the Arabic letter mark, zero-width and direction marks, line and
 * paragraph separators, bidi embeddings and overrides (U+202A–U+202E),
 * invisible operators and bidi isolates (U+2060–U+206F), the BOM, interlinear
 * annotation marks, Unicode tags (U+E0000–U+E007F, used to hide text from
 * readers) and the supplementary variation selectors.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\u{e0000}-\u{e007f}\u{e0100}-\u{e01ef}]/gu;

function escapeUnit(unit: number): string {
  return `\\u${unit.toString(16).padStart(4, '0')}`;
}

/** Text with every unsafe character as a `\uXXXX` escape (astral ones as their two surrogates). */
export function escapeForTerminal(text: string): string {
  return text.replace(UNSAFE, (char) => (char.length === 1 ? escapeUnit(char.charCodeAt(0)) : escapeUnit(char.charCodeAt(0)) + escapeUnit(char.charCodeAt(1))));
}

/** The first `length` UTF-16 units of `text`, never ending in half a surrogate pair. */
function cut(text: string, length: number): string {
  if (text.length <= length) return text;
  const end = length > 0 && /[\ud800-\udbff]/.test(text.charAt(length - 1)) ? length - 1 : length;
  return text.slice(0, end);
}

/** A quoted tool name for messages: JSON quoting, escaped, shortened. */
function quoteName(name: string): string {
  return showString(name);
}

function shortHash(hash: string): string {
  return hash.length > SHORT_HASH ? `${hash.slice(0, SHORT_HASH)}…` : hash;
}

/** A string value: JSON-quoted and escaped; past SHOWN_STRING_CHARS cut, with an ellipsis and its full length. */
function showString(text: string): string {
  if (text.length <= SHOWN_STRING_CHARS) return escapeForTerminal(JSON.stringify(text));
  const quoted = JSON.stringify(cut(text, SHOWN_STRING_CHARS));
  return escapeForTerminal(`${quoted.slice(0, -1)}…" (${text.length} chars)`);
}

/** JSON text of a value, keys in RFC 8785 order, stopping once `budget` characters are written (`complete` false then). */
function renderBounded(value: JsonValue, budget: number): { text: string; complete: boolean } {
  let out = '';
  const fits = (piece: string): boolean => {
    if (out.length + piece.length > budget) {
      out += piece.slice(0, budget - out.length);
      return false;
    }
    out += piece;
    return true;
  };
  // Each level writes at least one character, so the budget also bounds the recursion.
  const write = (item: JsonValue): boolean => {
    if (item === null || typeof item !== 'object') {
      return fits(typeof item === 'string' ? JSON.stringify(cut(item, budget - out.length + 1)) : JSON.stringify(item));
    }
    if (Array.isArray(item)) {
      if (!fits('[')) return false;
      for (let i = 0; i < item.length; i++) if ((i > 0 && !fits(',')) || !write(item[i] as JsonValue)) return false;
      return fits(']');
    }
    if (!fits('{')) return false;
    const keys = Object.keys(item).sort();
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string;
      if ((i > 0 && !fits(',')) || !fits(`${JSON.stringify(cut(key, budget - out.length + 1))}:`) || !write(item[key] as JsonValue)) return false;
    }
    return fits('}');
  };
  const complete = write(value);
  return { text: complete ? out : cut(out, budget), complete };
}

/** A value in a diff line: full when short, else shortened with an ellipsis and its size. */
function showValue(value: JsonValue): string {
  if (typeof value === 'string') return showString(value);
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  const { text, complete } = renderBounded(value, SHOWN_VALUE_CHARS);
  if (complete) return escapeForTerminal(text);
  const size = Array.isArray(value) ? `${value.length} items` : `${Object.keys(value).length} keys`;
  return `${escapeForTerminal(text)}… (${size})`;
}

// ---------------------------------------------------------------------------
// Paths and diffs

const PLAIN_KEY = /^[A-Za-z0-9_$-]+$/;

/** A key as a path segment: `.key` for plain words, `["…"]` (escaped) otherwise. */
function keySegment(key: string, first: boolean): string {
  if (PLAIN_KEY.test(key)) return first ? key : `.${key}`;
  return `[${escapeForTerminal(JSON.stringify(key))}]`;
}

function formatPath(segments: ReadonlyArray<string | number>): string {
  return segments.map((segment, i) => (typeof segment === 'number' ? `[${segment}]` : keySegment(segment, i === 0))).join('');
}

function showPath(path: string): string {
  return path.length <= SHOWN_PATH_CHARS ? path : `${cut(path, SHOWN_PATH_CHARS)}… (${path.length} chars)`;
}

function sameJson(a: JsonValue, b: JsonValue): boolean {
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  return canonicalize(a) === canonicalize(b);
}

interface Collector {
  changes: FieldChange[];
  total: number;
}

function note(collector: Collector, change: FieldChange): void {
  collector.total++;
  if (collector.changes.length < MAX_CHANGE_LINES) collector.changes.push(change);
}

/** Top-level keys in the pin's field order, then any others sorted. */
function orderedKeys(keys: Iterable<string>, topLevel: boolean): string[] {
  const all = [...new Set(keys)].sort();
  if (!topLevel) return all;
  const known: string[] = PINNED_FIELDS.filter((field) => all.includes(field));
  return [...known, ...all.filter((key) => !(PINNED_FIELDS as readonly string[]).includes(key))];
}

function walk(before: JsonValue | undefined, after: JsonValue | undefined, path: string, depth: number, collector: Collector): void {
  if (before === undefined && after === undefined) return;
  if (before === undefined) return note(collector, { path, after: after as JsonValue });
  if (after === undefined) return note(collector, { path, before });
  if (depth < MAX_DIFF_DEPTH && isPlainObject(before) && isPlainObject(after)) {
    const b = before as Plain;
    const a = after as Plain;
    for (const key of orderedKeys([...Object.keys(b), ...Object.keys(a)], depth === 0)) {
      walk(own(b, key) as JsonValue | undefined, own(a, key) as JsonValue | undefined, path + keySegment(key, path === ''), depth + 1, collector);
    }
    return;
  }
  // Arrays are compared index by index: an item inserted at the front shows as every later index changed.
  if (depth < MAX_DIFF_DEPTH && Array.isArray(before) && Array.isArray(after)) {
    const length = Math.max(before.length, after.length);
    for (let i = 0; i < length; i++) walk(before[i], after[i], `${path}[${i}]`, depth + 1, collector);
    return;
  }
  if (!sameJson(before, after)) note(collector, { path, before, after });
}

function changeLine(change: FieldChange): string {
  const path = showPath(change.path);
  if (change.before === undefined) return `+ ${path}: ${showValue(change.after as JsonValue)}`;
  if (change.after === undefined) return `- ${path}: ${showValue(change.before)}`;
  return `~ ${path}: ${showValue(change.before)} → ${showValue(change.after)}`;
}

/**
 * What differs between a pinned definition and a live one (`pinned` null: a
 * new tool, every live field an addition). Objects are compared key by key,
 * arrays index by index (an insertion shows as changes at every later index),
 * down to MAX_DIFF_DEPTH levels, below which a differing subtree is one
 * change. `diff` has one line per change — `~ path: before → after`,
 * `+ path: after`, `- path: before` — with long values shortened and unsafe
 * characters escaped; past MAX_CHANGE_LINES it ends in "… and K more
 * changes". `changes` holds the same (at most MAX_CHANGE_LINES) changes with
 * full values; `omitted` counts those left out.
 */
export function diffDefinitions(pinned: JsonObject | null, live: JsonObject): { diff: string; changes: FieldChange[]; omitted: number } {
  const collector: Collector = { changes: [], total: 0 };
  if (pinned === null) {
    for (const key of orderedKeys(Object.keys(live), true)) {
      const value = own(live, key) as JsonValue | undefined;
      if (value !== undefined) note(collector, { path: keySegment(key, true), after: value });
    }
  } else {
    walk(pinned, live, '', 0, collector);
  }
  const lines = collector.changes.map(changeLine);
  const omitted = collector.total - collector.changes.length;
  if (omitted > 0) lines.push(`… and ${omitted} more change${omitted === 1 ? '' : 's'}`);
  return { diff: lines.join('\n'), changes: collector.changes, omitted };
}

// ---------------------------------------------------------------------------
// Review and approval

/**
 * Holds a `tools/list` answer's tools against the pins. A tool whose live
 * hash equals its pin's is allowed; a changed or unpinned one is quarantined
 * with its diff. A name listed more than once is ambiguous — a call by that
 * name could reach either — so every tool of that name is quarantined,
 * whatever its hash. An item that cannot be pinned is reported in `invalid`
 * (and so is neither allowed nor approvable). Pins are expected one per name
 * (approvePin keeps them so); should a list of pins repeat a name, the last
 * one counts.
 */
export function compareTools(pins: readonly ToolPin[], tools: readonly unknown[]): ToolReview {
  const pinned = new Map<string, ToolPin>();
  for (const pin of pins) pinned.set(pin.name, pin);

  const listedNames = new Map<string, number>();
  for (const tool of tools) {
    const name = isPlainObject(tool) ? own(tool, 'name') : undefined;
    if (typeof name === 'string') listedNames.set(name, (listedNames.get(name) ?? 0) + 1);
  }

  const review: ToolReview = { allowed: [], quarantined: [], removed: [], invalid: [] };
  tools.forEach((tool, index) => {
    let definition: JsonObject;
    try {
      definition = pinDefinition(tool);
    } catch (error) {
      if (!(error instanceof ToolDefinitionError)) throw error;
      const name = isPlainObject(tool) ? own(tool, 'name') : undefined;
      review.invalid.push({ index, ...(typeof name === 'string' ? { name } : {}), reason: error.message });
      return;
    }
    const name = definition.name as string;
    const hash = definitionHash(definition);
    const pin = pinned.get(name);
    const count = listedNames.get(name) ?? 1;
    if (pin !== undefined && pin.hash === hash && count === 1) {
      review.allowed.push(name);
      return;
    }
    const { diff, changes } = diffDefinitions(pin?.definition ?? null, definition);
    const heading: string[] = [];
    if (count > 1) heading.push(`tool ${quoteName(name)} is listed ${count} times in one answer: ambiguous, every tool of that name is quarantined`);
    if (pin === undefined) heading.push(`new tool ${quoteName(name)} (sha256 ${hash}): not pinned`);
    else if (pin.hash === hash) heading.push(`tool ${quoteName(name)} (sha256 ${hash}) equals its pin`);
    else heading.push(`tool ${quoteName(name)} changed: pinned ${shortHash(pin.hash)}, live sha256 ${hash}`);
    let body = diff;
    if (pin !== undefined && pin.hash !== hash && changes.length === 0) body = '(no field differs from the stored pinned definition: the pin record does not match its own hash)';
    review.quarantined.push({
      name,
      hash,
      kind: pin === undefined ? 'new' : 'changed',
      ...(pin !== undefined ? { pinnedHash: pin.hash } : {}),
      diff: [...heading, ...(body === '' ? [] : [body])].join('\n'),
      changes,
    });
  });
  for (const pin of pinned.values()) if (!listedNames.has(pin.name)) review.removed.push(pin.name);
  return review;
}

const HASH = /^[0-9a-f]{64}$/;

/**
 * The pins with `liveTool`'s pin put in place of any pin of the same name
 * (or added at the end) — only when `hash`, the hash that was reviewed,
 * still is the live definition's. Otherwise the tool changed again after
 * the review and StalePinError refuses the approval. `hash` must be the full
 * SHA-256 hex (either case). The given list is not modified.
 */
export function approvePin(pins: readonly ToolPin[], liveTool: unknown, hash: string): ToolPin[] {
  const reviewed = typeof hash === 'string' ? hash.trim().toLowerCase() : '';
  if (!HASH.test(reviewed)) throw new Error('the approved hash must be a full SHA-256 in hex (64 digits)');
  const pin = pinOf(liveTool);
  if (pin.hash !== reviewed) throw new StalePinError(pin.name, reviewed, pin.hash);
  // In the place of the first pin it replaces (any other pin of that name goes), else at the end.
  const at = pins.findIndex((item) => item.name === pin.name);
  const rest = pins.filter((item) => item.name !== pin.name);
  if (at === -1) return [...rest, pin];
  return [...rest.slice(0, at), pin, ...rest.slice(at)];
}

/** A pinned tool's Cedar attributes: it is pinned, and the annotations that were reviewed ({} when it has none). */
export function pinAttributes(pin: ToolPin): { pinned: true; annotations: JsonObject } {
  const annotations = own(pin.definition, 'annotations');
  return { pinned: true, annotations: isPlainObject(annotations) ? (structuredClone(annotations) as JsonObject) : {} };
}
