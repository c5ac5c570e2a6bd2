/**
 * Server-Sent Events: an incremental parser for upstream streams and the
 * formatter for downstream ones.
 */

export interface SseEvent {
  id?: string;
  event?: string;
  data: string;
}

/** Feed it text chunks; it calls `onEvent` for each complete event. */
export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private id: string | undefined;
  private event: string | undefined;
  private readonly onEvent: (event: SseEvent) => void;
  private readonly maxBytes: number;

  constructor(onEvent: (event: SseEvent) => void, maxBytes: number) {
    this.onEvent = onEvent;
    this.maxBytes = maxBytes;
  }

  push(chunk: string): void {
    this.buffer += chunk;
    let start = 0;
    for (;;) {
      const newline = this.buffer.indexOf('\n', start);
      if (newline === -1) break;
      let line = this.buffer.slice(start, newline);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      start = newline + 1;
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
    if (this.buffer.length + this.pendingSize() > this.maxBytes) {
      throw new RangeError(`an upstream event exceeds ${this.maxBytes} bytes`);
    }
  }

  private pendingSize(): number {
    let size = 0;
    for (const part of this.data) size += part.length;
    return size;
  }

  private line(line: string): void {
    if (line === '') {
      if (this.data.length > 0) this.onEvent({ id: this.id, event: this.event, data: this.data.join('\n') });
      this.data = [];
      this.event = undefined;
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
    else if (field === 'event') this.event = value;
    if (this.pendingSize() > this.maxBytes) throw new RangeError(`an upstream event exceeds ${this.maxBytes} bytes`);
  }

  /** The id of the last event seen, for resumption. */
  get lastEventId(): string | undefined {
    return this.id;
  }
}

export function formatEvent(data: string, id?: string): string {
  return id === undefined ? `event: message\ndata: ${data}\n\n` : `id: ${id}\nevent: message\ndata: ${data}\n\n`;
}
