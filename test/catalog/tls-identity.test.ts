/**
 * A catalog entry's expected identity on an https upstream, through the real
 * gateway (docs/catalog.md, src/gateway/upstream/identity.ts): with the
 * certificate's SPKI pin, a self-signed upstream is served (the pin is the
 * trust decision); with a wrong pin the connection is refused before any
 * request is written, `server.identity_mismatch` is recorded, the entry is
 * suspended and the route answers 403 without connecting again; once an
 * approver fixes the pin and reinstates the entry, it serves again.
 *
 * The certificates are made here with the openssl CLI (the tests fail, not
 * skip, without it); the upstreams are small Streamable HTTP MCP servers on
 * node:https that count the connections and requests they receive.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { ExpectedIdentity, ServerJson } from '../../src/catalog/types.ts';
import { createUsers } from '../helpers/users.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { errorOf, eventually, initializeMessage, post } from '../gateway/raw.ts';

const ROLES = { roles: { publisher: ['group:publishers'], approver: ['group:approvers'], auditor: ['group:security'] } };
const DAY = 86_400_000;
const ECHO = { name: 'echo', description: 'echoes text', inputSchema: { type: 'object', properties: { text: { type: 'string' } } } };

let dir: string;

function openssl(args: string[], input?: string | Buffer): Buffer {
  return execFileSync('openssl', args, { cwd: dir, input, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** base64(SHA-256(DER SubjectPublicKeyInfo)) of a public key in PEM, computed with the openssl CLI (not with src/). */
function pinOfPublicKey(pem: string): string {
  const der = openssl(['pkey', '-pubin', '-outform', 'der'], pem);
  const digest = openssl(['dgst', '-sha256', '-binary'], der);
  return openssl(['base64', '-A'], digest).toString('utf8').trim();
}

interface Certificate {
  key: string;
  cert: string;
  pin: string;
}

/** A self-signed EC certificate for 127.0.0.1, and its SPKI pin. */
function selfSigned(name: string): Certificate {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
  const pub = openssl(['x509', '-in', `${name}.pem`, '-pubkey', '-noout']).toString('utf8');
  return { key: readFileSync(path.join(dir, `${name}.key`), 'utf8'), cert: readFileSync(path.join(dir, `${name}.pem`), 'utf8'), pin: pinOfPublicKey(pub) };
}

/** The pin of a key pair no server here presents. */
function otherKeyPin(): string {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'other.key']);
  return pinOfPublicKey(openssl(['pkey', '-in', 'other.key', '-pubout']).toString('utf8'));
}

interface RpcMessage {
  id?: string | number | null;
  method?: string;
  params?: Record<string, unknown>;
}

interface Seen {
  /** The HTTP method and, for a POST, its JSON-RPC method (`-` for a response or garbage). */
  method: string;
  rpc: string | null;
  session: string | null;
}

interface TlsMcp {
  url: string;
  /** Every HTTP request that reached the server. */
  requests: Seen[];
  /** TCP connections accepted (a refused handshake counts; no request does). */
  connections: number;
  close(): void;
}

/**
 * A Streamable HTTP MCP server on node:https, framed as test/helpers/fake-upstream.ts:
 * POST initialize → JSON result (the client's protocolVersion, tools capability,
 * serverInfo) with an Mcp-Session-Id; notifications → 202; tools/list → one
 * `echo` tool; tools/call echo → "echo: TEXT"; DELETE → 200; GET → 405.
 */
async function startTlsMcp(certificate: Certificate): Promise<TlsMcp> {
  const sessions = new Set<string>();
  const state: TlsMcp = { url: '', requests: [], connections: 0, close: () => undefined };
  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) =>
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const session = typeof req.headers['mcp-session-id'] === 'string' ? req.headers['mcp-session-id'] : null;
      let message: RpcMessage | null = null;
      try {
        message = JSON.parse(Buffer.concat(chunks).toString('utf8')) as RpcMessage;
      } catch {
        message = null;
      }
      state.requests.push({ method: req.method ?? '', rpc: message?.method ?? (req.method === 'POST' ? '-' : null), session });
      if (req.method === 'GET') return void res.writeHead(405, { allow: 'POST, DELETE' }).end();
      if (req.method === 'DELETE') {
        if (session !== null) sessions.delete(session);
        return void res.writeHead(200).end();
      }
      if (req.method !== 'POST') return void res.writeHead(405).end();
      if (message === null) return json(res, 400, { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } });
      if (message.method !== 'initialize' && (session === null || !sessions.has(session))) {
        return json(res, session === null ? 400 : 404, { jsonrpc: '2.0', id: message.id ?? null, error: { code: -32000, message: 'bad session' } });
      }
      if (message.id === undefined || message.method === undefined) return void res.writeHead(202).end();
      const params = message.params ?? {};
      const answer = (result: unknown, headers: Record<string, string> = {}) => json(res, 200, { jsonrpc: '2.0', id: message.id, result }, headers);
      switch (message.method) {
        case 'initialize': {
          const id = randomBytes(16).toString('hex');
          sessions.add(id);
          return answer({ protocolVersion: params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'tls-echo', version: '1.0.0' } }, { 'mcp-session-id': id });
        }
        case 'ping':
          return answer({});
        case 'tools/list':
          return answer({ tools: [ECHO] });
        case 'tools/call':
          if (params.name === 'echo') return answer({ content: [{ type: 'text', text: `echo: ${String((params.arguments as { text?: unknown } | undefined)?.text ?? '')}` }] });
          return json(res, 200, { jsonrpc: '2.0', id: message.id, error: { code: -32602, message: `unknown tool: ${String(params.name)}` } });
        default:
          return json(res, 200, { jsonrpc: '2.0', id: message.id, error: { code: -32601, message: 'Method not found' } });
      }
    });
  };
  const server: HttpsServer = createHttpsServer({ key: certificate.key, cert: certificate.cert }, handler);
  server.on('connection', () => {
    state.connections += 1;
  });
  server.on('tlsClientError', () => undefined); // a client that hung up after the handshake
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  state.close = () => {
    server.closeAllConnections();
    server.close();
  };
  return state;
}

describe('the expected identity of an https catalog server', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let certificate: Certificate;
  let wrongPin: string;
  const servers: TlsMcp[] = [];
  const clients: Client[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'mandate-tls-identity-'));
    try {
      execFileSync('openssl', ['version'], { stdio: 'ignore' });
    } catch (error) {
      throw new Error(`these tests need the openssl CLI (on PATH) to make their certificates: ${(error as Error).message}`);
    }
    certificate = selfSigned('upstream');
    wrongPin = otherKeyPin();
    assert.match(certificate.pin, /^[A-Za-z0-9+/]{43}=$/);
    assert.notEqual(certificate.pin, wrongPin);
    mandate = await startInProcess({ servers: [], extra: { admin: ROLES } });
    await createUsers(mandate.store, { alice: ['publishers'], bob: ['approvers'] });
  });
  after(async () => {
    for (const client of clients) await client.close().catch(() => undefined);
    await mandate?.stop();
    for (const server of servers) server.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function startServer(): Promise<TlsMcp> {
    const server = await startTlsMcp(certificate);
    servers.push(server);
    return server;
  }

  const serverJsonFor = (route: string, url: string): ServerJson => ({ name: `io.example/${route}`, description: 'Echo over https', version: '1.0.0', remotes: [{ type: 'streamable-http', url }] });

  async function admit(route: string, url: string, expectedIdentity?: ExpectedIdentity): Promise<void> {
    await mandate.app.catalog.propose(
      { serverJson: serverJsonFor(route, url), route, owner: 'alice', risk: 'low', environment: 'dev', expiresAt: new Date(Date.now() + DAY), ...(expectedIdentity ? { expectedIdentity } : {}) },
      'alice',
      'echo over https',
    );
    const entry = await mandate.app.catalog.approve(route, 'bob', 'reviewed');
    assert.equal(entry.governance.status, 'approved');
    assert.deepEqual(entry.governance.expectedIdentity, expectedIdentity);
    await mandate.app.catalogRuntime.refresh();
  }

  async function connect(route: string): Promise<Client> {
    const client = new Client({ name: 'tls-identity-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(mandate.endpoint(route))));
    clients.push(client);
    return client;
  }

  /** Lists (echo is quarantined as new), pins echo by its live hash as bob, lists again and calls it. */
  async function pinAndCallEcho(route: string): Promise<string> {
    const client = await connect(route);
    assert.deepEqual((await client.listTools()).tools, [], 'echo is not pinned yet');
    const [row] = await eventually(() => mandate.store.catalog.listDrift(route), (rows) => rows.length === 1, `the echo tool of ${route} kept for review`);
    assert.equal(row?.tool, 'echo');
    await mandate.app.catalog.approvePin(route, 'echo', row!.hash, 'bob', 'reviewed echo');
    await mandate.app.catalogRuntime.refresh();
    assert.deepEqual((await client.listTools()).tools.map((t) => t.name), ['echo']);
    const result = await client.callTool({ name: 'echo', arguments: { text: 'over a pinned key' } });
    return (result.content as { text: string }[])[0]?.text ?? '';
  }

  const initialize = (route: string) => post(mandate.endpoint(route), initializeMessage('init'));

  it('a: with the certificate\'s SPKI pin, the self-signed https upstream is served end to end; without a pin the same server is not trusted', async () => {
    const upstream = await startServer();
    await admit('tls-pinned', upstream.url, { spkiSha256: [certificate.pin] });
    assert.equal(await pinAndCallEcho('tls-pinned'), 'echo: over a pinned key');
    const rpc = upstream.requests.filter((r) => r.method === 'POST').map((r) => r.rpc);
    for (const method of ['initialize', 'notifications/initialized', 'tools/list', 'tools/call']) assert.ok(rpc.includes(method), `${method} reached the upstream: ${JSON.stringify(rpc)}`);
    assert.equal((await mandate.app.catalog.get('tls-pinned')).governance.status, 'approved');
    assert.deepEqual((await mandate.audit({ types: ['server.identity_mismatch'] })).filter((e) => e.server === 'tls-pinned'), []);

    // The control: the same self-signed server with no expected identity fails ordinary certificate
    // validation, so it was the pin that made it acceptable. No request reaches it, and nothing is suspended.
    await admit('tls-unpinned', upstream.url);
    const before = upstream.requests.length;
    const { status, body } = await errorOf(await initialize('tls-unpinned'));
    // docs/gateway.md, "Errors on the wire": an upstream failure while a request is forwarded is HTTP 200 with -32000.
    assert.equal(status, 200);
    assert.equal(body.error?.code, -32000);
    assert.match(String(body.error?.message), /upstream server "tls-unpinned" is unavailable/);
    assert.equal(upstream.requests.length, before, 'no request reached the untrusted server');
    assert.equal((await mandate.app.catalog.get('tls-unpinned')).governance.status, 'approved');
  });

  it('b: a wrong pin: initialize fails (a JSON-RPC error naming the server and its identity) with no request sent, server.identity_mismatch is recorded, the entry is suspended and the next request gets 403 without connecting', async () => {
    const upstream = await startServer();
    await admit('tls-wrong', upstream.url, { spkiSha256: [wrongPin] });
    const res = await initialize('tls-wrong');
    const { status, body } = await errorOf(res);
    // A failure while the request is forwarded is answered with HTTP 200 and the JSON-RPC error, as docs/gateway.md
    // ("Errors on the wire") documents for every upstream failure of a request the client sent.
    assert.equal(status, 200);
    assert.equal(body.id, 'init');
    assert.equal(body.error?.code, -32000);
    const message = String(body.error?.message);
    assert.match(message, /upstream server "tls-wrong"/);
    assert.match(message, /identity did not match/);
    assert.ok(!message.includes(certificate.pin) && !message.includes(wrongPin), 'the client is not told the hashes');
    assert.ok(upstream.connections >= 1, 'the gateway did connect (the handshake is where the key is checked)');
    assert.equal(upstream.requests.length, 0, 'no MCP request reached the server whose key did not match');

    const [event, ...more] = await eventually(
      () => mandate.audit({ types: ['server.identity_mismatch'] }).then((list) => list.filter((e) => e.server === 'tls-wrong')),
      (list) => list.length >= 1,
      'server.identity_mismatch',
    );
    assert.equal(more.length, 0, 'recorded once');
    assert.equal(event?.actor, 'mandate');
    assert.equal(event?.data.check, 'spki');
    assert.equal(event?.data.expected, wrongPin);
    assert.equal(event?.data.actual, certificate.pin);
    assert.equal(event?.data.previousStatus, 'approved');
    const entry = await eventually(() => mandate.app.catalog.get('tls-wrong'), (e) => e.governance.status === 'suspended', 'the entry to be suspended');
    assert.equal(entry.governance.status, 'suspended');
    assert.ok((await mandate.app.catalog.history('tls-wrong')).some((h) => h.action === 'identity_mismatch' && h.actor === 'mandate'));

    // Blocked: 403 at once, and no further connection attempt.
    const connections = upstream.connections;
    for (let i = 0; i < 3; i += 1) {
      const blocked = await errorOf(await initialize('tls-wrong'));
      assert.equal(blocked.status, 403);
      assert.match(String(blocked.body.error?.message), /MCP server "tls-wrong" is not available/);
    }
    await mandate.app.catalogRuntime.refresh(true);
    assert.equal((await errorOf(await initialize('tls-wrong'))).status, 403, 'still blocked after the catalog is read again');
    assert.equal(upstream.connections, connections, 'a blocked route does not connect');
    assert.equal(upstream.requests.length, 0, `no request reached the server: ${JSON.stringify(upstream.requests)}`);
  });

  it('c: an approver fixes the pin (a proposal; approving it keeps the entry suspended, as service.ts says), then reinstates it, and it serves again', async () => {
    const route = 'tls-fixed';
    const upstream = await startServer();
    await admit(route, upstream.url, { spkiSha256: [wrongPin] });
    const refused = await errorOf(await initialize(route));
    assert.match(String(refused.body.error?.message), /identity did not match/);
    await eventually(() => mandate.app.catalog.get(route), (e) => e.governance.status === 'suspended', 'the entry to be suspended');
    assert.equal(upstream.requests.length, 0, `no request reached the server: ${JSON.stringify(upstream.requests)}`);

    const suspended = await mandate.app.catalog.get(route);
    const proposal = await mandate.app.catalog.propose(
      { serverJson: suspended.serverJson, route, owner: 'alice', risk: 'low', environment: 'dev', expiresAt: new Date(suspended.governance.expiresAt ?? 0), expectedIdentity: { spkiSha256: [certificate.pin] } },
      'alice',
      'the right key',
    );
    assert.deepEqual(proposal.content.changes, ['expected identity']);
    // Approving the open proposal applies the new pin but keeps the suspension (service.ts: `keepStatus` for a
    // suspended or retired entry); reinstating is a separate decision: `approve` with no open proposal.
    const changed = await mandate.app.catalog.approve(route, 'bob', 'pin fixed');
    assert.equal(changed.governance.status, 'suspended');
    assert.deepEqual(changed.governance.expectedIdentity, { spkiSha256: [certificate.pin] });
    await mandate.app.catalogRuntime.refresh();
    const still = await errorOf(await initialize(route));
    assert.equal(still.status, 403);
    assert.match(String(still.body.error?.message), /suspended/);
    assert.equal(upstream.requests.length, 0, `no request reached the server: ${JSON.stringify(upstream.requests)}`);

    const reinstated = await mandate.app.catalog.approve(route, 'bob', 'identity verified, reinstated');
    assert.equal(reinstated.governance.status, 'approved');
    assert.deepEqual(reinstated.governance.expectedIdentity, { spkiSha256: [certificate.pin] });
    const approvals = (await mandate.audit({ types: ['server.approved'] })).filter((e) => e.server === route).map((e) => [e.actor, e.reason]);
    assert.deepEqual(approvals, [
      ['bob', 'reviewed'],
      ['bob', 'pin fixed'],
      ['bob', 'identity verified, reinstated'],
    ]);
    await mandate.app.catalogRuntime.refresh();
    assert.equal(await pinAndCallEcho(route), 'echo: over a pinned key');
    assert.ok(upstream.requests.some((r) => r.rpc === 'tools/call'), 'the reinstated server was reached');
    assert.equal((await mandate.app.catalog.get(route)).governance.status, 'approved');
    assert.equal((await mandate.audit({ types: ['server.identity_mismatch'] })).filter((e) => e.server === route).length, 1, 'no new mismatch');
  });
});
