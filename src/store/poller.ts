/**
 * How a node keeps what it holds of a store plane current (the credential
 * broker's secrets, the break-glass grants in force): a read once a period,
 * one at a time (a read asked for while one runs shares it), the first one
 * forced and awaited at start. A failed periodic read is reported and the
 * last one read stays in use; the next period tries again.
 */
export class Poller {
  private readonly read: (force: boolean) => Promise<void>;
  private readonly onError: (error: unknown) => void;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(read: (force: boolean) => Promise<void>, onError: (error: unknown) => void) {
    this.read = read;
    this.onError = onError;
  }

  /** Reads now (a read already running is shared, forced or not). */
  run(force = false): Promise<void> {
    this.running ??= this.read(force).finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** A forced read, then one every `everyMs`. */
  async start(everyMs: number): Promise<void> {
    await this.run(true);
    this.timer = setInterval(() => {
      this.run().catch(this.onError);
    }, everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
