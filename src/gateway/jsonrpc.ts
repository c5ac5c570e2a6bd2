/**
 * JSON-RPC 2.0 as MCP uses it. Every message in either direction goes through
 * `parseMessage`: nothing is passed on unexamined.
 */

export type RequestId = string | number;

export interface JsonRpcRequest {
  jsonrpc: '2.0';
  id: RequestId;
  method: string;
  params?: Record<string, unknown>;
}

export interface JsonRpcNotification {
  jsonrpc: '2.0';
  method: string;
  params?: Record<string, unknown>;
}

export interface JsonRpcErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

export interface JsonRpcSuccess {
  jsonrpc: '2.0';
  id: RequestId;
  result: Record<string, unknown>;
}

export interface JsonRpcFailure {
  jsonrpc: '2.0';
  id: RequestId | null;
  error: JsonRpcErrorObject;
}

export type JsonRpcResponse = JsonRpcSuccess | JsonRpcFailure;
export type JsonRpcMessage = JsonRpcRequest | JsonRpcNotification | JsonRpcResponse;

export type Classified =
  | { kind: 'request'; message: JsonRpcRequest }
  | { kind: 'notification'; message: JsonRpcNotification }
  | { kind: 'response'; message: JsonRpcResponse };

/** Standard and MCP error codes used by the gateway. */
export const RpcCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** Upstream unreachable, closed or broken (the SDK's ConnectionClosed). */
  UpstreamUnavailable: -32000,
  /** Upstream did not answer in time (the SDK's RequestTimeout). */
  RequestTimeout: -32001,
  /** A policy denied the request (Mandate's code). */
  PolicyDenied: -32003,
  /** 2026-07-28: HTTP headers do not match the body. */
  HeaderMismatch: -32020,
  /** 2026-07-28: protocol version not supported. */
  UnsupportedProtocolVersion: -32022,
  /** MCP 2025-11-25: the request needs the user to open a URL first (data.elicitations). */
  UrlElicitationRequired: -32042,
  /** The request was cancelled by the client. */
  RequestCancelled: -32800,
} as const;

export class MessageError extends Error {
  override readonly name = 'MessageError';
  readonly code: number;
  readonly id: RequestId | null;
  constructor(code: number, message: string, id: RequestId | null = null) {
    super(message);
    this.code = code;
    this.id = id;
  }
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isId(value: unknown): value is RequestId {
  return typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value));
}

/** Checks the shape of one decoded value; throws MessageError with a precise reason. */
export function classify(value: unknown): Classified {
  if (Array.isArray(value)) {
    throw new MessageError(RpcCode.InvalidRequest, 'JSON-RPC batches are not supported: send one message per request');
  }
  if (!isObject(value)) throw new MessageError(RpcCode.InvalidRequest, 'a JSON-RPC message must be a JSON object');
  const id = value.id;
  const idForError = isId(id) ? id : null;
  if (value.jsonrpc !== '2.0') throw new MessageError(RpcCode.InvalidRequest, 'jsonrpc must be "2.0"', idForError);
  if ('method' in value) {
    if (typeof value.method !== 'string' || value.method.length === 0 || value.method.length > 256) {
      throw new MessageError(RpcCode.InvalidRequest, 'method must be a non-empty string', idForError);
    }
    if ('params' in value && value.params !== undefined && !isObject(value.params)) {
      throw new MessageError(RpcCode.InvalidParams, 'params must be an object', idForError);
    }
    if ('result' in value || 'error' in value) {
      throw new MessageError(RpcCode.InvalidRequest, 'a message cannot carry both method and result/error', idForError);
    }
    if (!('id' in value)) return { kind: 'notification', message: value as unknown as JsonRpcNotification };
    if (!isId(id)) throw new MessageError(RpcCode.InvalidRequest, 'request id must be a string or a number');
    return { kind: 'request', message: value as unknown as JsonRpcRequest };
  }
  const hasResult = 'result' in value;
  const hasError = 'error' in value;
  if (hasResult === hasError) {
    throw new MessageError(RpcCode.InvalidRequest, 'a message needs a method, or exactly one of result and error', idForError);
  }
  if (hasResult) {
    if (!isId(id)) throw new MessageError(RpcCode.InvalidRequest, 'response id must be a string or a number');
    if (!isObject(value.result)) throw new MessageError(RpcCode.InvalidRequest, 'result must be an object', id);
    return { kind: 'response', message: value as unknown as JsonRpcSuccess };
  }
  if (!(isId(id) || id === null)) throw new MessageError(RpcCode.InvalidRequest, 'error response id must be a string, a number or null');
  const error = value.error;
  if (!isObject(error) || !Number.isInteger(error.code) || typeof error.message !== 'string') {
    throw new MessageError(RpcCode.InvalidRequest, 'error must be an object with an integer code and a string message', idForError);
  }
  return { kind: 'response', message: value as unknown as JsonRpcFailure };
}

/**
 * Whether `text` nests arrays and objects deeper than `max` (strings are
 * skipped). Checked before parsing, so a deeply nested message is a request
 * error rather than a stack overflow somewhere later.
 */
export function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i += 1; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      depth += 1;
      if (depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth -= 1;
  }
  return false;
}

/** Decodes and checks one message from text; with `maxDepth`, deeper nesting is an invalid request. */
export function parseMessage(text: string, maxDepth?: number): Classified {
  if (maxDepth !== undefined && nestedDeeperThan(text, maxDepth)) {
    throw new MessageError(RpcCode.InvalidRequest, `the message nests arrays and objects deeper than ${maxDepth} levels`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new MessageError(RpcCode.ParseError, 'the body is not valid JSON');
  }
  return classify(value);
}

/** Longest method name a client may send, in bytes. */
export const MAX_METHOD_BYTES = 128;
/** Longest tool or prompt name, in bytes. */
export const MAX_NAME_BYTES = 256;
/** Longest resource URI, in bytes. */
export const MAX_URI_BYTES = 8 * 1024;

/** UTF-8 length is at most 3 bytes per UTF-16 unit: only long strings need counting. */
function longerThan(text: string, bytes: number): boolean {
  return text.length * 3 > bytes && Buffer.byteLength(text) > bytes;
}

/** Where a client message exceeds a length limit: the method, or the name or URI it acts on. Null if within them. */
export function checkBounds(parsed: Classified): { kind: 'invalid_request' | 'invalid_params'; message: string } | null {
  if (parsed.kind === 'response') return null;
  const { method, params } = parsed.message;
  if (longerThan(method, MAX_METHOD_BYTES)) return { kind: 'invalid_request', message: `method names are at most ${MAX_METHOD_BYTES} bytes` };
  if (!params) return null;
  const name = params.name;
  if ((method === 'tools/call' || method === 'prompts/get') && typeof name === 'string' && longerThan(name, MAX_NAME_BYTES)) {
    return { kind: 'invalid_params', message: `${method === 'tools/call' ? 'tool' : 'prompt'} names are at most ${MAX_NAME_BYTES} bytes` };
  }
  const uri = params.uri;
  if (typeof uri === 'string' && longerThan(uri, MAX_URI_BYTES)) return { kind: 'invalid_params', message: `resource URIs are at most ${MAX_URI_BYTES} bytes` };
  const ref = params.ref as { name?: unknown; uri?: unknown } | undefined;
  if (method === 'completion/complete' && typeof ref === 'object' && ref !== null) {
    if (typeof ref.name === 'string' && longerThan(ref.name, MAX_NAME_BYTES)) return { kind: 'invalid_params', message: `prompt names are at most ${MAX_NAME_BYTES} bytes` };
    if (typeof ref.uri === 'string' && longerThan(ref.uri, MAX_URI_BYTES)) return { kind: 'invalid_params', message: `resource URIs are at most ${MAX_URI_BYTES} bytes` };
  }
  return null;
}

export function errorResponse(id: RequestId | null, code: number, message: string, data?: unknown): JsonRpcFailure {
  const error: JsonRpcErrorObject = { code, message };
  if (data !== undefined) error.data = data;
  return { jsonrpc: '2.0', id, error };
}

export function isFailure(message: JsonRpcResponse): message is JsonRpcFailure {
  return 'error' in message;
}

/** The tool, resource or prompt a request names, if any. */
export function targetName(method: string, params: Record<string, unknown> | undefined): string | null {
  if (!params) return null;
  switch (method) {
    case 'tools/call':
    case 'prompts/get':
      return typeof params.name === 'string' ? params.name : null;
    case 'resources/read':
    case 'resources/subscribe':
    case 'resources/unsubscribe':
      return typeof params.uri === 'string' ? params.uri : null;
    default:
      return null;
  }
}

/** A stable map key for a request id (1 and "1" are different ids). */
export function idKey(id: RequestId): string {
  return typeof id === 'number' ? `n:${id}` : `s:${id}`;
}

export function progressToken(params: Record<string, unknown> | undefined): RequestId | undefined {
  const meta = params?._meta;
  if (!isObject(meta)) return undefined;
  const token = meta.progressToken;
  return isId(token) ? token : undefined;
}

export function notificationCancelled(requestId: RequestId, reason: string): JsonRpcNotification {
  return { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, reason } };
}
