/**
 * Downstream delivery. `SseStream` is one server-to-client event stream that
 * outlives its HTTP connection: events are numbered and kept (bounded) so a
 * client can resume with Last-Event-ID. `ResponseChannel` answers one POST:
 * it waits for the first message and answers plain JSON if that message is
 * the final response, or switches to SSE when anything comes first (or the
 * answer is slow, so clients' header timeouts never fire).
 */
import type { ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { formatEvent } from './sse.ts';
import type { JsonRpcMessage } from './jsonrpc.ts';

const HEARTBEAT_MS = 15_000;
/** Replay buffer cap per stream when the options give none. */
const DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024;

export interface StreamOptions {
  /** Keep numbered events for Last-Event-ID resumption (legacy sessions). */
  resumable: boolean;
  /** How many events to keep for replay. */
  bufferLimit: number;
  /** How many bytes of events to keep for replay (the oldest go first). */
  bufferBytes?: number;
  /** Headers for every HTTP response that carries this stream. */
  headers: Record<string, string>;
  /** The client understands a primer event with empty data (protocol 2025-11-25 and later). */
  primeEvents: boolean;
}

interface Buffered {
  n: number;
  data: string;
}

export class SseStream {
  readonly key = randomBytes(6).toString('base64url');
  private counter = 0;
  private delivered = 0;
  private readonly buffer: Buffered[] = [];
  private bufferedBytes = 0;
  private res: ServerResponse | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private finished = false;
  private readonly options: StreamOptions;
  /** Called when the stream has ended and was fully delivered or abandoned. */
  onDone: (() => void) | null = null;

  constructor(options: StreamOptions) {
    this.options = options;
  }

  get attached(): boolean {
    return this.res !== null;
  }

  get done(): boolean {
    return this.finished;
  }

  /** Parses `key.n` event ids; null when the id is not of this gateway's form. */
  static parseEventId(id: string): { key: string; n: number } | null {
    const dot = id.lastIndexOf('.');
    if (dot <= 0) return null;
    const n = Number(id.slice(dot + 1));
    if (!Number.isSafeInteger(n) || n < 0) return null;
    return { key: id.slice(0, dot), n };
  }

  /** Whether events after `n` can still be replayed (none were dropped). */
  canResumeFrom(n: number): boolean {
    const oldest = this.buffer[0]?.n ?? this.counter + 1;
    return n <= this.counter && n >= oldest - 1;
  }

  /** Sends headers on `res` and makes it the live connection; replays events after `afterN` (default: undelivered ones). */
  attach(res: ServerResponse, afterN?: number): void {
    this.detach();
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...this.options.headers,
    });
    res.flushHeaders();
    this.res = res;
    res.once('close', () => {
      if (this.res === res) this.detach();
    });
    const from = afterN ?? this.delivered;
    for (const event of this.buffer) if (event.n > from) this.write(event);
    if (this.finished) {
      this.closeConnection();
      return;
    }
    this.heartbeat = setInterval(() => this.res?.write(': keep-alive\n\n'), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** A primer: an event id with empty data, so a client that loses the connection early can resume. */
  prime(): void {
    if (!this.res) return;
    if (this.options.resumable && this.options.primeEvents) this.res.write(`id: ${this.key}.${this.counter}\ndata: \n\n`);
    else this.res.write(': waiting for the upstream\n\n');
  }

  push(message: JsonRpcMessage): void {
    if (this.finished) return;
    const event: Buffered = { n: ++this.counter, data: JSON.stringify(message) };
    if (this.options.resumable) {
      this.buffer.push(event);
      this.bufferedBytes += event.data.length;
      const maxBytes = this.options.bufferBytes ?? DEFAULT_BUFFER_BYTES;
      while (this.buffer.length > this.options.bufferLimit || (this.bufferedBytes > maxBytes && this.buffer.length > 1)) {
        this.bufferedBytes -= this.buffer.shift()?.data.length ?? 0;
      }
    }
    if (this.res) this.write(event);
    else if (!this.options.resumable) this.buffer.push(event);
  }

  /** No more events. The connection is closed once everything was written. */
  end(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.res) this.closeConnection();
    else if (!this.options.resumable) this.onDone?.();
  }

  /** Ends the live connection (the client may resume it), keeping the stream and its events. */
  disconnect(): void {
    const res = this.res;
    this.detach();
    if (res && !res.destroyed && !res.writableEnded) res.end();
  }

  /** Drops the live connection, keeping the events. */
  detach(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    this.res = null;
  }

  private write(event: Buffered): void {
    const res = this.res;
    if (!res) return;
    if (res.destroyed || res.writableEnded) {
      this.detach(); // the client is gone: keep the event for its resumption
      return;
    }
    res.write(formatEvent(event.data, this.options.resumable ? `${this.key}.${event.n}` : undefined));
    this.delivered = Math.max(this.delivered, event.n);
    if (!this.options.resumable) {
      const index = this.buffer.indexOf(event);
      if (index !== -1) this.buffer.splice(index, 1);
    }
  }

  /** Everything, the end included, reached a live connection: nothing is left to replay. */
  private closeConnection(): void {
    const res = this.res;
    this.detach();
    if (!res || res.destroyed) return; // not delivered: keep the events for a resumption
    res.end();
    this.buffer.length = 0;
    this.bufferedBytes = 0;
    this.onDone?.();
  }
}

export interface ChannelOptions extends StreamOptions {
  /** Switch to SSE if nothing was sent after this long. */
  sseAfterMs: number;
  /** A new SSE stream for this channel (registered for resumption by the session). */
  onStream?: (stream: SseStream) => void;
}

/** The answer to one POSTed request: JSON if the response comes first, else SSE. */
export class ResponseChannel {
  private stream: SseStream | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly res: ServerResponse;
  private options: ChannelOptions;

  constructor(res: ServerResponse, options: ChannelOptions) {
    this.res = res;
    this.options = options;
    this.timer = setTimeout(() => this.toSse(true), options.sseAfterMs);
    this.timer.unref();
    res.once('close', () => this.clearTimer());
  }

  get mode(): 'pending' | 'sse' | 'closed' {
    return this.closed ? 'closed' : this.stream ? 'sse' : 'pending';
  }

  /** A message related to the request, before its response. */
  message(message: JsonRpcMessage): void {
    if (this.closed) return;
    this.toSse(false);
    this.stream?.push(message);
  }

  /** The final response; the channel is done after it. */
  final(message: JsonRpcMessage, status = 200): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimer();
    if (this.stream) {
      this.stream.push(message);
      this.stream.end();
      return;
    }
    const res = this.res;
    if (res.destroyed || res.headersSent) return;
    const body = JSON.stringify(message);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      ...this.options.headers,
    });
    res.end(body);
  }

  /** Drops a header that is not sent yet (the session id of an initialize that failed). */
  dropHeader(name: string): void {
    if (this.stream || this.res.headersSent) return;
    const { [name]: _dropped, ...rest } = this.options.headers;
    this.options = { ...this.options, headers: rest };
  }

  /** Ends without a response (cancelled). */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimer();
    if (this.stream) this.stream.end();
    else if (!this.res.headersSent && !this.res.destroyed) {
      this.res.writeHead(204).end();
    }
  }

  private toSse(primed: boolean): void {
    if (this.stream || this.closed) return;
    this.clearTimer();
    const stream = new SseStream(this.options);
    this.stream = stream;
    this.options.onStream?.(stream);
    if (!this.res.destroyed) {
      stream.attach(this.res, 0);
      if (primed) stream.prime();
    }
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
