/**
 * The HTTP upstream's answer reading, against real node:http servers that
 * send their answers in awkward pieces: characters split between chunks,
 * SSE before the response, bodies over the limit, error statuses, aborts.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createPool, HttpUpstream } from '../../src/gateway/upstream/http.ts';
import { GatewayError } from '../../src/gateway/errors.ts';
import type { JsonRpcMessage, JsonRpcRequest } from '../../src/gateway/jsonrpc.ts';
import { NO_CREDENTIALS, type CredentialHook, type CredentialRequest } from '../../src/gateway/credentials.ts';
import type { RegisteredServer } from '../../src/gateway/registry.ts';

type Route = (body: JsonRpcRequest, res: ServerResponse, req: IncomingMessage) => void;

const TEXT = 'héllo wörld ✓ 𝄞 done';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes `bytes` in pieces of `size` bytes, whatever characters that splits. */
async function writeInPieces(res: ServerResponse, bytes: Buffer, size: number): Promise<void> {
  for (let i = 0; i < bytes.length; i += size) {
    res.write(bytes.subarray(i, i + size));
    await sleep(2);
  }
  res.end();
}

let server: Server;
let seen = 0;
const routes = new Map<string, Route>();

function call(name: string, id: number | string = 1): JsonRpcRequest {
  return { jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } };
}

routes.set('split-json', (body, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  void writeInPieces(res, Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { text: TEXT } })), 3);
});
routes.set('split-sse', (body, res) => {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  const progress = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 1, progress: 1, message: TEXT } });
  const response = JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { text: TEXT } });
  void writeInPieces(res, Buffer.from(`data: \n\nevent: message\ndata: ${progress}\n\nevent: message\ndata: ${response}\n\n`), 5);
});
routes.set('huge', (body, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { text: 'x'.repeat(10_000) } }));
});
routes.set('rpc-error', (body, res) => {
  res.writeHead(400, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, error: { code: -32602, message: 'bad arguments' } }));
});
routes.set('server-error', (_body, res) => {
  res.writeHead(500, { 'content-type': 'text/plain' });
  res.end('internal details that must not reach the client');
});
routes.set('html', (_body, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<html></html>');
});
routes.set('slow', (body, res) => {
  setTimeout(() => {
    if (res.destroyed) return;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: {} }));
  }, 5_000).unref();
});
routes.set('stream-ends-early', (_body, res) => {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.end('data: \n\n');
});
/** Answers 401 unless the request carries `x-api-key: fresh`; records what keys it saw. */
const keysSeen: (string | undefined)[] = [];
routes.set('guarded', (body, res, req) => {
  const key = req.headers['x-api-key'];
  keysSeen.push(typeof key === 'string' ? key : undefined);
  if (key !== 'fresh') {
    res.writeHead(req.headers['x-forbid'] ? 403 : 401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, error: { code: -32001, message: 'who are you' } }));
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { seen: { accept: req.headers.accept, session: req.headers['mcp-session-id'] ?? null } } }));
});
routes.set('fast', (body, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { ok: true } }));
});

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen += 1;
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as JsonRpcRequest;
      const name = (body.params as { name: string }).name;
      const route = routes.get(name);
      if (!route) {
        res.writeHead(404).end();
        return;
      }
      route(body, res, req);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
});

after(() => {
  server.closeAllConnections();
  server.close();
});

function upstream(maxMessageBytes = 4096, credentials: CredentialHook = NO_CREDENTIALS): HttpUpstream {
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  const target: RegisteredServer & { url: string } = { name: 'pieces', url, endpoint: 'http://gateway/mcp/pieces', transport: 'http', args: [], env: {}, generation: 1 };
  return new HttpUpstream({ server: target, pool: createPool(new URL(url)), maxMessageBytes, hooks: { onMessage() {}, onError() {}, onClosed() {} }, credentials, principal: null });
}

function rejectsWith(kind: string) {
  return (error: unknown) => {
    assert.ok(error instanceof GatewayError, `a GatewayError, got ${String(error)}`);
    assert.equal(error.kind, kind);
    return true;
  };
}

describe('HTTP upstream: reading answers', () => {
  it('a JSON answer in 3-byte pieces keeps every multi-byte character', async () => {
    const { message, status } = await upstream().request(call('split-json', 7), { signal: new AbortController().signal, onMessage() {} });
    assert.deepEqual(message, { jsonrpc: '2.0', id: 7, result: { text: TEXT } });
    assert.equal(status, 200);
  });

  it('an SSE answer in 5-byte pieces: the related message is passed on, then the response', async () => {
    const related: JsonRpcMessage[] = [];
    const { message } = await upstream().request(call('split-sse', 'a'), { signal: new AbortController().signal, onMessage: (m) => related.push(m) });
    assert.deepEqual(message, { jsonrpc: '2.0', id: 'a', result: { text: TEXT } });
    assert.equal(related.length, 1);
    assert.equal((related[0] as unknown as { params: { message: string } }).params.message, TEXT);
  });

  it('a body over maxMessageBytes is refused as a protocol error', async () => {
    await assert.rejects(upstream(4096).request(call('huge'), { signal: new AbortController().signal, onMessage() {} }), rejectsWith('upstream_protocol'));
  });

  it('a 4xx JSON-RPC error is relayed to the request with its status; a 500 is masked', async () => {
    const u = upstream();
    const relayed = await u.request(call('rpc-error', 3), { signal: new AbortController().signal, onMessage() {} });
    assert.deepEqual(relayed.message, { jsonrpc: '2.0', id: 3, error: { code: -32602, message: 'bad arguments' } });
    assert.equal(relayed.status, 400, 'the status travels with the answer');
    await assert.rejects(u.request(call('server-error'), { signal: new AbortController().signal, onMessage() {} }), (error: unknown) => {
      rejectsWith('upstream_unavailable')(error);
      assert.doesNotMatch((error as Error).message, /internal details/);
      return true;
    });
  });

  it('an answer that is neither JSON nor SSE, and a stream that ends before its response, are refused', async () => {
    const u = upstream();
    await assert.rejects(u.request(call('html'), { signal: new AbortController().signal, onMessage() {} }), rejectsWith('upstream_protocol'));
    await assert.rejects(u.request(call('stream-ends-early'), { signal: new AbortController().signal, onMessage() {} }), rejectsWith('upstream_unavailable'));
  });

  it('an abort in flight rejects with its reason at once; an abort before sending sends nothing', async () => {
    const u = upstream();
    const controller = new AbortController();
    const reason = new Error('the client went away');
    const started = Date.now();
    const pending = u.request(call('slow'), { signal: controller.signal, onMessage() {} });
    setTimeout(() => controller.abort(reason), 50);
    await assert.rejects(pending, (error) => error === reason);
    assert.ok(Date.now() - started < 4_000, 'did not wait for the slow answer');

    const before = seen;
    const aborted = new AbortController();
    aborted.abort(reason);
    await assert.rejects(u.request(call('fast'), { signal: aborted.signal, onMessage() {} }), (error) => error === reason);
    await sleep(50);
    assert.equal(seen, before, 'the upstream saw no request');
  });
});

describe('HTTP upstream: the credential hook', () => {
  const signal = () => new AbortController().signal;

  it('is asked for every request; its headers reach the upstream, and protocol headers win over them', async () => {
    const asked: CredentialRequest[] = [];
    const u = upstream(4096, { credential: (question) => (asked.push(question), { headers: { 'x-api-key': 'fresh', accept: 'text/plain' } }) });
    for (const id of [1, 2]) {
      const { message } = await u.request(call('guarded', id), { signal: signal(), onMessage() {} });
      assert.ok('result' in message, JSON.stringify(message));
      assert.deepEqual((message.result as { seen: { accept: string } }).seen.accept, 'application/json, text/event-stream');
    }
    assert.deepEqual(asked.map((q) => [q.purpose, q.attempt, q.server.name]), [['request', 0, 'pieces'], ['request', 0, 'pieces']]);
  });

  it('an upstream 401 or 403 is reported as refused credentials naming the server, never as unavailable, and never relayed', async () => {
    for (const forbid of [false, true]) {
      const u = upstream(4096, { credential: () => ({ headers: { 'x-api-key': 'stale', ...(forbid ? { 'x-forbid': '1' } : {}) } }) });
      await assert.rejects(u.request(call('guarded'), { signal: signal(), onMessage() {} }), (error: unknown) => {
        rejectsWith('upstream_auth')(error);
        assert.match((error as Error).message, /upstream credential rejected for server "pieces": it refused the gateway\'s credentials \(HTTP 40[13]\)/);
        return true;
      });
    }
  });

  it('after a refusal the hook may refresh once: the request is sent again with the new credential; a second refusal fails', async () => {
    let key = 'stale';
    const refusals: number[] = [];
    const refreshing: CredentialHook = {
      credential: () => ({ headers: { 'x-api-key': key } }),
      refused: (_question, status) => {
        refusals.push(status);
        key = 'fresh';
        return true;
      },
    };
    keysSeen.length = 0;
    const { message } = await upstream(4096, refreshing).request(call('guarded'), { signal: signal(), onMessage() {} });
    assert.ok('result' in message);
    assert.deepEqual(keysSeen, ['stale', 'fresh']);
    assert.deepEqual(refusals, [401]);

    keysSeen.length = 0;
    const never: CredentialHook = { credential: () => ({ headers: { 'x-api-key': 'stale' } }), refused: () => true };
    await assert.rejects(upstream(4096, never).request(call('guarded'), { signal: signal(), onMessage() {} }), rejectsWith('upstream_auth'));
    assert.deepEqual(keysSeen, ['stale', 'stale'], 'one retry, no more');
  });

  it('an asynchronous hook is awaited before the request is sent', async () => {
    const u = upstream(4096, { credential: async () => ({ headers: { 'x-api-key': 'fresh' } }) });
    const { message } = await u.request(call('guarded'), { signal: signal(), onMessage() {} });
    assert.ok('result' in message);
  });
});
