/**
 * What a downstream session needs from its upstream: send a request and hear
 * its related messages and response, send notifications and responses, and
 * hear unrelated server messages.
 */
import type { JsonRpcMessage, JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../jsonrpc.ts';
import type { GatewayError } from '../errors.ts';
import type { Principal } from '../../identity/verify.ts';

export interface RequestOptions {
  /** A message related to this request, before its response. */
  onMessage: (message: JsonRpcMessage) => void;
  /** Aborting stops waiting and releases the upstream exchange. */
  signal: AbortSignal;
  /** Extra HTTP headers (2026-07-28 request metadata); ignored by stdio. */
  headers?: Record<string, string>;
  /** On whose behalf (the credential hook's question); default: the upstream's owner. */
  principal?: Principal | null;
}

/** The response to a request, with the HTTP status it came with (200 for stdio). */
export interface UpstreamAnswer {
  message: JsonRpcResponse;
  /** A 4xx the upstream answered a JSON-RPC error with is relayed with its status. */
  status: number;
  /** The credential presented for it, by reference (UpstreamCredential.reference). */
  credential?: string;
}

export interface UpstreamHooks {
  /** A server message not related to any client request. */
  onMessage: (message: JsonRpcMessage) => void;
  /** Something went wrong that no single request owns (a bad line, a crash, a lost stream). */
  onError: (error: GatewayError) => void;
  /** The upstream is gone for good; the session must close. */
  onClosed: (error: GatewayError) => void;
  /** A crashed process was started again and re-initialised. */
  onRestarted?: (detail: string) => void;
}

export interface Upstream {
  readonly transport: 'http' | 'stdio';
  /** The protocol version the upstream agreed to, once initialised. */
  protocolVersion: string | null;
  request(message: JsonRpcRequest, options: RequestOptions): Promise<UpstreamAnswer>;
  send(message: JsonRpcNotification | JsonRpcResponse): Promise<void>;
  /** Starts delivering unrelated server messages (the HTTP GET stream). */
  listen(): void;
  close(): Promise<void>;
}
