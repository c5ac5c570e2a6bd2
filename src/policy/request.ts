/**
 * A decision request, as the gateway knows it, and how it becomes Cedar's
 * principal, action, resource, entities and context (docs/policy.md, "The
 * model"). Entities are kept small: the principal (with its groups), the
 * client, the action (with its group) and the resource (with its server).
 */
import { isIP } from 'node:net';
import type * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { isObject } from '../gateway/jsonrpc.ts';

export type Principal = { type: 'User'; id: string; groups: readonly string[] } | { type: 'Client'; id: string };

export interface ClientFacts {
  id: string;
  name: string;
  /** The user who registered or approved it, when known. */
  owner: string | null;
  kind: 'interactive' | 'machine' | 'anonymous';
}

export interface ToolHints {
  readOnlyHint?: boolean;
  destructiveHint?: boolean;
  idempotentHint?: boolean;
  openWorldHint?: boolean;
}

export type TargetType = 'Server' | 'Tool' | 'Prompt' | 'Resource';

export const HINTS = ['readOnlyHint', 'destructiveHint', 'idempotentHint', 'openWorldHint'] as const;

export interface Target {
  type: TargetType;
  /** The tool, prompt or URI; the server name for a Server. */
  name: string;
}

/** What the catalog says of a server (docs/catalog.md): Cedar attributes of its Server entity. Absent for mandate.yaml's servers. */
export interface CatalogFacts {
  owner?: string;
  team?: string;
  tenant?: string;
  environment?: string;
  risk?: string;
  classification?: string;
  status?: string;
}

export const CATALOG_FACTS = ['owner', 'team', 'tenant', 'environment', 'risk', 'classification', 'status'] as const;

export interface DecisionRequest {
  principal: Principal;
  client: ClientFacts;
  /** The MCP method: the action id. */
  method: string;
  server: string;
  target: Target;
  /** For a Tool: the hints from the upstream's own tools/list; undefined when the gateway has not seen that list. */
  hints?: ToolHints;
  /** The server's catalog entry, when it has one. */
  catalog?: CatalogFacts;
  /** For a Tool of a catalog server: whether a reviewed pin exists for it. */
  pinned?: boolean;
  scopes: readonly string[];
  /** tools/call arguments as the client sent them. */
  args?: Record<string, unknown>;
  /** Request time, epoch ms. */
  now: number;
  /** Seconds since the token was issued. */
  tokenAge: number;
  sourceAddress: string;
  /** The break-glass grant covering this request (docs/breakglass.md), when one does. */
  breakglass?: BreakglassFacts;
  /** A delegated token's actors (RFC 8693 `act`), the current one first; absent or empty for a direct one. */
  actors?: readonly string[];
  /** A task-bound token's task (docs/tasks.md). */
  task?: { id: string; purpose: string; ticket?: string; tools: readonly string[] };
}

/** What a policy sees of a break-glass grant: `context.breakglass`. */
export interface BreakglassFacts {
  id: string;
  ticket: string;
  reason: string;
  openedBy: string;
}

/** Action groups: `read` (every list, reads, subscriptions, prompts, completion) and `call`. */
export const ACTION_GROUP: Readonly<Record<string, string>> = {
  'tools/call': 'call',
  'tools/list': 'read',
  'resources/list': 'read',
  'resources/templates/list': 'read',
  'prompts/list': 'read',
  'resources/read': 'read',
  'resources/subscribe': 'read',
  'resources/unsubscribe': 'read',
  'prompts/get': 'read',
  'completion/complete': 'read',
};

/** Methods that are not policy decisions: the handshake, liveness, and every notification. */
export function isDecided(method: string): boolean {
  return method !== 'initialize' && method !== 'ping' && !method.startsWith('notifications/');
}

/** Methods decided on a named target, and what names it: without it such a request is invalid, never decided on its server instead. */
export const NAMED_TARGET: Readonly<Record<string, string>> = {
  'tools/call': 'params.name (a string)',
  'prompts/get': 'params.name (a string)',
  'resources/read': 'params.uri (a string)',
  'resources/subscribe': 'params.uri (a string)',
  'resources/unsubscribe': 'params.uri (a string)',
  'completion/complete': 'params.ref (a ref/prompt with a name, or a ref/resource with a uri)',
};

/** What a request targets: its tool, prompt or resource, else its server; null when a method of NAMED_TARGET names none. */
export function targetOf(server: string, method: string, params: Record<string, unknown> | undefined): Target | null {
  const text = (key: string): string | null => (params !== undefined && typeof params[key] === 'string' ? (params[key] as string) : null);
  const named = (type: TargetType, name: string | null): Target | null => (name === null ? null : { type, name });
  switch (method) {
    case 'tools/call':
      return named('Tool', text('name'));
    case 'prompts/get':
      return named('Prompt', text('name'));
    case 'resources/read':
    case 'resources/subscribe':
    case 'resources/unsubscribe':
      return named('Resource', text('uri'));
    case 'completion/complete': {
      const ref = params?.ref;
      if (isObject(ref) && ref.type === 'ref/prompt' && typeof ref.name === 'string') return { type: 'Prompt', name: ref.name };
      if (isObject(ref) && ref.type === 'ref/resource' && typeof ref.uri === 'string') return { type: 'Resource', name: ref.uri };
      return null;
    }
    default:
      return { type: 'Server', name: server };
  }
}

export function resourceId(server: string, target: Target): string {
  return target.type === 'Server' ? server : `${server}/${target.name}`;
}

// ---------------------------------------------------------------- arguments

const ESCAPES = new Set(['__entity', '__extn', '__expr']);

/**
 * tools/call arguments as a Cedar record. Cedar has no null, no fractions and
 * 64-bit integers only; such values (and objects shaped like Cedar's own
 * escapes, which would change meaning) are left out and named, with their
 * path, in `omitted`.
 */
export function argsRecord(args: Record<string, unknown> | undefined): { record: Record<string, cedar.CedarValueJson>; omitted: string[] } {
  const omitted: string[] = [];
  const convert = (value: unknown, path: string): cedar.CedarValueJson | undefined => {
    if (typeof value === 'string' || typeof value === 'boolean') return value;
    if (typeof value === 'number') return Number.isSafeInteger(value) ? value : undefined;
    if (Array.isArray(value)) {
      const items: cedar.CedarValueJson[] = [];
      for (const item of value) {
        const converted = convert(item, `${path}[]`);
        if (converted === undefined) return undefined;
        items.push(converted);
      }
      return items;
    }
    if (isObject(value)) return record(value, path);
    return undefined;
  };
  const record = (value: Record<string, unknown>, prefix: string): Record<string, cedar.CedarValueJson> => {
    const out: Record<string, cedar.CedarValueJson> = {};
    for (const [key, item] of Object.entries(value)) {
      const path = prefix === '' ? key : `${prefix}.${key}`;
      const converted = ESCAPES.has(key) ? undefined : convert(item, path);
      if (converted === undefined) omitted.push(path);
      else out[key] = converted;
    }
    return out;
  };
  return { record: args !== undefined && isObject(args) ? record(args, '') : {}, omitted };
}

/** A network address as Cedar's ip() reads it (IPv4-mapped IPv6 as IPv4; anything else as the unspecified address). */
export function cedarAddress(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return mapped[1];
  const bare = address.split('%')[0] ?? '';
  return isIP(bare) !== 0 ? bare : '0.0.0.0';
}

// ---------------------------------------------------------------- Cedar's form

const uid = (type: string, id: string): cedar.TypeAndId => ({ type, id });

function clientEntity(client: ClientFacts): cedar.EntityJson {
  const attrs: Record<string, cedar.CedarValueJson> = { name: client.name, kind: client.kind };
  if (client.owner !== null) attrs.owner = { __entity: uid('User', client.owner) };
  return { uid: uid('Client', client.id), attrs, parents: [] };
}

/** The Server entity's attributes: its name and, for a catalog server, what the catalog says of it (the owner as a User). */
function serverAttributes(request: DecisionRequest): Record<string, cedar.CedarValueJson> {
  const attrs: Record<string, cedar.CedarValueJson> = { name: request.server };
  const facts = request.catalog;
  if (facts === undefined) return attrs;
  for (const key of CATALOG_FACTS) {
    const value = facts[key];
    if (value === undefined || value === '') continue;
    attrs[key] = key === 'owner' ? { __entity: uid('User', value) } : value;
  }
  return attrs;
}

/** The resource, and for a tool, prompt or resource of a catalog server its Server with the catalog's attributes (`resource.entry`). */
function targetEntities(request: DecisionRequest, withAttributes: boolean): cedar.EntityJson[] {
  const { server, target } = request;
  if (target.type === 'Server') return [{ uid: uid('Server', server), attrs: withAttributes ? serverAttributes(request) : {}, parents: [] }];
  const attrs: Record<string, cedar.CedarValueJson> = withAttributes ? { name: target.name, server } : {};
  const entities: cedar.EntityJson[] = [];
  if (withAttributes && request.catalog !== undefined) {
    attrs.entry = { __entity: uid('Server', server) };
    entities.push({ uid: uid('Server', server), attrs: serverAttributes(request), parents: [] });
  }
  if (withAttributes && target.type === 'Tool' && request.pinned !== undefined) attrs.pinned = request.pinned;
  if (withAttributes && target.type === 'Tool' && request.hints) {
    for (const [key, value] of Object.entries(request.hints)) if (typeof value === 'boolean') attrs[key] = value;
  } else if (withAttributes && target.type === 'Tool') {
    // Not seen yet: unknown to Cedar (partial evaluation), never taken as absent.
    for (const hint of HINTS) attrs[hint] = { __extn: { fn: 'unknown', arg: hint } };
  }
  return [{ uid: uid(target.type, resourceId(server, target)), attrs, parents: [uid('Server', server)] }, ...entities];
}

export interface CedarRequest {
  principal: cedar.TypeAndId;
  action: cedar.TypeAndId;
  resource: cedar.TypeAndId;
  entities: cedar.EntityJson[];
  context: Record<string, cedar.CedarValueJson>;
}

/** What the applicable policies need of the entities (default: everything). */
export interface Needs {
  /** The action entity with its group (`action in Action::"read"`). */
  actionGroup: boolean;
  /** The resource's attributes (its server is always its parent). */
  resourceAttributes: boolean;
}

const EVERYTHING: Needs = { actionGroup: true, resourceAttributes: true };

/**
 * Cedar's request. `reads` names the context attributes the applicable
 * policies read (`*`: all) and `needs` what they need of the entities: the
 * rest is left out, which is what keeps a decision cheap (each entity and
 * attribute crosses into WebAssembly at a cost).
 */
export function toCedar(request: DecisionRequest, reads: ReadonlySet<string>, unknownArgs = false, needs: Needs = EVERYTHING): CedarRequest {
  const all = reads.has('*');
  const wants = (attr: string) => all || reads.has(attr);
  const entities: cedar.EntityJson[] = [];
  const { principal } = request;
  if (principal.type === 'User') {
    if (principal.groups.length > 0) entities.push({ uid: uid('User', principal.id), attrs: {}, parents: principal.groups.map((group) => uid('Group', group)) });
  } else entities.push(clientEntity(request.client));
  if (principal.type === 'User' && wants('client')) entities.push(clientEntity(request.client));
  const group = ACTION_GROUP[request.method];
  if (group !== undefined && needs.actionGroup) entities.push({ uid: uid('Action', request.method), attrs: {}, parents: [uid('Action', group)] });
  const targets = targetEntities(request, needs.resourceAttributes);
  const target = targets[0] as cedar.EntityJson;
  entities.push(...targets);

  const context: Record<string, cedar.CedarValueJson> = {};
  if (wants('client')) context.client = { __entity: uid('Client', request.client.id) };
  if (wants('scopes')) context.scopes = [...request.scopes];
  if (unknownArgs) {
    if (wants('args')) context.args = { __extn: { fn: 'unknown', arg: 'args' } };
    if (wants('argsOmitted')) context.argsOmitted = { __extn: { fn: 'unknown', arg: 'argsOmitted' } };
  } else if (wants('args') || wants('argsOmitted')) {
    const { record, omitted } = argsRecord(request.args);
    if (wants('args')) context.args = record;
    if (wants('argsOmitted')) context.argsOmitted = omitted;
  }
  if (wants('now')) context.now = { __extn: { fn: 'datetime', arg: new Date(request.now).toISOString() } };
  if (wants('tokenAge')) context.tokenAge = Math.max(0, Math.floor(request.tokenAge));
  if (wants('sourceAddress')) context.sourceAddress = { __extn: { fn: 'ip', arg: cedarAddress(request.sourceAddress) } };
  if (wants('actors')) context.actors = [...(request.actors ?? [])];
  if (wants('task') && request.task !== undefined) {
    const { id, purpose, ticket, tools } = request.task;
    context.task = { id, purpose, ...(ticket !== undefined ? { ticket } : {}), tools: [...tools] };
  }
  if (wants('breakglass') && request.breakglass !== undefined) {
    const { id, ticket, reason, openedBy } = request.breakglass;
    context.breakglass = { id, ticket, reason, openedBy };
  }
  const principalUid = principal.type === 'User' ? uid('User', principal.id) : uid('Client', principal.id);
  return { principal: principalUid, action: uid('Action', request.method), resource: target.uid as cedar.TypeAndId, entities, context };
}
