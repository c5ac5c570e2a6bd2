/**
 * A Streamable HTTP upstream, one per downstream session. Keeps the upstream
 * session id and protocol version to itself: the client never sees them.
 */
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { classify, errorResponse, idKey, upstreamStatus, parseMessage, type JsonRpcMessage, type JsonRpcNotification, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc.ts';
import { GatewayError } from '../errors.ts';
import { SseParser } from '../sse.ts';
import type { RequestOptions, Upstream, UpstreamHooks } from './types.ts';

export interface HttpUpstreamOptions {
  server: string;
  url: URL;
  agent: http.Agent;
  maxMessageBytes: number;
  hooks: UpstreamHooks;
}

const LISTEN_RETRY_MS = [500, 1000, 2000, 5000, 10_000];
const ERROR_BODY_LIMIT = 64 * 1024;

export function createAgent(url: URL): http.Agent {
  const options = { keepAlive: true, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo' as const };
  return url.protocol === 'https:' ? new https.Agent(options) : new http.Agent(options);
}

export class HttpUpstream implements Upstream {
  readonly transport = 'http' as const;
  protocolVersion: string | null = null;
  private sessionId: string | null = null;
  private closed = false;
  private listening: http.ClientRequest | null = null;
  private listenAttempts = 0;
  private lastEventId: string | undefined;
  private readonly options: HttpUpstreamOptions;

  constructor(options: HttpUpstreamOptions) {
    this.options = options;
    const { url } = options;
    this.target = {
      protocol: url.protocol,
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || (url.protocol === 'https:' ? 443 : 80),
      path: `${url.pathname}${url.search}`,
    };
  }

  private unavailable(detail: string, cause?: unknown): GatewayError {
    return new GatewayError('upstream_unavailable', `upstream server "${this.options.server}" is unavailable`, { detail, cause });
  }

  private protocolError(detail: string): GatewayError {
    return new GatewayError('upstream_protocol', `upstream server "${this.options.server}" sent an invalid message`, { detail });
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const headers: Record<string, string> = { accept: 'application/json, text/event-stream', ...extra };
    if (this.sessionId) headers['mcp-session-id'] = this.sessionId;
    if (this.protocolVersion && !headers['mcp-protocol-version']) headers['mcp-protocol-version'] = this.protocolVersion;
    return headers;
  }

  /** Request options computed once: per-request URL parsing is measurable on the hot path. */
  private readonly target: { protocol: string; hostname: string; port: string | number; path: string };

  private open(method: string, headers: Record<string, string>, signal?: AbortSignal): Promise<{ req: http.ClientRequest; res: IncomingMessage }> & { req?: http.ClientRequest } {
    const client = this.options.url.protocol === 'https:' ? https : http;
    let req!: http.ClientRequest;
    const promise = new Promise<{ req: http.ClientRequest; res: IncomingMessage }>((resolve, reject) => {
      req = client.request({ ...this.target, method, headers, agent: this.options.agent }, (res) => resolve({ req, res }));
      req.once('error', (error: NodeJS.ErrnoException) => {
        if (signal?.aborted) reject(signal.reason);
        else reject(this.unavailable(`${method} failed: ${error.code ?? error.message}`, error));
      });
      if (signal) {
        const abort = () => req.destroy();
        signal.addEventListener('abort', abort, { once: true });
        req.once('close', () => signal.removeEventListener('abort', abort));
      }
    });
    return Object.assign(promise, { req });
  }

  private readBody(res: IncomingMessage, limit: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) {
          res.destroy();
          reject(this.protocolError(`response body exceeds ${limit} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      res.once('error', (error) => reject(this.unavailable(`response stream failed: ${error.message}`, error)));
      res.once('aborted', () => reject(this.unavailable('response aborted')));
    });
  }

  /** An error status: a JSON-RPC error body is relayed (it is the upstream's answer); anything else is masked. */
  private async errorStatus(res: IncomingMessage, message: JsonRpcRequest): Promise<JsonRpcResponse> {
    const status = res.statusCode ?? 0;
    if (status === 404 && this.sessionId) {
      res.resume();
      throw new GatewayError('upstream_session_expired', `upstream server "${this.options.server}" ended the session; start a new one`, { detail: 'HTTP 404 on a session request' });
    }
    const text = await this.readBody(res, ERROR_BODY_LIMIT).catch(() => '');
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
    const headers = this.headers({
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      ...options.headers,
    });
    const pending = this.open('POST', headers, options.signal);
    pending.req?.end(body);
    const { req, res } = await pending;
    if (message.method === 'initialize') {
      const sid = res.headers['mcp-session-id'];
      if (typeof sid === 'string' && sid.length > 0) this.sessionId = sid;
    }
    const status = res.statusCode ?? 0;
    if (status < 200 || status >= 300) return this.errorStatus(res, message);
    const type = String(res.headers['content-type'] ?? '').toLowerCase();
    if (type.startsWith('application/json')) {
      const parsed = this.parse(await this.readBody(res, this.options.maxMessageBytes));
      if (parsed.kind !== 'response' || idKey(parsed.message.id ?? '') !== idKey(message.id)) {
        throw this.protocolError('JSON answer is not the response to the request');
      }
      return this.keepVersion(message, parsed.message);
    }
    if (type.startsWith('text/event-stream')) return this.keepVersion(message, await this.streamResponse(req, res, message, options));
    res.resume();
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

  private streamResponse(req: http.ClientRequest, res: IncomingMessage, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const key = idKey(request.id);
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (error: unknown) => {
        if (settled) return;
        settled = true;
        res.destroy();
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
            res.resume();
          } else {
            fail(this.protocolError('a response on the stream answers another request'));
          }
          return;
        }
        options.onMessage(parsed.message);
      }, this.options.maxMessageBytes);
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        try {
          parser.push(chunk);
        } catch (error) {
          fail(this.protocolError((error as Error).message));
        }
      });
      res.once('end', () => fail(this.unavailable('stream ended before the response')));
      res.once('error', (error) => fail(options.signal.aborted ? options.signal.reason : this.unavailable(`stream failed: ${error.message}`, error)));
      options.signal.addEventListener('abort', () => fail(options.signal.reason), { once: true });
      req.once('close', () => fail(this.unavailable('connection closed before the response')));
    });
  }

  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    const body = JSON.stringify(message);
    const pending = this.open('POST', this.headers({ 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }));
    pending.req?.end(body);
    const { res } = await pending;
    res.resume();
    const status = res.statusCode ?? 0;
    if (status === 404 && this.sessionId) {
      throw new GatewayError('upstream_session_expired', `upstream server "${this.options.server}" ended the session; start a new one`);
    }
    if (status < 200 || status >= 300) throw this.unavailable(`HTTP ${status} for a notification`);
  }

  listen(): void {
    if (this.closed || this.listening) return;
    const headers = this.headers();
    if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
    const pending = this.open('GET', headers);
    this.listening = pending.req ?? null;
    pending.req?.end();
    pending.then(({ res }) => this.onListenResponse(res), (error: GatewayError) => this.retryListen(error));
  }

  private onListenResponse(res: IncomingMessage): void {
    const status = res.statusCode ?? 0;
    if (status === 405) {
      res.resume();
      this.listening = null;
      return; // the upstream offers no standalone stream
    }
    if (status === 404 && this.sessionId) {
      res.resume();
      this.options.hooks.onClosed(new GatewayError('upstream_session_expired', `upstream server "${this.options.server}" ended the session`));
      return;
    }
    if (status !== 200 || !String(res.headers['content-type'] ?? '').startsWith('text/event-stream')) {
      res.resume();
      this.retryListen(this.unavailable(`GET stream answered HTTP ${status}`));
      return;
    }
    this.listenAttempts = 0;
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
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      try {
        parser.push(chunk);
      } catch (error) {
        this.options.hooks.onError(this.protocolError((error as Error).message));
        res.destroy();
      }
    });
    res.once('close', () => this.retryListen(null));
  }

  private retryListen(error: GatewayError | null): void {
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
    this.listening?.destroy();
    this.listening = null;
    if (!this.sessionId) return;
    const signal = AbortSignal.timeout(2000);
    try {
      const pending = this.open('DELETE', this.headers(), signal);
      pending.req?.end();
      const { res } = await pending;
      res.resume();
    } catch {
      // best effort: the upstream will expire the session itself
    }
  }
}
