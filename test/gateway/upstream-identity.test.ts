/**
 * The upstream's expected identity (src/gateway/upstream/identity.ts),
 * through the gateway's real upstream code: `createPool` + `HttpUpstream`
 * against local node:https servers whose certificates the openssl CLI makes
 * here (a self-signed one, another self-signed one, and a leaf signed by a CA
 * made here), and `StdioUpstream` for the package check. Each refused
 * connection must fail with `upstream_identity`, tell the hook, and carry no
 * request to the server.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Pool } from 'undici';
import type { ExpectedIdentity } from '../../src/catalog/types.ts';
import { NO_CREDENTIALS, type CredentialHook } from '../../src/gateway/credentials.ts';
import { GatewayError } from '../../src/gateway/errors.ts';
import { RpcCode, type JsonRpcRequest, type JsonRpcResponse } from '../../src/gateway/jsonrpc.ts';
import type { RegisteredServer } from '../../src/gateway/registry.ts';
import { createPool, HttpUpstream, type PoolOptions } from '../../src/gateway/upstream/http.ts';
import { checkPackage, spiffeIds, spkiSha256, UpstreamIdentityError, type IdentityMismatch } from '../../src/gateway/upstream/identity.ts';
import { StdioUpstream } from '../../src/gateway/upstream/stdio.ts';

const OPENSSL = '/usr/bin/openssl';
const WEATHER = 'spiffe://example.org/mcp/weather';
const SAN = `subjectAltName=DNS:localhost,IP:127.0.0.1,URI:${WEATHER}`;

interface Pair {
  key: string;
  cert: string;
  pem: string;
  /** The pin as the openssl CLI computes it. */
  pin: string;
}

let dir: string;
const pairs: Record<'self' | 'other' | 'leaf' | 'crafted' | 'twoIds', Pair> = {} as never;
let caCert: string;

function openssl(args: string[], input?: string): string {
  return execFileSync(OPENSSL, args, { cwd: dir, input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** `openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`, one step at a time. */
function opensslPin(certFile: string): string {
  const pub = openssl(['x509', '-in', certFile, '-pubkey', '-noout']);
  const der = execFileSync(OPENSSL, ['pkey', '-pubin', '-outform', 'der'], { cwd: dir, input: pub });
  const digest = execFileSync(OPENSSL, ['dgst', '-sha256', '-binary'], { input: der });
  return execFileSync(OPENSSL, ['base64', '-A'], { input: digest, encoding: 'utf8' }).trim();
}

function pair(name: string): Pair {
  const key = readFileSync(path.join(dir, `${name}.key`), 'utf8');
  const pem = readFileSync(path.join(dir, `${name}.pem`), 'utf8');
  return { key, cert: pem, pem, pin: opensslPin(`${name}.pem`) };
}

/** A self-signed certificate from a config file (SANs written as openssl reads them, commas and all). */
function selfSignedFromConfig(name: string, alt: string[]): void {
  const config = ['[req]', 'distinguished_name = dn', 'x509_extensions = ext', 'prompt = no', '[dn]', `CN = ${name}`, '[ext]', 'subjectAltName = @alt', '[alt]', ...alt].join('\n');
  writeFileSync(path.join(dir, `${name}.cnf`), `${config}\n`);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-config', `${name}.cnf`]);
}

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'mandate-identity-'));
  try {
    execFileSync(OPENSSL, ['version'], { stdio: 'ignore' });
  } catch (error) {
    throw new Error(`these tests need the openssl CLI at ${OPENSSL} to make their certificates: ${(error as Error).message}`);
  }
  // A self-signed EC certificate for localhost / 127.0.0.1 that carries the weather SPIFFE ID.
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'self.key', '-out', 'self.pem', '-days', '2', '-subj', '/CN=localhost', '-addext', SAN]);
  // Another self-signed one, RSA, whose names match nothing here (CN=other only).
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.pem', '-days', '2', '-subj', '/CN=other']);
  // A CA, and a leaf it signs with the weather SPIFFE ID.
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Mandate Test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=weather']);
  writeFileSync(path.join(dir, 'leaf.ext'), `${SAN}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem', '-days', '2', '-extfile', 'leaf.ext']);
  // One URI SAN that holds a comma and looks like two: node quotes it, and it is one name.
  selfSignedFromConfig('crafted', [`URI.1 = spiffe://evil.example/x, URI:${WEATHER}`]);
  // Two SPIFFE IDs: not an X.509-SVID (it has exactly one).
  selfSignedFromConfig('twoIds', [`URI.1 = ${WEATHER}`, 'URI.2 = spiffe://example.org/mcp/other', 'DNS.1 = localhost', 'IP.1 = 127.0.0.1']);
  caCert = readFileSync(path.join(dir, 'ca.pem'), 'utf8');
  for (const name of ['self', 'other', 'leaf', 'crafted', 'twoIds'] as const) pairs[name] = pair(name);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('spkiSha256 and spiffeIds', () => {
  it('spkiSha256 is the value the openssl CLI computes (EC and RSA keys), from an X509Certificate or a peer certificate', () => {
    for (const name of ['self', 'other', 'leaf'] as const) {
      const cert = new X509Certificate(pairs[name].pem);
      assert.equal(spkiSha256(cert), pairs[name].pin, name);
      assert.equal(spkiSha256({ raw: cert.raw }), pairs[name].pin, `${name} as { raw }`);
      assert.match(pairs[name].pin, /^[A-Za-z0-9+/]{43}=$/);
    }
    assert.notEqual(pairs.self.pin, pairs.other.pin);
  });

  it('spiffeIds: the spiffe:// URI SANs only; a quoted SAN holding a comma is one name', () => {
    assert.deepEqual(spiffeIds(new X509Certificate(pairs.self.pem)), [WEATHER]);
    assert.deepEqual(spiffeIds(new X509Certificate(pairs.leaf.pem)), [WEATHER]);
    assert.deepEqual(spiffeIds(new X509Certificate(pairs.other.pem)), []);
    assert.deepEqual(spiffeIds(new X509Certificate(pairs.twoIds.pem)), [WEATHER, 'spiffe://example.org/mcp/other']);
    assert.deepEqual(spiffeIds(new X509Certificate(pairs.crafted.pem)), [`spiffe://evil.example/x, URI:${WEATHER}`]);
  });
});

/** A Streamable HTTP MCP server just big enough: initialize, tools/list, notifications. Counts the requests that reach it. */
function mcpHandler(seen: { requests: number }) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      seen.requests += 1;
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Partial<JsonRpcRequest>;
      if (body.id === undefined) {
        res.writeHead(202).end();
        return;
      }
      const result =
        body.method === 'initialize'
          ? { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'weather', version: '1.0.0' } }
          : body.method === 'tools/list'
            ? { tools: [{ name: 'forecast', inputSchema: { type: 'object' } }] }
            : {};
      res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'upstream-session-1' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result }));
    });
  };
}

interface Tls {
  server: HttpsServer;
  seen: { requests: number };
  url: string;
}

async function startTls(which: Pair): Promise<Tls> {
  const seen = { requests: 0 };
  const server = createHttpsServer({ key: which.key, cert: which.cert }, mcpHandler(seen));
  server.on('tlsClientError', () => undefined); // a client that refused the certificate
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, seen, url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/mcp` };
}

function stopTls(tls: Tls | undefined): void {
  tls?.server.closeAllConnections();
  tls?.server.close();
}

const initialize = (id: number | string = 1): JsonRpcRequest => ({
  jsonrpc: '2.0',
  id,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'test', version: '0' } },
});
const options = () => ({ signal: AbortSignal.timeout(10_000), onMessage() {} });

/** The result of a successful answer. */
function resultOf(answer: { message: JsonRpcResponse }): Record<string, unknown> {
  assert.ok('result' in answer.message, JSON.stringify(answer.message));
  return answer.message.result;
}
const serverName = (answer: { message: JsonRpcResponse }): unknown => (resultOf(answer).serverInfo as { name?: unknown } | undefined)?.name;

interface Harness {
  upstream: HttpUpstream;
  pool: Pool;
  mismatches: (IdentityMismatch & { server: string })[];
}

const pools: Pool[] = [];

/** The gateway's HTTP upstream for `url`, with the expectation in both the server definition and its pool. */
function connect(url: string, expectedIdentity: ExpectedIdentity | undefined, extra: Omit<PoolOptions, 'expectedIdentity'> = {}, credentials: CredentialHook = NO_CREDENTIALS): Harness {
  const mismatches: Harness['mismatches'] = [];
  const server: RegisteredServer & { url: string } = { name: 'weather', url, endpoint: 'http://gateway/mcp/weather', transport: 'http', args: [], env: {}, generation: 1, expectedIdentity };
  const pool = createPool(new URL(url), { expectedIdentity: server.expectedIdentity, ...extra });
  pools.push(pool);
  const upstream = new HttpUpstream({
    server,
    pool,
    maxMessageBytes: 65_536,
    hooks: { onMessage() {}, onError() {}, onClosed() {} },
    credentials,
    principal: null,
    onIdentityMismatch: (named, mismatch) => mismatches.push({ server: named.name, ...mismatch }),
  });
  return { upstream, pool, mismatches };
}

function identityRefusal(error: unknown): true {
  assert.ok(error instanceof GatewayError, `a GatewayError, got ${String(error)}`);
  assert.equal(error.kind, 'upstream_identity', `${error.kind}: ${error.detail ?? error.message}`);
  assert.equal(error.status, 502);
  assert.equal(error.code, RpcCode.UpstreamUnavailable);
  assert.match(error.message, /"weather"/);
  assert.match(error.message, /identity did not match the one approved/);
  return true;
}

after(async () => {
  await Promise.all(pools.map((pool) => pool.destroy()));
});

describe('https upstream: a SPKI pin', () => {
  let self: Tls;
  let other: Tls;

  before(async () => {
    self = await startTls(pairs.self);
    other = await startTls(pairs.other);
  });

  after(() => {
    stopTls(self);
    stopTls(other);
  });

  it('a matching pin works against a self-signed certificate (initialize, then tools/list on the session)', async () => {
    const { upstream, mismatches } = connect(self.url, { spkiSha256: ['bm90IHRoaXMgb25l', pairs.self.pin] });
    const init = await upstream.request(initialize(), options());
    assert.equal(serverName(init), 'weather');
    const list = await upstream.request({ jsonrpc: '2.0', id: 2, method: 'tools/list' }, options());
    assert.deepEqual((resultOf(list).tools as { name: string }[]).map((t) => t.name), ['forecast']);
    assert.deepEqual(mismatches, []);
  });

  it('the pin is the trust decision: a certificate whose names match nothing here is accepted when pinned', async () => {
    const { upstream } = connect(other.url, { spkiSha256: [pairs.other.pin] });
    await upstream.request(initialize(), options());
    assert.ok(other.seen.requests >= 1);
  });

  it('without a pin the same self-signed server is refused by normal validation (not an identity mismatch)', async () => {
    const before = other.seen.requests;
    const { upstream, mismatches } = connect(other.url, undefined);
    await assert.rejects(upstream.request(initialize(), options()), (error: unknown) => error instanceof GatewayError && error.kind === 'upstream_unavailable');
    assert.equal(other.seen.requests, before);
    assert.deepEqual(mismatches, []);
  });

  it('a wrong pin: upstream_identity, the hook is told (hashes in the detail, not the message), no request reaches the server', async () => {
    const before = self.seen.requests;
    const { upstream, mismatches } = connect(self.url, { spkiSha256: [pairs.other.pin] });
    let refusal: GatewayError | undefined;
    await assert.rejects(upstream.request(initialize(), options()), (error: unknown) => {
      identityRefusal(error);
      refusal = error as GatewayError;
      return true;
    });
    assert.deepEqual(mismatches, [{ server: 'weather', check: 'spki', expected: pairs.other.pin, actual: pairs.self.pin }]);
    assert.ok(!refusal?.message.includes(pairs.self.pin) && !refusal?.message.includes(pairs.other.pin));
    assert.ok(refusal?.detail?.includes(pairs.self.pin) && refusal.detail.includes(pairs.other.pin), refusal?.detail);
    assert.equal(self.seen.requests, before, 'no request reached the server');
  });

  it('a notification (the non-streaming send path) is refused the same way', async () => {
    const before = self.seen.requests;
    const { upstream, mismatches } = connect(self.url, { spkiSha256: [pairs.other.pin] });
    await assert.rejects(upstream.send({ jsonrpc: '2.0', method: 'notifications/initialized' }), identityRefusal);
    assert.equal(mismatches.length, 1);
    assert.equal(self.seen.requests, before);
  });

  it('an empty pin list accepts nothing', async () => {
    const { upstream, mismatches } = connect(self.url, { spkiSha256: [] });
    await assert.rejects(upstream.request(initialize(), options()), identityRefusal);
    assert.equal(mismatches[0]?.check, 'spki');
  });

  it('every new connection is checked again: a refused one is not remembered, and neither is an accepted one', async () => {
    const before = self.seen.requests;
    const wrong = connect(self.url, { spkiSha256: [pairs.other.pin] });
    await assert.rejects(wrong.upstream.request(initialize(1), options()), identityRefusal);
    await assert.rejects(wrong.upstream.request(initialize(2), options()), identityRefusal);
    assert.equal(wrong.mismatches.length, 2, 'the hook heard of each refused connection');
    assert.equal(self.seen.requests, before);

    // Accepted, then the server's key changes: the next new connection is refused.
    const right = connect(self.url, { spkiSha256: [pairs.self.pin] });
    await right.upstream.request(initialize(3), options());
    assert.equal(self.seen.requests, before + 1);
    try {
      self.server.setSecureContext({ key: pairs.other.key, cert: pairs.other.cert });
      self.server.closeAllConnections();
      await assert.rejects(right.upstream.request(initialize(4), options()), identityRefusal);
      assert.deepEqual(right.mismatches.map((m) => m.actual), [pairs.other.pin]);
      assert.equal(self.seen.requests, before + 1, 'nothing reached the server with the other key');
    } finally {
      self.server.setSecureContext({ key: pairs.self.key, cert: pairs.self.cert });
      self.server.closeAllConnections();
    }
    await right.upstream.request(initialize(5), options());
    assert.equal(self.seen.requests, before + 2);
  });

  it('requests at once: each refused with upstream_identity, the hook told once per refused connection, never more', async () => {
    const before = self.seen.requests;
    const { upstream, mismatches } = connect(self.url, { spkiSha256: [pairs.other.pin] });
    const answers = await Promise.allSettled([upstream.request(initialize(1), options()), upstream.request(initialize(2), options()), upstream.request(initialize(3), options())]);
    for (const answer of answers) {
      assert.equal(answer.status, 'rejected');
      if (answer.status === 'rejected') identityRefusal(answer.reason);
    }
    // how many connections the pool opened for them is undici's business: at least one, at most one each
    assert.ok(mismatches.length >= 1 && mismatches.length <= answers.length, String(mismatches.length));
    assert.equal(self.seen.requests, before);
  });

  it('one refused connection failing several requests (one error object) is told to the hook once', () => {
    const { upstream, mismatches } = connect(self.url, { spkiSha256: [pairs.other.pin] });
    const error = new UpstreamIdentityError({ check: 'spki', expected: pairs.other.pin, actual: pairs.self.pin });
    identityRefusal(upstream.connectFailed('POST', error));
    identityRefusal(upstream.connectFailed('GET', error));
    assert.equal(mismatches.length, 1);
  });

  it('the credential is never handed out on a refused connection', async () => {
    const asked: string[] = [];
    const credentials: CredentialHook = {
      credential: (question) => {
        asked.push(question.purpose);
        return { headers: { authorization: 'Bearer secret-for-weather' } };
      },
    };
    const before = self.seen.requests;
    const { upstream } = connect(self.url, { spkiSha256: [pairs.other.pin] }, {}, credentials);
    await assert.rejects(upstream.request(initialize(), options()), identityRefusal);
    assert.deepEqual(asked, ['request'], 'asked for before the request');
    assert.equal(self.seen.requests, before, 'the header (and its credential) never left the gateway');
  });
});

describe('https upstream: a SPIFFE ID', () => {
  let leaf: Tls;
  let self: Tls;
  let twoIds: Tls;
  let crafted: Tls;

  before(async () => {
    leaf = await startTls(pairs.leaf);
    self = await startTls(pairs.self);
    twoIds = await startTls(pairs.twoIds);
    crafted = await startTls(pairs.crafted);
  });

  after(() => {
    for (const tls of [leaf, self, twoIds, crafted]) stopTls(tls);
  });

  it('the right ID on a certificate signed by a trusted CA passes', async () => {
    const { upstream, mismatches } = connect(leaf.url, { spiffeId: WEATHER }, { ca: caCert });
    await upstream.request(initialize(), options());
    assert.equal(leaf.seen.requests, 1);
    assert.deepEqual(mismatches, []);
  });

  it('another ID: upstream_identity, hook told, nothing sent', async () => {
    const before = leaf.seen.requests;
    const { upstream, mismatches } = connect(leaf.url, { spiffeId: 'spiffe://example.org/mcp/billing' }, { ca: caCert });
    await assert.rejects(upstream.request(initialize(), options()), identityRefusal);
    assert.deepEqual(mismatches, [{ server: 'weather', check: 'spiffe', expected: 'spiffe://example.org/mcp/billing', actual: WEATHER }]);
    assert.equal(leaf.seen.requests, before);
  });

  it('CA validation stays on: the right ID on a self-signed certificate is refused by TLS itself', async () => {
    const { upstream, mismatches } = connect(self.url, { spiffeId: WEATHER }, { ca: caCert });
    await assert.rejects(upstream.request(initialize(), options()), (error: unknown) => error instanceof GatewayError && error.kind === 'upstream_unavailable');
    assert.equal(self.seen.requests, 0);
    assert.deepEqual(mismatches, []);
  });

  it('with a pin as well, the pin decides trust and the ID must still match', async () => {
    const both = connect(self.url, { spkiSha256: [pairs.self.pin], spiffeId: WEATHER });
    await both.upstream.request(initialize(), options());
    assert.equal(self.seen.requests, 1);
    const wrongId = connect(self.url, { spkiSha256: [pairs.self.pin], spiffeId: 'spiffe://example.org/mcp/billing' });
    await assert.rejects(wrongId.upstream.request(initialize(), options()), identityRefusal);
    assert.equal(wrongId.mismatches[0]?.check, 'spiffe');
    assert.equal(self.seen.requests, 1);
  });

  it('a certificate with two SPIFFE IDs, or one crafted SAN that reads like two, is refused', async () => {
    const two = connect(twoIds.url, { spkiSha256: [pairs.twoIds.pin], spiffeId: WEATHER });
    await assert.rejects(two.upstream.request(initialize(), options()), identityRefusal);
    assert.equal(two.mismatches[0]?.actual, `${WEATHER}, spiffe://example.org/mcp/other`);
    const fake = connect(crafted.url, { spkiSha256: [pairs.crafted.pin], spiffeId: WEATHER });
    await assert.rejects(fake.upstream.request(initialize(), options()), identityRefusal);
    assert.equal(twoIds.seen.requests + crafted.seen.requests, 0);
  });
});

describe('plaintext http upstream with an https-only expectation', () => {
  let server: HttpServer;
  const seen = { requests: 0 };
  let connections = 0;
  let url: string;

  before(async () => {
    server = createHttpServer(mcpHandler(seen));
    server.on('connection', () => {
      connections += 1;
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  });

  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it('a pin or SPIFFE ID cannot be checked on plaintext: refused without connecting', async () => {
    for (const expected of [{ spkiSha256: [pairs.self.pin] }, { spiffeId: WEATHER }] satisfies ExpectedIdentity[]) {
      const { upstream, mismatches } = connect(url, expected);
      await assert.rejects(upstream.request(initialize(), options()), identityRefusal);
      assert.equal(mismatches.length, 1);
      assert.match(mismatches[0]?.actual ?? '', /plaintext/);
    }
    assert.equal(connections, 0);
    assert.equal(seen.requests, 0);
  });

  it('a package expectation alone does not concern an http upstream', async () => {
    const { upstream } = connect(url, { package: { registryType: 'npm', identifier: 'weather', version: '1.0.0' } });
    await upstream.request(initialize(), options());
    assert.equal(seen.requests, 1);
  });
});

describe('checkPackage', () => {
  const npm = { registryType: 'npm', identifier: '@acme/weather', version: '1.2.3' };
  const pypi = { registryType: 'pypi', identifier: 'weather-mcp', version: '0.4.1' };

  it('nothing expected: any command line', () => {
    assert.equal(checkPackage(undefined, 'node', ['server.js']), null);
  });

  it('npm: npx -y IDENTIFIER@VERSION, server arguments after it allowed', () => {
    assert.equal(checkPackage(npm, 'npx', ['-y', '@acme/weather@1.2.3']), null);
    assert.equal(checkPackage(npm, 'npx', ['--yes', '@acme/weather@1.2.3', '--port', '0']), null);
    assert.equal(checkPackage(npm, '/usr/local/bin/npx', ['-y', '@acme/weather@1.2.3']), null);
  });

  it('npm: @latest, no version, another version or package, no -y, an option before the package, another runner: refused', () => {
    const refused = (command: string, args: string[]) => {
      const mismatch = checkPackage(npm, command, args);
      assert.ok(mismatch, `${command} ${args.join(' ')} should be refused`);
      assert.equal(mismatch.check, 'package');
      assert.equal(mismatch.expected, 'npx -y @acme/weather@1.2.3');
      assert.equal(mismatch.actual, [command, ...args].join(' '));
    };
    refused('npx', ['-y', '@acme/weather@latest']);
    refused('npx', ['-y', '@acme/weather']);
    refused('npx', ['-y', '@acme/weather@1.2.4']);
    refused('npx', ['-y', '@acme/weather@^1.2.3']);
    refused('npx', ['-y', '@evil/weather@1.2.3']);
    refused('npx', ['@acme/weather@1.2.3']);
    refused('npx', ['-p', '@evil/x@1.0.0', '-y', '@acme/weather@1.2.3']);
    refused('npx', []);
    refused('node', ['-y', '@acme/weather@1.2.3']);
    refused('./npx', ['-y', '@acme/weather@1.2.3']);
    refused('bunx', ['@acme/weather@1.2.3']);
  });

  it('an approved version that is not exact is refused whatever the command line says', () => {
    for (const version of ['latest', '^1.2.3', '1.x', '', '>=1.0.0']) {
      const mismatch = checkPackage({ ...npm, version }, 'npx', ['-y', `@acme/weather@${version}`]);
      assert.ok(mismatch, version);
      assert.match(mismatch.actual, /not an exact version/);
    }
    assert.ok(checkPackage({ ...pypi, version: '0.4.*' }, 'uvx', ['weather-mcp==0.4.*']));
  });

  it('pypi: uvx IDENTIFIER==VERSION (the name in its normal form), nothing else', () => {
    assert.equal(checkPackage(pypi, 'uvx', ['weather-mcp==0.4.1']), null);
    assert.equal(checkPackage(pypi, 'uvx', ['Weather_MCP==0.4.1', '--verbose']), null);
    assert.equal(checkPackage({ ...pypi, version: '1.0rc1' }, 'uvx', ['weather-mcp==1.0rc1']), null);
    for (const args of [['weather-mcp'], ['weather-mcp>=0.4.1'], ['weather-mcp==0.4.2'], ['weather-mcp==0.4.1.0'], ['--from', 'x', 'weather-mcp==0.4.1'], ['other==0.4.1'], []]) {
      const mismatch = checkPackage(pypi, 'uvx', args);
      assert.ok(mismatch, args.join(' '));
      assert.equal(mismatch.expected, 'uvx weather-mcp==0.4.1');
    }
    assert.ok(checkPackage(pypi, 'pipx', ['run', 'weather-mcp==0.4.1']));
  });

  it('a registry type with no known runner is refused', () => {
    const mismatch = checkPackage({ registryType: 'oci', identifier: 'ghcr.io/acme/weather', version: '1.2.3' }, 'docker', ['run', 'ghcr.io/acme/weather:1.2.3']);
    assert.ok(mismatch);
    assert.match(mismatch.actual, /no known runner/);
  });
});

describe('stdio upstream: the package is checked before every start', () => {
  const expected: ExpectedIdentity = { package: { registryType: 'npm', identifier: '@acme/weather', version: '1.2.3' } };

  function stdio(command: string, args: string[]) {
    const record = { processes: 0, mismatches: [] as IdentityMismatch[], closed: [] as GatewayError[], asked: 0 };
    const server: RegisteredServer = { name: 'weather', command, args, env: {}, endpoint: 'http://gateway/mcp/weather', transport: 'stdio', generation: 1, expectedIdentity: expected };
    const upstream = new StdioUpstream({
      server,
      maxMessageBytes: 65_536,
      hooks: { onMessage() {}, onError() {}, onClosed: (error) => record.closed.push(error) },
      credentials: {
        credential: () => {
          record.asked += 1;
          return {};
        },
      },
      principal: null,
      onProcess: (change) => {
        record.processes += change;
      },
      onIdentityMismatch: (named, mismatch) => {
        assert.equal(named.name, 'weather');
        record.mismatches.push(mismatch);
      },
    });
    return { upstream, record };
  }

  it('an unpinned command line: nothing is started, no credential asked, the request fails with upstream_identity, the hook is told', async () => {
    const { upstream, record } = stdio('npx', ['-y', '@acme/weather@latest']);
    await assert.rejects(upstream.request(initialize(), options()), identityRefusal);
    assert.equal(record.processes, 0);
    assert.equal(record.asked, 0);
    assert.deepEqual(record.mismatches, [{ check: 'package', expected: 'npx -y @acme/weather@1.2.3', actual: 'npx -y @acme/weather@latest' }]);
    // The session hears of the close once the requests' own errors are out (the next turn of the event loop).
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(record.closed[0]?.kind, 'upstream_identity');
    // a later request is refused with the same reason
    await assert.rejects(upstream.request(initialize(2), options()), identityRefusal);
    await upstream.close();
  });

  it('the expected command line starts (an npx stand-in at an absolute path answers initialize)', async () => {
    const bin = path.join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    const npx = path.join(bin, 'npx');
    writeFileSync(
      npx,
      `#!${process.execPath}
let buffer = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buffer += chunk;
  let at;
  while ((at = buffer.indexOf('\\n')) !== -1) {
    const message = JSON.parse(buffer.slice(0, at));
    buffer = buffer.slice(at + 1);
    if (message.id !== undefined) process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: message.id, result: { protocolVersion: '2025-06-18', capabilities: {}, serverInfo: { name: process.argv.slice(2).join(' '), version: '1' } } }) + '\\n');
  }
});
`,
    );
    chmodSync(npx, 0o755);
    const { upstream, record } = stdio(npx, ['-y', '@acme/weather@1.2.3']);
    const answer = await upstream.request(initialize(), options());
    assert.equal(serverName(answer), '-y @acme/weather@1.2.3');
    assert.equal(record.processes, 1);
    assert.deepEqual(record.mismatches, []);
    await upstream.close();
  });
});
