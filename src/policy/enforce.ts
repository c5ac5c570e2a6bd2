/**
 * Where policy meets the gateway: the decision request built from a verified
 * principal and an MCP request, and the list filter on the delivery seam
 * (`tools/list`, `resources/list`, `resources/templates/list`,
 * `prompts/list` answers keep only what the caller could use).
 */
import type { Principal as TokenPrincipal } from '../identity/verify.ts';
import type { MessageFilter, Verdict } from '../gateway/delivery.ts';
import { GatewayError } from '../gateway/errors.ts';
import { isObject, type JsonRpcMessage } from '../gateway/jsonrpc.ts';
import type { RegisteredServer } from '../gateway/registry.ts';
import type { PolicyService } from './service.ts';
import { HINTS, targetOf, type BreakglassFacts, type CatalogFacts, type ClientFacts, type DecisionRequest, type Principal, type Target, type ToolHints } from './request.ts';

/** Without a token (only when identity.requireToken is false). */
const ANONYMOUS: ClientFacts = { id: 'anonymous', name: 'anonymous', owner: null, kind: 'anonymous' };

export function decisionRequest(
  token: TokenPrincipal | null,
  server: string,
  method: string,
  target: Target,
  address: string,
  extra: { args?: Record<string, unknown>; hints?: ToolHints; catalog?: CatalogFacts; pinned?: boolean; breakglass?: BreakglassFacts } = {},
): DecisionRequest {
  const now = Date.now();
  let principal: Principal;
  let client: ClientFacts;
  if (token === null) {
    principal = { type: 'Client', id: ANONYMOUS.id };
    client = ANONYMOUS;
  } else {
    principal = token.user !== null ? { type: 'User', id: token.user, groups: token.groups } : { type: 'Client', id: token.clientId };
    client = token.client;
  }
  return {
    principal,
    client,
    method,
    server,
    target,
    scopes: token?.scopes ?? [],
    now,
    tokenAge: token === null ? 0 : Math.max(0, (now - token.issuedAtMs) / 1000),
    sourceAddress: address,
    ...(token !== null && token.actors.length > 0 ? { actors: token.actors } : {}),
    ...(token !== null && token.task !== null ? { task: token.task } : {}),
    ...extra,
  };
}

/** The request a client sent, as a decision request; null when it names none of the target its method needs (NAMED_TARGET). */
export function requestDecision(
  policy: PolicyService,
  token: TokenPrincipal | null,
  server: RegisteredServer,
  method: string,
  params: Record<string, unknown> | undefined,
  address: string,
  pinned?: (tool: string) => boolean | undefined,
): DecisionRequest | null {
  const target = targetOf(server.name, method, params);
  if (target === null) return null;
  const args = method === 'tools/call' && typeof params?.arguments === 'object' && params.arguments !== null && !Array.isArray(params.arguments) ? (params.arguments as Record<string, unknown>) : undefined;
  const hints = target.type === 'Tool' ? policy.hints.get(server.name, server.generation, target.name) : undefined;
  const pin = target.type === 'Tool' ? pinned?.(target.name) : undefined;
  const breakglass = breakglassOf(policy, token, server.name, target);
  return decisionRequest(token, server.name, method, target, address, {
    args: args ?? {},
    ...(hints ? { hints } : {}),
    ...catalogOf(server),
    ...(pin !== undefined ? { pinned: pin } : {}),
    ...(breakglass !== null ? { breakglass } : {}),
  });
}

/** The break-glass grant covering a user's request on a target, if any (PolicyService.breakglass; docs/breakglass.md). */
function breakglassOf(policy: PolicyService, token: TokenPrincipal | null, server: string, target: Target): BreakglassFacts | null {
  const user = token?.user ?? null;
  if (user === null || policy.breakglass === null) return null;
  return policy.breakglass.covering(user, server, target.type === 'Tool' ? target.name : null);
}

/** The catalog's facts of a server, as a decision request carries them. */
function catalogOf(server: RegisteredServer): { catalog?: CatalogFacts } {
  return server.catalog !== undefined ? { catalog: server.catalog } : {};
}

/** Each list method: the result field with its items, the call an item stands for, and what names an item. */
const LISTS: Readonly<Record<string, { field: string; method: string; type: Target['type']; key: 'name' | 'uri' | 'uriTemplate' }>> = {
  'tools/list': { field: 'tools', method: 'tools/call', type: 'Tool', key: 'name' },
  'prompts/list': { field: 'prompts', method: 'prompts/get', type: 'Prompt', key: 'name' },
  'resources/list': { field: 'resources', method: 'resources/read', type: 'Resource', key: 'uri' },
  'resources/templates/list': { field: 'resourceTemplates', method: 'resources/read', type: 'Resource', key: 'uriTemplate' },
};

export const LIST_METHODS: ReadonlySet<string> = new Set(Object.keys(LISTS));


function hintsOf(tool: Record<string, unknown>): ToolHints {
  const annotations = tool.annotations;
  const hints: ToolHints = {};
  if (!isObject(annotations)) return hints;
  for (const name of HINTS) if (typeof annotations[name] === 'boolean') hints[name] = annotations[name];
  return hints;
}

function malformed(server: string, method: string, detail: string): { refuse: GatewayError } {
  return { refuse: new GatewayError('upstream_protocol', `upstream server "${server}" sent a ${method} answer the gateway could not check`, { detail }) };
}

/**
 * The list filter: an item stays when some call of it could be allowed
 * (arguments unknown: partial evaluation). A list answer the filter cannot
 * read is refused, never passed through. With no policy set in force every
 * list is refused (fail closed).
 */
export function listFilter(policy: PolicyService): MessageFilter {
  return {
    name: 'policy-lists',
    responsesTo: LIST_METHODS,
    filter(message: JsonRpcMessage, delivery): Verdict {
      const { request, server } = delivery;
      if (delivery.route !== 'response' || request === null) return;
      const list = LISTS[request.method];
      if (list === undefined || !('result' in message)) return;
      const result = message.result;
      if (!isObject(result)) return malformed(server.name, request.method, 'the result is not an object');
      const items = result[list.field];
      if (!Array.isArray(items)) return malformed(server.name, request.method, `the result has no "${list.field}" array`);
      const named: Array<[string, Record<string, unknown>]> = [];
      for (const item of items) {
        const name = isObject(item) ? item[list.key] : undefined;
        if (!isObject(item) || typeof name !== 'string') return malformed(server.name, request.method, `an item without a string "${list.key}"`);
        named.push([name, item]);
      }
      if (list.type === 'Tool') policy.hints.note(server.name, server.generation, named.map(([name, item]) => [name, hintsOf(item)]));
      const engine = policy.engine;
      if (engine === null) return { refuse: new GatewayError('policy_unavailable', 'no policy set is in force: the request was refused', { detail: policy.problem ?? undefined }) };
      const kept = named.filter(([name, item]) => {
        const target: Target = list.key === 'uriTemplate' ? { type: 'Resource', name } : { type: list.type, name };
        const hints = list.type === 'Tool' ? hintsOf(item) : undefined;
        const breakglass = breakglassOf(policy, delivery.principal, server.name, target);
        const asked = decisionRequest(delivery.principal, server.name, list.method, target, delivery.address ?? '0.0.0.0', {
          ...(hints ? { hints } : {}),
          ...catalogOf(server),
          ...(breakglass !== null ? { breakglass } : {}),
        });
        return engine.couldAllow(asked);
      });
      if (kept.length === items.length) return;
      return { replace: { ...message, result: { ...result, [list.field]: kept.map(([, item]) => item) } } as JsonRpcMessage };
    },
  };
}
