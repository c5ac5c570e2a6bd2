/**
 * The SSRF guard for outbound fetches (Client ID Metadata Documents):
 * special addresses are recognised, a loopback target is refused before any
 * connection (by literal address or by a name that resolves to it) unless
 * allow-listed, redirects are not followed, a slow server is cut off.
 * Also the host allow-list matcher it relies on.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { after, before, beforeEach, describe, it } from 'node:test';
import { hostMatches } from '../../src/identity/hosts.ts';
import { guardedFetch, isSpecialAddress, SsrfError } from '../../src/identity/ssrf.ts';

describe('isSpecialAddress', () => {
  const special = [
    '127.0.0.1', '127.255.255.254', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0',
    '224.0.0.1', '255.255.255.255', '::', '::1', '[::1]', 'fe80::1', 'fc00::1', 'fd12:3456::1', '::ffff:127.0.0.1', '::FFFF:169.254.169.254',
    '::ffff:169.254.169.254', '::ffff:10.0.0.1', '::ffff:7f00:1', '::ffff:a9fe:a9fe', 'ff02::1',
  ];
  for (const address of special) {
    it(`${address} is special`, () => assert.equal(isSpecialAddress(address), true));
  }
  const globalAddresses = ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '2606:4700::1111', '2001:4860:4860::8888', '::ffff:8.8.8.8'];
  for (const address of globalAddresses) {
    it(`${address} is not special`, () => assert.equal(isSpecialAddress(address), false));
  }
  it('something that is not an IP address counts as special (fail closed)', () => {
    assert.equal(isSpecialAddress('localhost'), true);
    assert.equal(isSpecialAddress(''), true);
  });
});

describe('hostMatches', () => {
  it('an exact host matches itself only', () => {
    assert.equal(hostMatches(['example.com'], 'example.com'), true);
    assert.equal(hostMatches(['example.com'], 'EXAMPLE.com.'), true, 'case and a trailing dot do not matter');
    assert.equal(hostMatches(['example.com'], 'a.example.com'), false);
    assert.equal(hostMatches(['example.com'], 'example.com.evil.net'), false);
    assert.equal(hostMatches([], 'example.com'), false);
  });
  it('*.example.com matches subdomains, not the apex nor look-alikes', () => {
    const patterns = ['*.example.com'];
    assert.equal(hostMatches(patterns, 'a.example.com'), true);
    assert.equal(hostMatches(patterns, 'a.b.example.com'), true);
    assert.equal(hostMatches(patterns, 'example.com'), false);
    assert.equal(hostMatches(patterns, 'badexample.com'), false);
    assert.equal(hostMatches(patterns, '.example.com'), false);
    assert.equal(hostMatches(patterns, 'a.example.com.evil.net'), false);
  });
  it('any pattern of several may match', () => {
    assert.equal(hostMatches(['one.test', '*.two.test'], 'x.two.test'), true);
    assert.equal(hostMatches(['one.test', '*.two.test'], 'three.test'), false);
  });
});

describe('guardedFetch', () => {
  let server: Server;
  let port = 0;
  let connections = 0;
  const hits = new Map<string, number>();

  before(async () => {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const path = req.url ?? '/';
      hits.set(path, (hits.get(path) ?? 0) + 1);
      if (path === '/redirect') {
        res.writeHead(302, { location: '/second' });
        res.end();
      } else if (path === '/slow') {
        const timer = setTimeout(() => res.end('late'), 5000);
        res.on('close', () => clearTimeout(timer));
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      }
    });
    server.on('connection', () => connections++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });

  beforeEach(() => {
    connections = 0;
    hits.clear();
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** The SsrfError behind a rejection, whether thrown directly or wrapped (fetch failed → cause). */
  async function ssrfRefusal(promise: Promise<unknown>): Promise<SsrfError> {
    let caught: unknown;
    try {
      await promise;
    } catch (error) {
      caught = error;
    }
    assert.ok(caught !== undefined, 'the fetch succeeded');
    let current: unknown = caught;
    for (let depth = 0; depth < 5 && current; depth++) {
      if (current instanceof SsrfError) return current;
      current = (current as { cause?: unknown }).cause;
    }
    assert.fail(`expected an SsrfError, got ${String(caught)} (cause: ${String((caught as { cause?: unknown }).cause)})`);
  }

  it('a literal loopback address is refused before connecting', async () => {
    const fetch = guardedFetch({ allowPrivate: [], timeoutMs: 2000 });
    await assert.rejects(fetch(`http://127.0.0.1:${port}/`), SsrfError);
    await assert.rejects(fetch(new URL(`http://127.0.0.1:${port}/`)), SsrfError);
    await assert.rejects(fetch(`http://[::1]:${port}/`), SsrfError);
    await assert.rejects(fetch(`http://[::ffff:127.0.0.1]:${port}/`), SsrfError);
    assert.equal(connections, 0, 'the server saw a connection');
    assert.equal(hits.size, 0);
  });

  it('a name that resolves to loopback is refused before connecting', async () => {
    const fetch = guardedFetch({ allowPrivate: [], timeoutMs: 2000 });
    const error = await ssrfRefusal(fetch(`http://localhost:${port}/`));
    assert.match(error.message, /localhost/);
    assert.equal(connections, 0, 'the server saw a connection');
    assert.equal(hits.size, 0);
  });

  it('an allow-listed host may reach a private address', async () => {
    const byName = guardedFetch({ allowPrivate: ['localhost'], timeoutMs: 2000 });
    const response = await byName(`http://localhost:${port}/doc`);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { ok: true });
    assert.equal(hits.get('/doc'), 1);

    const byAddress = guardedFetch({ allowPrivate: ['127.0.0.1'], timeoutMs: 2000 });
    assert.equal((await byAddress(`http://127.0.0.1:${port}/doc`)).status, 200);
    assert.equal(hits.get('/doc'), 2);
  });

  it('the allow-list is per host: allowing one name does not open another address', async () => {
    const fetch = guardedFetch({ allowPrivate: ['localhost'], timeoutMs: 2000 });
    await assert.rejects(fetch(`http://127.0.0.1:${port}/`), SsrfError);
    assert.equal(connections, 0);
  });

  it('redirects are not followed', async () => {
    const fetch = guardedFetch({ allowPrivate: ['localhost'], timeoutMs: 2000 });
    const response = await fetch(`http://localhost:${port}/redirect`, { redirect: 'follow' });
    assert.equal(response.status, 302);
    assert.equal(response.headers.get('location'), '/second');
    assert.equal(hits.get('/redirect'), 1);
    assert.equal(hits.get('/second'), undefined, 'the redirect target was requested');
  });

  it('a slow server is cut off after timeoutMs', async () => {
    const fetch = guardedFetch({ allowPrivate: ['localhost'], timeoutMs: 200 });
    const started = Date.now();
    await assert.rejects(
      async () => {
        const response = await fetch(`http://localhost:${port}/slow`);
        await response.text();
      },
      (error: Error) => error.name === 'TimeoutError' || error.name === 'AbortError',
    );
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 2000, `took ${elapsed} ms`);
    assert.equal(hits.get('/slow'), 1, 'the request did reach the server');
  });

  it("a caller's own signal and dispatcher cannot replace the guard", async () => {
    const fetch = guardedFetch({ allowPrivate: [], timeoutMs: 2000 });
    const error = await ssrfRefusal(fetch(`http://localhost:${port}/`, { dispatcher: undefined, signal: new AbortController().signal } as RequestInit));
    assert.ok(error instanceof SsrfError);
    assert.equal(connections, 0);
  });
});
