/**
 * A TCP proxy to PostgreSQL that can freeze: it stops forwarding bytes in
 * both directions without closing any socket (a stalled network path, a hung
 * pooler), and thaws, delivering what it held in order. It reads the wire
 * protocol as it passes, so a test can see which queries are in flight: sent
 * by the client on a connection the client still keeps, and not yet answered
 * (each simple Query or extended-protocol Sync is answered by one
 * ReadyForQuery; a new connection's startup is answered by its first one).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

interface Link {
  client: Socket;
  upstream: Socket;
  /** Requests sent and not yet answered, oldest first: the query text, or 'startup'. */
  pending: string[];
  /** The client has closed its side: it waits for none of its requests any more. */
  clientGone: boolean;
  /** The server closed the connection (passed on at once, or at the thaw after what it sent before). */
  upstreamGone: boolean;
  /** Bytes held while frozen. */
  held: { toServer: Buffer[]; toClient: Buffer[] };
  fromClient: Buffer;
  fromServer: Buffer;
  started: boolean;
  /** The text of the last Parse message, which the next Sync completes. */
  parsed: string;
}

export interface ProxyCounts {
  /** Queries in flight now, by text. */
  inFlight: string[];
  /** Connections the client has opened so far. */
  connections: number;
  /** Requests (startups and queries) the client has sent so far. */
  requests: number;
}

export class FreezableProxy {
  port = 0;
  private server: Server | null = null;
  private readonly links = new Set<Link>();
  private frozen = false;
  private connections = 0;
  private requests = 0;
  private readonly target: { host: string; port: number };

  constructor(target: { host: string; port: number }) {
    this.target = target;
  }

  async start(): Promise<void> {
    // allowHalfOpen: a client's FIN is not answered while frozen, as on a stalled path.
    const server = createServer({ allowHalfOpen: true }, (client) => this.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    this.port = typeof address === 'object' && address ? address.port : 0;
    this.server = server;
  }

  freeze(): void {
    this.frozen = true;
  }

  thaw(): void {
    this.frozen = false;
    for (const link of this.links) {
      if (link.clientGone) {
        this.drop(link);
        continue;
      }
      for (const chunk of link.held.toServer.splice(0)) link.upstream.write(chunk);
      for (const chunk of link.held.toClient.splice(0)) this.deliver(link, chunk);
      if (link.upstreamGone) link.client.end(() => this.drop(link));
    }
  }

  counts(): ProxyCounts {
    const inFlight = [...this.links].filter((l) => !l.clientGone).flatMap((l) => l.pending);
    return { inFlight, connections: this.connections, requests: this.requests };
  }

  async stop(): Promise<void> {
    for (const link of this.links) this.drop(link);
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    this.connections += 1;
    const upstream = connect({ port: this.target.port, host: this.target.host, allowHalfOpen: true });
    const link: Link = {
      client,
      upstream,
      pending: [],
      clientGone: false,
      upstreamGone: false,
      held: { toServer: [], toClient: [] },
      fromClient: Buffer.alloc(0),
      fromServer: Buffer.alloc(0),
      started: false,
      parsed: '',
    };
    this.links.add(link);
    client.on('data', (chunk: Buffer) => {
      this.readRequests(link, chunk);
      if (this.frozen) link.held.toServer.push(chunk);
      else upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (this.frozen) link.held.toClient.push(chunk);
      else this.deliver(link, chunk);
    });
    const clientGone = () => {
      link.clientGone = true;
      if (!this.frozen) this.drop(link);
    };
    client.on('end', clientGone);
    client.on('close', clientGone);
    client.on('error', clientGone);
    const upstreamGone = () => {
      link.upstreamGone = true;
      if (!this.frozen) this.drop(link);
    };
    upstream.on('end', upstreamGone);
    upstream.on('close', upstreamGone);
    upstream.on('error', upstreamGone);
  }

  private drop(link: Link): void {
    link.clientGone = true;
    link.client.destroy();
    link.upstream.destroy();
    this.links.delete(link);
  }

  private deliver(link: Link, chunk: Buffer): void {
    this.readAnswers(link, chunk);
    if (!link.client.destroyed) link.client.write(chunk);
  }

  /** Client to server: an untyped startup message first, then typed messages (type, int32 length, body). */
  private readRequests(link: Link, chunk: Buffer): void {
    link.fromClient = Buffer.concat([link.fromClient, chunk]);
    for (;;) {
      const buffer = link.fromClient;
      if (!link.started) {
        if (buffer.length < 4) return;
        const length = buffer.readInt32BE(0);
        if (buffer.length < length) return;
        link.started = true;
        link.fromClient = buffer.subarray(length);
        this.request(link, 'startup');
        continue;
      }
      if (buffer.length < 5) return;
      const type = String.fromCharCode(buffer[0] ?? 0);
      const length = buffer.readInt32BE(1);
      if (buffer.length < length + 1) return;
      const body = buffer.subarray(5, length + 1);
      link.fromClient = buffer.subarray(length + 1);
      if (type === 'Q') this.request(link, cString(body, 0));
      else if (type === 'P') link.parsed = cString(body, body.indexOf(0) + 1);
      else if (type === 'S') this.request(link, link.parsed);
    }
  }

  /** Server to client: typed messages; ReadyForQuery ('Z') answers the oldest request. */
  private readAnswers(link: Link, chunk: Buffer): void {
    link.fromServer = Buffer.concat([link.fromServer, chunk]);
    for (;;) {
      const buffer = link.fromServer;
      if (buffer.length < 5) return;
      const length = buffer.readInt32BE(1);
      if (buffer.length < length + 1) return;
      if (buffer[0] === 'Z'.charCodeAt(0)) link.pending.shift();
      link.fromServer = buffer.subarray(length + 1);
    }
  }

  private request(link: Link, text: string): void {
    this.requests += 1;
    link.pending.push(text.replace(/\s+/g, ' ').trim());
  }
}

function cString(buffer: Buffer, start: number): string {
  const end = buffer.indexOf(0, start);
  return buffer.subarray(start, end === -1 ? buffer.length : end).toString('utf8');
}
