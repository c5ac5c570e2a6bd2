/**
 * What a policy can apply to and what it reads, from Cedar's JSON form of it:
 * the server its resource scope confines it to (so each decision is given
 * only the policies that can apply), the context attributes it reads (so a
 * decision carries only those, and one that reads nothing of the request can
 * be cached), and the scopes it tests for (the step-up challenge).
 */
import type * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { isObject } from '../gateway/jsonrpc.ts';

/** Context attributes whose value changes from one request to the next. */
export const PER_REQUEST = new Set(['args', 'argsOmitted', 'now', 'tokenAge', 'sourceAddress']);

export interface PolicyFacts {
  effect: 'permit' | 'forbid';
  /** The one server the policy's resource scope confines it to; null when it can apply to any. */
  server: string | null;
  /** The one resource its scope names exactly (`resource == Tool::"s/t"`), as TYPE::ID; null otherwise. */
  resource: string | null;
  /** The context attributes it reads; `*` when it uses the context as a whole. */
  reads: ReadonlySet<string>;
  /** Literal scopes it tests `context.scopes` for. */
  scopes: readonly string[];
  /** It may depend on the action's group (`action in …`): the decision needs the action entity. */
  actionGroups: boolean;
  /** It reads the resource's attributes: the decision needs them. */
  resourceAttributes: boolean;
  /** Its conditions depend on which resource it is (not only its type, server and attributes). */
  resourceIdentity: boolean;
}

type Node = unknown;

function isContext(node: Node): boolean {
  return isObject(node) && node.Var === 'context';
}

/** `context.scopes` */
function isScopes(node: Node): boolean {
  return isObject(node) && isObject(node['.']) && isContext(node['.'].left) && node['.'].attr === 'scopes';
}

function literalStrings(node: Node): string[] {
  if (!isObject(node)) return [];
  if (typeof node.Value === 'string') return [node.Value];
  if (Array.isArray(node.Value)) return node.Value.filter((v): v is string => typeof v === 'string');
  if (Array.isArray(node.Set)) return node.Set.flatMap(literalStrings);
  return [];
}

interface Found {
  reads: Set<string>;
  scopes: Set<string>;
  /** "resource." when the resource's attributes may be read, "resource=" when its identity may matter; "action" when the action is used at all. */
  uses: Set<string>;
}

function walk(node: Node, found: Found): void {
  const { reads, scopes, uses } = found;
  if (Array.isArray(node)) {
    for (const item of node) walk(item, found);
    return;
  }
  if (!isObject(node)) return;
  if (isContext(node)) {
    reads.add('*');
    return;
  }
  if (node.Var === 'action') uses.add('action');
  // The resource in a position not recognised below: it may be read any way.
  if (node.Var === 'resource') {
    uses.add('resource.');
    uses.add('resource=');
  }
  for (const [key, value] of Object.entries(node)) {
    if (isObject(value) && isObject(value.left) && value.left.Var === 'resource') {
      // resource.attr, resource has attr: its attributes.
      if (key === '.' || key === 'has') {
        uses.add('resource.');
        // Its name tells one target from another; the hints and its server do not.
        if (typeof value.attr !== 'string' || value.attr === 'name') uses.add('resource=');
        continue;
      }
      // resource is T, resource in Server::"x": the same for every target of one type on one server.
      // resource == …, resource in another entity: its identity.
      if (key === 'is' || key === 'in' || key === '==' || key === '!=') {
        const right = value.right;
        const serverLiteral = key === 'in' && isObject(right) && isObject(right.Value) && isObject(right.Value.__entity) && right.Value.__entity.type === 'Server';
        if (key !== 'is' && !serverLiteral) uses.add('resource=');
        walk(value.right, found);
        walk(value.in, found);
        continue;
      }
    }
    if ((key === '.' || key === 'has') && isObject(value) && isContext(value.left)) {
      const attr = value.attr;
      if (typeof attr === 'string') reads.add(attr);
      else if (Array.isArray(attr) && typeof attr[0] === 'string') reads.add(attr[0]);
      else reads.add('*');
      continue;
    }
    if ((key === 'contains' || key === 'containsAny' || key === 'containsAll') && isObject(value) && isScopes(value.left)) {
      for (const scope of literalStrings(value.right)) scopes.add(scope);
    }
    if (key === 'Value') continue;
    walk(value, found);
  }
}

function serverOfEntity(entity: cedar.EntityUidJson | undefined): string | null {
  if (entity === undefined) return null;
  const uid = '__entity' in entity ? entity.__entity : entity;
  if (uid.type === 'Server') return uid.id;
  if (uid.type === 'Tool' || uid.type === 'Prompt' || uid.type === 'Resource') {
    const slash = uid.id.indexOf('/');
    return slash > 0 ? uid.id.slice(0, slash) : null;
  }
  return null;
}

function uidKey(entity: cedar.EntityUidJson): string {
  const uid = '__entity' in entity ? entity.__entity : entity;
  return `${uid.type}::${uid.id}`;
}

function serverOf(resource: cedar.ResourceConstraint): string | null {
  if (resource.op === '==' || resource.op === 'in') return 'entity' in resource ? serverOfEntity(resource.entity) : null;
  if (resource.op === 'is' && resource.in !== undefined && 'entity' in resource.in) return serverOfEntity(resource.in.entity);
  return null;
}

export function analyse(policy: cedar.PolicyJson): PolicyFacts {
  const found: Found = { reads: new Set(), scopes: new Set(), uses: new Set() };
  walk(policy.conditions, found);
  const exact = policy.resource.op === '==' && 'entity' in policy.resource ? uidKey(policy.resource.entity) : null;
  return {
    effect: policy.effect,
    server: serverOf(policy.resource),
    resource: exact,
    reads: found.reads,
    scopes: [...found.scopes],
    actionGroups: policy.action.op === 'in' || found.uses.has('action'),
    resourceAttributes: found.uses.has('resource.'),
    resourceIdentity: found.uses.has('resource='),
  };
}
