/**
 * One POST to an upstream through undici's handler interface, without the
 * response stream and promise layers of `pool.request`: body chunks arrive
 * in callbacks and go straight to the part that reads them. This is the
 * gateway's hot path; docs/performance.md has what it saved, and why the
 * handler lets go of everything once it is done.
 */
import type { Dispatcher, Pool } from 'undici';
import { StringDecoder } from 'node:string_decoder';

export type Headers = Record<string, string | string[] | undefined>;

/** Why an exchange failed: the transport, the caller's abort, a body over its limit, or the reader itself. */
export type FailureKind = 'transport' | 'aborted' | 'too_large' | 'reader';

/** What reads a response: told its start, fed its body, told its end or failure. */
export interface ResponseReader {
  /**
   * The status and headers arrived. Return a body limit in bytes to read the
   * body (`text` gets utf-8 text as it arrives), or null to stop here: the
   * exchange is then aborted and nothing more is called.
   */
  start(status: number, headers: Headers): number | null;
  /** A piece of the body (utf-8, split only between characters). Throwing aborts the exchange. */
  text(chunk: string): void;
  /** The body ended. */
  end(): void;
  /** The exchange failed: transport error, abort (with the signal's reason), or the body exceeded its limit. */
  fail(error: Error, kind: FailureKind): void;
}

export function headerValue(headers: Headers, name: string): string {
  const value = headers[name];
  return Array.isArray(value) ? (value[0] ?? '') : (value ?? '');
}

const RELEASED: ResponseReader = {
  start: () => null,
  text: () => undefined,
  end: () => undefined,
  fail: () => undefined,
};

class Handler implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private decoder: StringDecoder | null = null;
  private limit = 0;
  private size = 0;
  private done = false;
  // Released when done: the dispatcher may keep a finished handler for a while.
  private reader: ResponseReader;
  private signal: AbortSignal | undefined;
  private onAbort: (() => void) | null = null;

  constructor(reader: ResponseReader, signal: AbortSignal | undefined) {
    this.reader = reader;
    this.signal = signal;
    if (signal) {
      this.onAbort = () => this.abort(signal.reason as Error, 'aborted');
      signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  /** Marks the exchange done and lets go of what it referenced; returns the reader for a last call. */
  private finish(): ResponseReader {
    const reader = this.reader;
    this.done = true;
    if (this.onAbort) this.signal?.removeEventListener('abort', this.onAbort);
    this.signal = undefined;
    this.onAbort = null;
    this.reader = RELEASED;
    this.controller = null;
    this.decoder = null;
    return reader;
  }

  /** Stops the exchange and reports `error` (once). */
  private abort(error: Error, kind: Exclude<FailureKind, 'transport'>): void {
    if (this.done) return;
    const controller = this.controller;
    const reader = this.finish();
    controller?.abort(error);
    reader.fail(error, kind);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    if (this.done) controller.abort(new Error('the exchange was already stopped'));
    else this.controller = controller;
  }

  onResponseStart(_controller: Dispatcher.DispatchController, status: number, headers: Headers): void {
    if (this.done) return;
    let limit: number | null;
    try {
      limit = this.reader.start(status, headers);
    } catch (error) {
      this.abort(error as Error, 'reader');
      return;
    }
    if (limit === null) {
      const controller = this.controller;
      this.finish();
      controller?.abort(new Error('the body is not read'));
      return;
    }
    this.limit = limit;
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.done) return;
    this.size += chunk.length;
    if (this.size > this.limit) {
      this.abort(new RangeError(`response body exceeds ${this.limit} bytes`), 'too_large');
      return;
    }
    // One whole chunk (the usual case) needs no decoder state.
    const text = this.decoder === null && chunk.length > 0 && chunk[chunk.length - 1]! < 0x80 ? chunk.toString('utf8') : (this.decoder ??= new StringDecoder('utf8')).write(chunk);
    try {
      this.reader.text(text);
    } catch (error) {
      this.abort(error as Error, 'reader');
    }
  }

  onResponseEnd(): void {
    if (this.done) return;
    const rest = this.decoder?.end() ?? '';
    const reader = this.finish();
    try {
      if (rest.length > 0) reader.text(rest);
      reader.end();
    } catch (error) {
      reader.fail(error as Error, 'reader');
    }
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.done) return;
    this.finish().fail(error, 'transport');
  }
}

/**
 * Sends one request and hands its response to `reader`. An already aborted
 * signal fails at once, without sending.
 */
export function exchange(pool: Pool, options: Dispatcher.DispatchOptions, reader: ResponseReader, signal?: AbortSignal): void {
  if (signal?.aborted) {
    reader.fail(signal.reason as Error, 'aborted');
    return;
  }
  pool.dispatch(options, new Handler(reader, signal));
}
