/**
 * A Streamable HTTP upstream, one per downstream session. Keeps the upstream
 * session id and protocol version to itself: the client never sees them.
 * Requests go through one undici Pool per server (keep-alive; measured
 * cheaper per request than node:http's client, docs/benchmarks.md).
 */
import { Pool, type Dispatcher } from 'undici';
import { classify, errorResponse, idKey, parseMessage, targetName, type JsonRpcMessage, type JsonRpcNotification, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc.ts';
import { GatewayError } from '../errors.ts';
import { SseParser, type SseEvent } from '../sse.ts';
import { isPromise, type CredentialHook, type CredentialPurpose, type CredentialRequest, type UpstreamCredential } from '../credentials.ts';
import type { RegisteredServer } from '../registry.ts';
import type { Principal } from '../../identity/verify.ts';
import { exchange, headerValue, type FailureKind, type Headers, type ResponseReader } from './exchange.ts';
import type { ExpectedIdentity } from '../../catalog/types.ts';
import { identityConnector, identityError, needsPeerCheck, reportMismatch, UpstreamIdentityError, type IdentityMismatchHook } from './identity.ts';
import type { RequestOptions, Upstream, UpstreamAnswer, UpstreamHooks } from './types.ts';

export interface HttpUpstreamOptions {
  server: RegisteredServer & { url: string };
  pool: Pool;
  maxMessageBytes: number;
  hooks: UpstreamHooks;
  credentials: CredentialHook;
  /** On whose behalf this upstream speaks when a request names nobody (the session's caller). */
  principal: Principal | null;
  /** Told when a connection failed the server's expected-identity check (identity.ts): once per refused connection. */
  onIdentityMismatch?: IdentityMismatchHook;
}

type Body = Dispatcher.ResponseData['body'];
type Answer = Dispatcher.ResponseData;

const LISTEN_RETRY_MS = [500, 1000, 2000, 5000, 10_000];
const ERROR_BODY_LIMIT = 64 * 1024;

export interface PoolOptions {
  /** What the upstream must prove on every new connection (identity.ts); without a pin or SPIFFE ID, the pool is the usual one. */
  expectedIdentity?: ExpectedIdentity | undefined;
  /** Trust anchors for this pool instead of the system's (a private CA). */
  ca?: string | Buffer | (string | Buffer)[];
}

/** One connection pool per upstream server. Timeouts are the gateway's own (forward.ts), not the pool's. */
export function createPool(url: URL, options: PoolOptions = {}): Pool {
  const tls = options.ca === undefined ? {} : { ca: options.ca };
  // An expected identity: every new connection goes through a connector that checks it (identity.ts).
  const connect = needsPeerCheck(options.expectedIdentity) ? identityConnector(options.expectedIdentity, tls) : options.ca === undefined ? undefined : tls;
  return new Pool(url.origin, { connections: 256, pipelining: 1, keepAliveTimeout: 30_000, headersTimeout: 0, bodyTimeout: 0, ...(connect ? { connect } : {}) });
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
    const url = new URL(options.server.url);
    this.path = `${url.pathname}${url.search}`;
  }

  private get name(): string {
    return this.options.server.name;
  }

  unavailable(detail: string, cause?: unknown): GatewayError {
    return new GatewayError('upstream_unavailable', `upstream server "${this.name}" is unavailable`, { detail, cause });
  }

  protocolError(detail: string): GatewayError {
    return new GatewayError('upstream_protocol', `upstream server "${this.name}" sent an invalid message`, { detail });
  }

  expired(detail: string): GatewayError {
    return new GatewayError('upstream_session_expired', `upstream server "${this.name}" ended the session; start a new one`, { detail });
  }

  /** A connect that failed: the upstream did not prove its expected identity (told to the hook once), or could not be reached. */
  connectFailed(what: string, error: unknown): GatewayError {
    if (error instanceof UpstreamIdentityError) {
      if (!error.reported) {
        error.reported = true;
        reportMismatch(this.options.onIdentityMismatch, this.options.server, error.mismatch);
      }
      return identityError(this.name, error.mismatch, error);
    }
    const code = (error as { code?: string }).code;
    return this.unavailable(`${what} failed: ${code ?? (error as Error).message}`, error);
  }

  /** The upstream refused the gateway's credentials (401/403): said as such, never as "unavailable". */
  credentialsRefused(status: number, what: string): GatewayError {
    return new GatewayError('upstream_auth', `upstream credential rejected for server "${this.name}": it refused the gateway's credentials (HTTP ${status})`, { detail: `HTTP ${status} for ${what}`, upstreamStatus: status });
  }

  private question(purpose: CredentialPurpose, principal: Principal | null | undefined, attempt: number, message?: JsonRpcRequest): CredentialRequest {
    const question: CredentialRequest = { server: this.options.server, principal: principal === undefined ? this.options.principal : principal, purpose, attempt };
    // Only a minted or exchanged credential needs to know the call (kept off the path of every other request).
    if (message !== undefined && (this.options.server.auth?.kind === 'jwt' || this.options.server.auth?.kind === 'token-exchange')) question.call = { method: message.method, tool: targetName(message.method, message.params) };
    return question;
  }

  /** Protocol headers over the credential's: a credential cannot change what the protocol says. */
  private headers(credential: UpstreamCredential, extra: Record<string, string> = {}): Record<string, string> {
    const headers: Record<string, string> = { ...credential.headers, accept: 'application/json, text/event-stream', ...extra };
    if (this.sessionId) headers['mcp-session-id'] = this.sessionId;
    if (this.protocolVersion && !headers['mcp-protocol-version']) headers['mcp-protocol-version'] = this.protocolVersion;
    return headers;
  }

  /** The credential for one upstream call; the hook is asked every time. */
  private credential(question: CredentialRequest): Promise<UpstreamCredential> | UpstreamCredential {
    return this.options.credentials.credential(question);
  }

  /** Whether to send again after a 401/403: only once, and only if the hook refreshed something. */
  private async retryAfterRefusal(question: CredentialRequest, status: number): Promise<boolean> {
    const refused = this.options.credentials.refused;
    return question.attempt === 0 && refused !== undefined && (await refused.call(this.options.credentials, question, status)) === true;
  }

  private async open(method: Dispatcher.HttpMethod, purpose: CredentialPurpose, extra: Record<string, string>, body?: string, signal?: AbortSignal, attempt = 0): Promise<Answer> {
    const question = this.question(purpose, undefined, attempt);
    let answer: Answer;
    try {
      answer = await this.options.pool.request({ path: this.path, method, headers: this.headers(await this.credential(question), extra), body, signal });
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw this.connectFailed(method, error);
    }
    if ((answer.statusCode === 401 || answer.statusCode === 403) && (await this.retryAfterRefusal(question, answer.statusCode))) {
      answer.body.resume();
      return this.open(method, purpose, extra, body, signal, attempt + 1);
    }
    return answer;
  }

  request(message: JsonRpcRequest, options: RequestOptions): Promise<UpstreamAnswer> {
    return this.attempt(message, options, 0);
  }

  private attempt(message: JsonRpcRequest, options: RequestOptions, attempt: number): Promise<UpstreamAnswer> {
    const question = this.question('request', options.principal, attempt, message);
    const credential = this.credential(question);
    const sent = isPromise(credential) ? credential.then((c) => this.posted(message, options, c)) : this.posted(message, options, credential);
    const { refused, rejected } = this.options.credentials;
    if (refused === undefined && rejected === undefined) return sent;
    return sent.catch(async (error: unknown) => {
      const status = error instanceof GatewayError && error.kind === 'upstream_auth' ? error.upstreamStatus : undefined;
      if (status === undefined) throw error;
      if (attempt === 0 && !options.signal.aborted && (await this.retryAfterRefusal(question, status))) return this.attempt(message, options, 1);
      // No retry left: the hook hears of it (the broker records credential.rejected).
      rejected?.call(this.options.credentials, question, status);
      throw error;
    });
  }

  /** The request sent with a credential; the answer names the credential when the hook named it (no extra step otherwise). */
  private posted(message: JsonRpcRequest, options: RequestOptions, credential: UpstreamCredential): Promise<UpstreamAnswer> {
    const answer = this.post(message, options, credential);
    const reference = credential.reference;
    return reference === undefined ? answer : answer.then((a) => ({ ...a, credential: reference }));
  }

  private post(message: JsonRpcRequest, options: RequestOptions, credential: UpstreamCredential): Promise<UpstreamAnswer> {
    return new Promise((resolve, reject) => {
      const reader = new AnswerReader(this, message, options, resolve, reject);
      const headers = this.headers(credential, { 'content-type': 'application/json', ...options.headers });
      exchange(this.options.pool, { path: this.path, method: 'POST', headers, body: JSON.stringify(message) }, reader, options.signal);
    });
  }

  /** Keeps the session id an upstream gives in its answer to initialize. */
  noteSession(request: JsonRpcRequest, headers: Headers): void {
    if (request.method !== 'initialize') return;
    const sid = headerValue(headers, 'mcp-session-id');
    if (sid.length > 0) this.sessionId = sid;
  }

  get maxMessageBytes(): number {
    return this.options.maxMessageBytes;
  }

  get hasSession(): boolean {
    return this.sessionId !== null;
  }

  keepVersion(request: JsonRpcRequest, response: JsonRpcResponse): JsonRpcResponse {
    if (request.method === 'initialize' && 'result' in response && typeof response.result.protocolVersion === 'string') {
      this.protocolVersion = response.result.protocolVersion;
    }
    return response;
  }

  parse(text: string) {
    try {
      return parseMessage(text);
    } catch (error) {
      throw this.protocolError(`unparseable message: ${(error as Error).message}`);
    }
  }

  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    const answer = await this.open('POST', 'notify', { 'content-type': 'application/json' }, JSON.stringify(message));
    answer.body.resume();
    const status = answer.statusCode;
    if (status === 404 && this.sessionId) throw this.expired('HTTP 404 on a notification');
    if (status === 401 || status === 403) throw this.credentialsRefused(status, 'a notification');
    if (status < 200 || status >= 300) throw this.unavailable(`HTTP ${status} for a notification`);
  }

  listen(): void {
    if (this.closed || this.listening) return;
    const headers: Record<string, string> = {};
    if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
    const controller = new AbortController();
    this.listening = controller;
    this.open('GET', 'listen', headers, undefined, controller.signal).then(
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
    if (status === 401 || status === 403) {
      answer.body.resume();
      this.retryListen(controller, this.credentialsRefused(status, 'the GET stream'));
      return;
    }
    if (status !== 200 || !headerValue(answer.headers, 'content-type').startsWith('text/event-stream')) {
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
      const answer = await this.open('DELETE', 'close', {}, undefined, AbortSignal.timeout(2000));
      answer.body.resume();
    } catch {
      // best effort: the upstream will expire the session itself
    }
  }
}

/**
 * Reads the answer to one POSTed request: a JSON body, an SSE stream (related
 * messages are passed on until the response), or an error status (a JSON-RPC
 * error body is relayed, anything else is masked).
 */
class AnswerReader implements ResponseReader {
  private mode: 'json' | 'sse' | 'error' = 'json';
  private status = 0;
  private body = '';
  private parser: SseParser | null = null;
  private settled = false;
  private readonly upstream: HttpUpstream;
  private readonly request: JsonRpcRequest;
  /** The request's id as responses are matched to it. */
  private readonly key: string;
  private readonly options: RequestOptions;
  private readonly resolve: (answer: UpstreamAnswer) => void;
  private readonly reject: (error: unknown) => void;

  constructor(upstream: HttpUpstream, request: JsonRpcRequest, options: RequestOptions, resolve: (answer: UpstreamAnswer) => void, reject: (error: unknown) => void) {
    this.upstream = upstream;
    this.request = request;
    this.key = idKey(request.id);
    this.options = options;
    this.resolve = resolve;
    this.reject = reject;
  }

  private succeed(response: JsonRpcResponse, status = 200): void {
    if (this.settled) return;
    this.settled = true;
    this.resolve({ message: this.upstream.keepVersion(this.request, response), status });
  }

  private refuse(error: unknown): void {
    if (this.settled) return;
    this.settled = true;
    this.reject(error);
  }

  start(status: number, headers: Headers): number | null {
    this.upstream.noteSession(this.request, headers);
    this.status = status;
    if (status < 200 || status >= 300) {
      if (status === 404 && this.upstream.hasSession) {
        this.refuse(this.upstream.expired('HTTP 404 on a session request'));
        return null;
      }
      if (status === 401 || status === 403) {
        this.refuse(this.upstream.credentialsRefused(status, this.request.method.slice(0, 64)));
        return null;
      }
      this.mode = 'error';
      return ERROR_BODY_LIMIT;
    }
    const type = headerValue(headers, 'content-type').toLowerCase();
    if (type.startsWith('application/json')) return this.upstream.maxMessageBytes;
    if (type.startsWith('text/event-stream')) {
      this.mode = 'sse';
      this.parser = new SseParser((event) => this.onEvent(event), this.upstream.maxMessageBytes);
      return Number.POSITIVE_INFINITY; // the parser bounds each event
    }
    this.refuse(this.upstream.protocolError(`unexpected answer: HTTP ${status} ${type || 'without content type'}`));
    return null;
  }

  text(chunk: string): void {
    if (this.settled) return; // the rest of a stream after its response
    if (this.parser) {
      try {
        this.parser.push(chunk);
      } catch (error) {
        this.refuse(this.upstream.protocolError((error as Error).message));
        throw error; // stops the exchange
      }
    } else this.body += chunk;
  }

  end(): void {
    if (this.mode === 'sse') this.refuse(this.upstream.unavailable('stream ended before the response'));
    else if (this.mode === 'error') this.errorStatus();
    else {
      let parsed;
      try {
        parsed = this.upstream.parse(this.body);
      } catch (error) {
        this.refuse(error);
        return;
      }
      if (parsed.kind !== 'response' || idKey(parsed.message.id ?? '') !== this.key) {
        this.refuse(this.upstream.protocolError('JSON answer is not the response to the request'));
        return;
      }
      this.succeed(parsed.message);
    }
  }

  fail(error: Error, kind: FailureKind): void {
    if (kind === 'aborted') this.refuse(error);
    else if (this.mode === 'error') {
      this.body = '';
      this.errorStatus();
    } else if (kind === 'too_large') this.refuse(this.upstream.protocolError(error.message));
    else if (kind === 'reader') this.refuse(error);
    else if (this.status === 0) this.refuse(this.upstream.connectFailed('POST', error));
    else this.refuse(this.upstream.unavailable(`${this.mode === 'sse' ? 'stream' : 'response stream'} failed: ${error.message}`, error));
  }

  /** An error status: a JSON-RPC error body is relayed (it is the upstream's answer); anything else is masked. */
  private errorStatus(): void {
    const status = this.status;
    if (status >= 400 && status < 500) {
      try {
        const parsed = parseMessage(this.body);
        if (parsed.kind === 'response' && 'error' in parsed.message) {
          const { code, message, data } = parsed.message.error;
          this.succeed(errorResponse(this.request.id, code, message, data), status);
          return;
        }
      } catch {
        // not a JSON-RPC error: masked below
      }
    }
    this.refuse(this.upstream.unavailable(`HTTP ${status} from upstream`));
  }

  private onEvent(event: SseEvent): void {
    if (this.settled) return;
    let parsed;
    try {
      parsed = classify(JSON.parse(event.data));
    } catch (error) {
      if (event.data === '') return; // a primer event
      this.refuse(this.upstream.protocolError(`unparseable event: ${(error as Error).message}`));
      return;
    }
    if (parsed.kind === 'response') {
      if (parsed.message.id !== null && idKey(parsed.message.id) === this.key) this.succeed(parsed.message);
      else this.refuse(this.upstream.protocolError('a response on the stream answers another request'));
      return;
    }
    this.options.onMessage(parsed.message);
  }
}
