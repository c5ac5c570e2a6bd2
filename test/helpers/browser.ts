/**
 * Test harness for browser flows: Debian's Chromium driven by playwright-core
 * (which downloads no browser of its own), and a loopback redirect URI
 * (RFC 8252 §7.3) that captures what the authorization server sends back.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/** A headless Chromium; close it in `after`. */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** One request to the redirect URI, as the authorization server sent the browser there. */
export interface CallbackHit {
  url: URL;
  code: string | null;
  state: string | null;
  iss: string | null;
  error: string | null;
}

export interface CallbackServer {
  /** The redirect URI: http://127.0.0.1:PORT/callback. */
  url: string;
  /** Every hit so far, oldest first. */
  hits: CallbackHit[];
  /** The next hit not yet taken (waits for it, up to timeoutMs). */
  next(timeoutMs?: number): Promise<CallbackHit>;
  close(): Promise<void>;
}

/** A tiny HTTP server on 127.0.0.1 serving the redirect URI; it answers every hit with a short page. */
export async function startCallbackServer(path = '/callback'): Promise<CallbackServer> {
  const hits: CallbackHit[] = [];
  let taken = 0;
  const waiters: Array<() => void> = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== path) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    const param = (name: string): string | null => url.searchParams.get(name);
    hits.push({ url: new URL(req.url ?? '/', `http://${req.headers.host}`), code: param('code'), state: param('state'), iss: param('iss'), error: param('error') });
    for (const wake of waiters.splice(0)) wake();
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end('<!doctype html><title>Done</title><h1>Authorization finished</h1><p>You may close this window.</p>');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${path}`,
    hits,
    async next(timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (hits.length <= taken) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`the redirect URI was not called within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return hits[taken++]!;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
