/**
 * A stdio upstream: a process the gateway starts for one downstream session,
 * speaking newline-delimited JSON-RPC. A crash fails the requests in flight,
 * is reported, and the process is started again and re-initialised with the
 * client's own initialize request, a few times a minute at most.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { classify, idKey, progressToken, type JsonRpcMessage, type JsonRpcNotification, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc.ts';
import { GatewayError } from '../errors.ts';
import { isPromise, type CredentialHook, type UpstreamCredential } from '../credentials.ts';
import type { RegisteredServer } from '../registry.ts';
import type { Principal } from '../../identity/verify.ts';
import type { RequestOptions, Upstream, UpstreamAnswer, UpstreamHooks } from './types.ts';
import { checkPackage, identityError, reportMismatch, type IdentityMismatchHook } from './identity.ts';

export interface StdioUpstreamOptions {
  server: RegisteredServer;
  maxMessageBytes: number;
  hooks: UpstreamHooks;
  /** Asked before every start of the process (environment variables). */
  credentials: CredentialHook;
  principal: Principal | null;
  /** Told when the process starts and when it exits (the per-node process count). */
  onProcess?: (change: 1 | -1) => void;
  /** Told when the command line is not the expected package's (identity.ts): the process is then never started. */
  onIdentityMismatch?: IdentityMismatchHook;
}

/** Variables passed from the gateway's own environment; nothing else is (no gateway secret leaks to a tool). */
const INHERITED_ENV = ['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'TERM', 'LANG', 'LC_ALL', 'TMPDIR', 'TZ', 'SYSTEMROOT'];
const RESTARTS_PER_MINUTE = 3;
const STDERR_KEEP = 2048;

interface Pending {
  request: JsonRpcRequest;
  resolve: (response: JsonRpcResponse) => void;
  reject: (error: unknown) => void;
  onMessage: (message: JsonRpcMessage) => void;
  progress: string | null;
}

export class StdioUpstream implements Upstream {
  readonly transport = 'stdio' as const;
  protocolVersion: string | null = null;
  private child: ChildProcessWithoutNullStreams | null = null;
  private readonly pending = new Map<string, Pending>();
  private readonly byProgress = new Map<string, string>();
  private initialize: JsonRpcRequest | null = null;
  private initialized = false;
  private restarts: number[] = [];
  private closed = false;
  private stderrTail = '';
  private reinitCount = 0;
  /** Lines written while the process was being started (its credential was being fetched). */
  private queued: string[] | null = null;
  /** Why no process may start (its expected identity did not match): every write is refused with it. */
  private refusal: GatewayError | null = null;
  /** The credential this process was started with, by reference (for each answer's record). */
  private credentialRef: string | undefined;
  private readonly options: StdioUpstreamOptions;

  constructor(options: StdioUpstreamOptions) {
    this.options = options;
    this.start();
  }

  private error(kind: 'upstream_unavailable' | 'upstream_crashed' | 'upstream_protocol', detail: string): GatewayError {
    const text = kind === 'upstream_protocol' ? 'sent an invalid message' : kind === 'upstream_crashed' ? 'stopped unexpectedly' : 'is unavailable';
    return new GatewayError(kind, `upstream server "${this.options.server.name}" ${text}`, { detail });
  }

  /** Starts the process with the credential hook's environment; waits for the hook if it must. */
  private start(): void {
    // The expected package is checked before every start (and before any credential is asked for).
    const server = this.options.server;
    const mismatch = checkPackage(server.expectedIdentity?.package, server.command ?? '', server.args);
    if (mismatch) {
      const refusal = identityError(server.name, mismatch);
      this.refusal = refusal;
      this.queued = []; // requests written meanwhile wait, and fail with the refusal below
      queueMicrotask(() => {
        reportMismatch(this.options.onIdentityMismatch, server, mismatch);
        this.cannotStart(refusal.detail ?? '', refusal);
      });
      return;
    }
    let credential: UpstreamCredential | Promise<UpstreamCredential>;
    try {
      credential = this.options.credentials.credential({ server: this.options.server, principal: this.options.principal, purpose: 'spawn', attempt: 0 });
    } catch (error) {
      queueMicrotask(() => this.noCredential(error));
      return;
    }
    if (!isPromise(credential)) {
      this.spawn(credential);
      return;
    }
    this.queued = [];
    credential.then(
      (resolved) => {
        if (!this.closed) this.spawn(resolved);
      },
      (error: unknown) => this.noCredential(error),
    );
  }

  /** The hook gave no credential: the process is not started; a gateway error of the hook's (a secret not set) is what the client is told. */
  private noCredential(error: unknown): void {
    const detail = `no credential: ${error instanceof Error ? error.message : String(error)}`;
    this.cannotStart(detail, error instanceof GatewayError ? error : undefined);
  }

  private cannotStart(detail: string, failure = this.error('upstream_unavailable', detail)): void {
    // A request that arrives later is refused with the same reason.
    this.refusal ??= failure;
    this.queued = null;
    this.failPending(failure);
    this.closed = true;
    // After the requests' own errors have reached their answers: closing the session first ended them empty.
    setImmediate(() => this.options.hooks.onClosed(failure));
  }

  private spawn(credential: UpstreamCredential): void {
    this.credentialRef = credential.reference;
    const server = this.options.server;
    const env: Record<string, string> = {};
    for (const name of INHERITED_ENV) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    Object.assign(env, server.env, credential.env);
    const child = spawn(server.command ?? '', server.args, { cwd: server.cwd ?? process.cwd(), env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.options.onProcess?.(1);
    child.once('close', () => this.options.onProcess?.(-1));
    const queued = this.queued;
    this.queued = null;
    for (const line of queued ?? []) child.stdin.write(line);
    let buffer = '';
    child.stdout.setEncoding('utf8');
    const limit = this.options.maxMessageBytes;
    const oversize = () => {
      buffer = '';
      this.options.hooks.onError(this.error('upstream_protocol', `a line exceeds ${limit} bytes; process stopped`));
      child.kill('SIGKILL');
    };
    child.stdout.on('data', (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) !== -1) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        // Length in UTF-16 units is at most the byte length: only a long line needs counting.
        if (line.length > limit / 3 && Buffer.byteLength(line) > limit) return oversize();
        if (line.trim() !== '') this.onLine(line);
      }
      if (buffer.length > limit) oversize();
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_KEEP);
    });
    child.stdin.on('error', () => {
      // EPIPE after a crash: the exit handler reports it
    });
    child.once('error', (error: NodeJS.ErrnoException) => {
      if (this.child !== child) return;
      this.child = null;
      const failure = this.error('upstream_unavailable', `cannot start ${server.command ?? ''}: ${error.code ?? error.message}`);
      this.failPending(failure);
      this.options.hooks.onClosed(failure);
    });
    child.once('exit', (code, signal) => this.onExit(child, code, signal));
  }

  private onExit(child: ChildProcessWithoutNullStreams, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = null;
    if (this.closed) return;
    const lastWords = this.stderrTail.trim().split('\n').slice(-3).join(' | ');
    const crash = this.error('upstream_crashed', `process exited (${signal ?? `code ${code}`})${lastWords ? `: ${lastWords}` : ''}`);
    this.failPending(crash);
    this.options.hooks.onError(crash);
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < 60_000);
    if (this.restarts.length >= RESTARTS_PER_MINUTE || !this.initialize) {
      this.closed = true;
      this.options.hooks.onClosed(crash);
      return;
    }
    this.restarts.push(now);
    this.stderrTail = '';
    this.start();
    this.replayInitialize();
  }

  /** Re-initialises a restarted process as the client did; the answer is for the gateway only. */
  private replayInitialize(): void {
    const original = this.initialize;
    if (!original) return;
    const id = `mandate-reinit-${++this.reinitCount}`;
    const key = idKey(id);
    this.pending.set(key, {
      request: { ...original, id },
      resolve: () => {
        if (this.initialized) this.write({ jsonrpc: '2.0', method: 'notifications/initialized' });
        this.options.hooks.onRestarted?.(`process restarted (${this.restarts.length} in the last minute)`);
      },
      reject: () => undefined,
      onMessage: () => undefined,
      progress: null,
    });
    this.write({ ...original, id });
  }

  private failPending(error: GatewayError): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    this.byProgress.clear();
    for (const entry of pending) entry.reject(error);
  }

  private write(message: JsonRpcMessage): void {
    if (this.queued) {
      this.queued.push(`${JSON.stringify(message)}\n`);
      return;
    }
    if (!this.child) throw this.refusal ?? this.error('upstream_unavailable', 'no process is running');
    this.child.stdin.write(`${JSON.stringify(message)}\n`);
  }

  private onLine(line: string): void {
    let message: JsonRpcMessage;
    let kind: string;
    try {
      const parsed = classify(JSON.parse(line));
      message = parsed.message;
      kind = parsed.kind;
    } catch (error) {
      this.options.hooks.onError(this.error('upstream_protocol', `unparseable line dropped: ${(error as Error).message}`));
      return;
    }
    if (kind === 'response') {
      const response = message as JsonRpcResponse;
      const key = response.id === null ? null : idKey(response.id);
      const entry = key === null ? undefined : this.pending.get(key);
      if (!entry || key === null) {
        this.options.hooks.onError(this.error('upstream_protocol', 'a response to no pending request was dropped'));
        return;
      }
      this.pending.delete(key);
      if (entry.progress) this.byProgress.delete(entry.progress);
      entry.resolve(response);
      return;
    }
    this.route(message as JsonRpcRequest | JsonRpcNotification);
  }

  /** Progress goes to the request that asked for it; anything else to the one request in flight, if only one is. */
  private route(message: JsonRpcRequest | JsonRpcNotification): void {
    if (message.method === 'notifications/progress') {
      const token = message.params?.progressToken;
      const owner = token === undefined ? undefined : this.byProgress.get(idKey(token as string | number));
      const entry = owner ? this.pending.get(owner) : undefined;
      if (entry) {
        entry.onMessage(message);
        return;
      }
    }
    const inFlight = [...this.pending.values()].filter((entry) => !String(entry.request.id).startsWith('mandate-reinit-'));
    if (inFlight.length === 1 && inFlight[0]) inFlight[0].onMessage(message);
    else this.options.hooks.onMessage(message);
  }

  request(message: JsonRpcRequest, options: RequestOptions): Promise<UpstreamAnswer> {
    if (message.method === 'initialize') this.initialize = message;
    return new Promise((resolve, reject) => {
      if (options.signal.aborted) {
        reject(options.signal.reason);
        return;
      }
      const key = idKey(message.id);
      const token = progressToken(message.params);
      const progress = token === undefined ? null : idKey(token);
      const entry: Pending = {
        request: message,
        resolve: (response) => {
          if (message.method === 'initialize' && 'result' in response && typeof response.result.protocolVersion === 'string') {
            this.protocolVersion = response.result.protocolVersion;
          }
          resolve(this.credentialRef === undefined ? { message: response, status: 200 } : { message: response, status: 200, credential: this.credentialRef });
        },
        reject,
        onMessage: options.onMessage,
        progress,
      };
      this.pending.set(key, entry);
      if (progress) this.byProgress.set(progress, key);
      options.signal.addEventListener('abort', () => {
        if (this.pending.get(key) === entry) {
          this.pending.delete(key);
          if (progress) this.byProgress.delete(progress);
        }
        reject(options.signal.reason);
      }, { once: true });
      try {
        this.write(message);
      } catch (error) {
        this.pending.delete(key);
        reject(error);
      }
    });
  }

  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    if ('method' in message && message.method === 'notifications/initialized') this.initialized = true;
    this.write(message);
  }

  listen(): void {
    // stdout is always open: unrelated messages arrive through hooks.onMessage
  }

  async close(): Promise<void> {
    this.closed = true;
    this.queued = null;
    const child = this.child;
    this.child = null;
    this.failPending(this.error('upstream_unavailable', 'session closed'));
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      const term = setTimeout(() => child.kill('SIGTERM'), 2000);
      const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => {
        clearTimeout(term);
        clearTimeout(kill);
        resolve();
      });
      child.stdin.end();
    });
  }
}
