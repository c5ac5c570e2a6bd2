/**
 * The delivery seam: every message an upstream sends toward a client (the
 * final answer to a request, requests and notifications related to it, and
 * messages on the standalone stream; stdio and HTTP, session-based and
 * stateless) passes one ordered chain of message filters before it is
 * serialised. What a resumable stream keeps for replay is what the chain let
 * through. A filter can pass a message, rewrite it, drop it, or refuse it;
 * a refused message fails the client request it belongs to. A filter that
 * throws, or rewrites into something that is not a JSON-RPC message, fails
 * closed: the chain refuses the message, never passes it unchecked.
 *
 * Filters run synchronously, in order, on the request path: they must be
 * cheap, and anything they need (policies, pins) is loaded beforehand.
 */
import { classify, type JsonRpcMessage, type JsonRpcRequest } from './jsonrpc.ts';
import { GatewayError } from './errors.ts';
import type { RegisteredServer } from './registry.ts';
import type { Principal } from '../identity/verify.ts';

/** Where a message is going. */
export type Route =
  /** The final response to a client request. */
  | 'response'
  /** A request or notification related to a client request, before its response. */
  | 'related'
  /** A message on the session's standalone (GET) stream, related to no request. */
  | 'standalone';

export interface Delivery {
  server: RegisteredServer;
  /** The caller the message is delivered to (null when tokens are not required and none was sent). */
  principal: Principal | null;
  /** The client's network address for the request this belongs to (null on the standalone stream). */
  address: string | null;
  /** The session handle (never the id), or null for a stateless request. */
  session: string | null;
  /** The client request this message answers or relates to; null on the standalone stream. */
  request: JsonRpcRequest | null;
  route: Route;
}

/** What a filter decides: nothing (pass as is), or one of these. */
export type Verdict = void | undefined | { drop: true } | { replace: JsonRpcMessage } | { refuse: GatewayError };

export interface MessageFilter {
  /** Names the filter in logs and errors. */
  readonly name: string;
  /**
   * When set, the filter sees only final responses to requests with these
   * methods (nothing related, nothing on the standalone stream): the chain
   * is then skipped for every other message, at no cost.
   */
  readonly responsesTo?: ReadonlySet<string>;
  filter(message: JsonRpcMessage, delivery: Delivery): Verdict;
}

export type Outcome =
  | { action: 'pass'; message: JsonRpcMessage }
  | { action: 'drop'; by: string }
  | { action: 'refuse'; error: GatewayError; by: string };

function failedCheck(server: string, filter: string, detail: string): GatewayError {
  return new GatewayError('upstream_protocol', `upstream server "${server}" sent a message the gateway could not check`, { detail: `filter ${filter}: ${detail}` });
}

/** Whether a filter looks at a message on this route for a request with this method (null: the standalone stream). */
function looksAt(filter: MessageFilter, method: string | null, route: Route): boolean {
  return filter.responsesTo === undefined || (route === 'response' && method !== null && filter.responsesTo.has(method));
}

export class FilterChain {
  private readonly filters: readonly MessageFilter[];

  constructor(filters: readonly MessageFilter[] = []) {
    this.filters = filters;
  }

  get size(): number {
    return this.filters.length;
  }

  /** Whether any filter looks at a message on this route for a request with this method (null: the standalone stream). */
  watches(method: string | null, route: Route): boolean {
    return this.filters.some((filter) => looksAt(filter, method, route));
  }

  /** A chain with `first` ahead of these filters. */
  after(first: MessageFilter): FilterChain {
    return new FilterChain([first, ...this.filters]);
  }

  apply(message: JsonRpcMessage, delivery: Delivery): Outcome {
    let current = message;
    for (const filter of this.filters) {
      if (!looksAt(filter, delivery.request?.method ?? null, delivery.route)) continue;
      let verdict: Verdict;
      try {
        verdict = filter.filter(current, delivery);
      } catch (error) {
        return { action: 'refuse', error: failedCheck(delivery.server.name, filter.name, error instanceof Error ? error.message : String(error)), by: filter.name };
      }
      if (verdict === undefined) continue;
      if ('drop' in verdict) return { action: 'drop', by: filter.name };
      if ('refuse' in verdict) return { action: 'refuse', error: verdict.refuse, by: filter.name };
      try {
        current = classify(verdict.replace).message;
      } catch (error) {
        return { action: 'refuse', error: failedCheck(delivery.server.name, filter.name, `rewrote the message into an invalid one: ${(error as Error).message}`), by: filter.name };
      }
    }
    return { action: 'pass', message: current };
  }
}

/** A chain with no filters: every message passes as it is. */
export const NO_FILTERS = new FilterChain();
