/**
 * A Streamable HTTP upstream, one per downstream session. Keeps the upstream
 * session id and protocol version to itself: the client never sees them.
 * Requests go through one undici Pool per server (keep-alive; measured
 * cheaper per request than node:http's client, docs/benchmarks.md).
 */
import { Pool, type Dispatcher } from 'undici';
import { classify, errorResponse, idKey, parseMessage, upstreamStatus, type JsonRpcMessage, type JsonRpcNotification, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc.ts';
import { GatewayError } from '../errors.ts';
import { SseParser } from '../sse.ts';
import type { RequestOptions, Upstream, UpstreamHooks } from './types.ts';

export interface HttpUpstreamOptions {
  server: string;
  url: URL;
  pool: Pool;
  maxMessageBytes: number;
  hooks: UpstreamHooks;
}

type Body = Dispatcher.ResponseData['body'];
type Answer = Dispatcher.ResponseData;

const LISTEN_RETRY_MS = [500, 1000, 2000, 5000, 10_000];
const ERROR_BODY_LIMIT = 64 * 1024;

/** One connection pool per upstream server. Timeouts are the gateway's own (forward.ts), not the pool's. */
export function createPool(url: URL): Pool {
  return new Pool(url.origin, { connections: 256, pipelining: 1, keepAliveTimeout: 30_000, headersTimeout: 0, bodyTimeout: 0 });
}

/** Feeds a response body to an SSE parser; `onError` gets a size or framing failure. */
function feed(body: Body, parser: SseParser, onError: (error: Error) => void): void {
  body.setEncoding('utf8');
  body.on('data', (chunk: string) => {
    try {
      parser.push(chunk);
    } catch (error) {
      onError(error as Error);
    }
  });
}

function headerValue(answer: Answer, name: string): string {
  const value = answer.headers[name];
  return Array.isArray(value) ? (value[0] ?? '') : (value ?? '');
}

export class HttpUpstream implements Upstream {
  readonly transport = 'http' as const;
  protocolVersion: string | null = null;
  private sessionId: string | null = null;
  private closed = false;
  private listening: AbortController | null = null;
  private listenAttempts = 0;
  private lastEventId: string | undefined;
  private readonly path: string;
  private readonly options: HttpUpstreamOptions;

  constructor(options: HttpUpstreamOptions) {
    this.options = options;
    this.path = `${options.url.pathname}${options.url.search}`;
  }

  private unavailable(detail: string, cause?: unknown): GatewayError {
    return new GatewayError('upstream_unavailable', `upstream server "${this.options.server}" is unavailable`, { detail, cause });
  }

  private protocolError(detail: string): GatewayError {
    return new GatewayError('upstream_protocol', `upstream server "${this.options.server}" sent an invalid message`, { detail });
  }

  private expired(detail: string): GatewayError {
    return new GatewayError('upstream_session_expired', `upstream server "${this.options.server}" ended the session; start a new one`, { detail });
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const headers: Record<string, string> = { accept: 'application/json, text/event-stream', ...extra };
    if (this.sessionId) headers['mcp-session-id'] = this.sessionId;
    if (this.protocolVersion && !headers['mcp-protocol-version']) headers['mcp-protocol-version'] = this.protocolVersion;
    return headers;
  }

  private async open(method: Dispatcher.HttpMethod, headers: Record<string, string>, body?: string, signal?: AbortSignal): Promise<Answer> {
    try {
      return await this.options.pool.request({ path: this.path, method, headers, body, signal });
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const code = (error as { code?: string }).code;
      throw this.unavailable(`${method} failed: ${code ?? (error as Error).message}`, error);
    }
  }

  private readBody(body: Body, limit: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      body.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) {
          body.destroy();
          reject(this.protocolError(`response body exceeds ${limit} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      body.once('end', () => resolve(chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8')));
      body.once('error', (error) => reject(this.unavailable(`response stream failed: ${error.message}`, error)));
    });
  }

  /** An error status: a JSON-RPC error body is relayed (it is the upstream's answer); anything else is masked. */
  private async errorStatus(answer: Answer, message: JsonRpcRequest): Promise<JsonRpcResponse> {
    const status = answer.statusCode;
    if (status === 404 && this.sessionId) {
      answer.body.resume();
      throw this.expired('HTTP 404 on a session request');
    }
    const text = await this.readBody(answer.body, ERROR_BODY_LIMIT).catch(() => '');
    if (status >= 400 && status < 500) {
      try {
        const parsed = parseMessage(text);
        if (parsed.kind === 'response' && 'error' in parsed.message) {
          const { code, message: text2, data } = parsed.message.error;
          const relayed = errorResponse(message.id, code, text2, data);
          upstreamStatus.set(relayed, status);
          return relayed;
        }
      } catch {
        // not a JSON-RPC error: masked below
      }
    }
    throw this.unavailable(`HTTP ${status} from upstream`);
  }

  async request(message: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const body = JSON.stringify(message);
    const answer = await this.open('POST', this.headers({ 'content-type': 'application/json', ...options.headers }), body, options.signal);
    if (message.method === 'initialize') {
      const sid = headerValue(answer, 'mcp-session-id');
      if (sid.length > 0) this.sessionId = sid;
    }
    const status = answer.statusCode;
    if (status < 200 || status >= 300) return this.errorStatus(answer, message);
    const type = headerValue(answer, 'content-type').toLowerCase();
    if (type.startsWith('application/json')) {
      const parsed = this.parse(await this.readBody(answer.body, this.options.maxMessageBytes));
      if (parsed.kind !== 'response' || idKey(parsed.message.id ?? '') !== idKey(message.id)) {
        throw this.protocolError('JSON answer is not the response to the request');
      }
      return this.keepVersion(message, parsed.message);
    }
    if (type.startsWith('text/event-stream')) return this.keepVersion(message, await this.streamResponse(answer.body, message, options));
    answer.body.resume();
    throw this.protocolError(`unexpected answer: HTTP ${status} ${type || 'without content type'}`);
  }

  private keepVersion(request: JsonRpcRequest, response: JsonRpcResponse): JsonRpcResponse {
    if (request.method === 'initialize' && 'result' in response && typeof response.result.protocolVersion === 'string') {
      this.protocolVersion = response.result.protocolVersion;
    }
    return response;
  }

  private parse(text: string) {
    try {
      return parseMessage(text);
    } catch (error) {
      throw this.protocolError(`unparseable message: ${(error as Error).message}`);
    }
  }

  private streamResponse(body: Body, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const key = idKey(request.id);
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (error: unknown) => {
        if (settled) return;
        settled = true;
        body.destroy();
        reject(error);
      };
      const parser = new SseParser((event) => {
        if (settled) return;
        let parsed;
        try {
          parsed = classify(JSON.parse(event.data));
        } catch (error) {
          if (event.data === '') return; // a primer event
          fail(this.protocolError(`unparseable event: ${(error as Error).message}`));
          return;
        }
        if (parsed.kind === 'response') {
          if (parsed.message.id !== null && idKey(parsed.message.id) === key) {
            settled = true;
            resolve(parsed.message);
            body.resume();
          } else {
            fail(this.protocolError('a response on the stream answers another request'));
          }
          return;
        }
        options.onMessage(parsed.message);
      }, this.options.maxMessageBytes);
      feed(body, parser, (error) => fail(this.protocolError(error.message)));
      body.once('end', () => fail(this.unavailable('stream ended before the response')));
      body.once('error', (error) => fail(options.signal.aborted ? options.signal.reason : this.unavailable(`stream failed: ${error.message}`, error)));
      body.once('close', () => fail(options.signal.aborted ? options.signal.reason : this.unavailable('connection closed before the response')));
      options.signal.addEventListener('abort', () => fail(options.signal.reason), { once: true });
    });
  }

  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    const answer = await this.open('POST', this.headers({ 'content-type': 'application/json' }), JSON.stringify(message));
    answer.body.resume();
    const status = answer.statusCode;
    if (status === 404 && this.sessionId) throw this.expired('HTTP 404 on a notification');
    if (status < 200 || status >= 300) throw this.unavailable(`HTTP ${status} for a notification`);
  }

  listen(): void {
    if (this.closed || this.listening) return;
    const headers = this.headers();
    if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
    const controller = new AbortController();
    this.listening = controller;
    this.open('GET', headers, undefined, controller.signal).then(
      (answer) => this.onListenAnswer(answer, controller),
      (error: unknown) => this.retryListen(controller, error instanceof GatewayError ? error : null),
    );
  }

  private onListenAnswer(answer: Answer, controller: AbortController): void {
    const status = answer.statusCode;
    if (status === 405) {
      answer.body.resume();
      if (this.listening === controller) this.listening = null;
      return; // the upstream offers no standalone stream
    }
    if (status === 404 && this.sessionId) {
      answer.body.resume();
      this.options.hooks.onClosed(this.expired('HTTP 404 on the GET stream'));
      return;
    }
    if (status !== 200 || !headerValue(answer, 'content-type').startsWith('text/event-stream')) {
      answer.body.resume();
      this.retryListen(controller, this.unavailable(`GET stream answered HTTP ${status}`));
      return;
    }
    this.listenAttempts = 0;
    const body = answer.body;
    const parser = new SseParser((event) => {
      if (event.id) this.lastEventId = event.id;
      if (event.data === '') return;
      let message: JsonRpcMessage;
      try {
        message = classify(JSON.parse(event.data)).message;
      } catch (error) {
        this.options.hooks.onError(this.protocolError(`unparseable event on the GET stream: ${(error as Error).message}`));
        return;
      }
      this.options.hooks.onMessage(message);
    }, this.options.maxMessageBytes);
    feed(body, parser, (error) => {
      this.options.hooks.onError(this.protocolError(error.message));
      body.destroy();
    });
    body.on('error', () => undefined);
    body.once('close', () => this.retryListen(controller, null));
  }

  private retryListen(controller: AbortController, error: GatewayError | null): void {
    if (this.listening !== controller) return;
    this.listening = null;
    if (this.closed) return;
    if (error) this.options.hooks.onError(error);
    const delay = LISTEN_RETRY_MS[Math.min(this.listenAttempts, LISTEN_RETRY_MS.length - 1)] ?? 10_000;
    this.listenAttempts += 1;
    setTimeout(() => this.listen(), delay).unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const listening = this.listening;
    this.listening = null;
    listening?.abort();
    if (!this.sessionId) return;
    try {
      const answer = await this.open('DELETE', this.headers(), undefined, AbortSignal.timeout(2000));
      answer.body.resume();
    } catch {
      // best effort: the upstream will expire the session itself
    }
  }
}
