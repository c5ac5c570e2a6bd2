/** The resumable SSE stream on real HTTP connections: bounded replay, and nothing kept once delivered. */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SseStream } from '../../src/gateway/stream.ts';
import { parseSse } from './raw.ts';

describe('SseStream', () => {
  let server: http.Server;
  let base = '';
  let attachTo: (res: http.ServerResponse, after?: number) => void = () => undefined;

  before(async () => {
    server = http.createServer((req, res) => {
      const after = req.headers['last-event-id'];
      attachTo(res, after === undefined ? undefined : Number(String(after).split('.').pop()));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  const message = (n: number, size = 10) => ({ jsonrpc: '2.0' as const, method: 'notifications/message', params: { n, pad: 'x'.repeat(size) } });
  const read = async (headers: Record<string, string> = {}) => parseSse(await (await fetch(base, { headers })).text());

  it('keeps at most bufferBytes of undelivered events, dropping the oldest, and says what can still be resumed', async () => {
    const stream = new SseStream({ resumable: true, bufferLimit: 1000, bufferBytes: 3000, headers: {}, primeEvents: false });
    for (let n = 1; n <= 10; n++) stream.push(message(n, 900)); // ~950 bytes each: only the last 3 fit
    stream.end();
    assert.equal(stream.canResumeFrom(0), false, 'the first events were dropped');
    assert.equal(stream.canResumeFrom(7), true);
    let forgotten = false;
    stream.onDone = () => (forgotten = true);
    attachTo = (res, after) => stream.attach(res, after);
    const events = await read({ 'last-event-id': `${stream.key}.7` });
    assert.deepEqual(events.map((e) => (JSON.parse(e.data) as { params: { n: number } }).params.n), [8, 9, 10]);
    assert.deepEqual(events.map((e) => e.id), [`${stream.key}.8`, `${stream.key}.9`, `${stream.key}.10`]);
    assert.equal(forgotten, true, 'delivered to its end, the stream reports it can be forgotten');
    assert.equal(stream.canResumeFrom(7), false, 'nothing is kept after delivery');
  });

  it('keeps at most bufferLimit events', () => {
    const stream = new SseStream({ resumable: true, bufferLimit: 5, headers: {}, primeEvents: false });
    for (let n = 1; n <= 20; n++) stream.push(message(n));
    assert.equal(stream.canResumeFrom(14), false);
    assert.equal(stream.canResumeFrom(15), true);
  });

  it('a finished stream whose connection died keeps its events for the resumption', async () => {
    const stream = new SseStream({ resumable: true, bufferLimit: 100, headers: {}, primeEvents: false });
    stream.push(message(1));
    let first: http.ServerResponse | null = null;
    attachTo = (res) => {
      first = res;
      stream.attach(res);
    };
    const controller = new AbortController();
    const response = await fetch(base, { signal: controller.signal });
    const reader = response.body?.getReader();
    await reader?.read(); // event 1 arrived
    controller.abort();
    await new Promise((resolve) => (first as unknown as http.ServerResponse).once('close', resolve));
    stream.push(message(2));
    stream.end();
    assert.equal(stream.canResumeFrom(1), true);
    attachTo = (res, after) => stream.attach(res, after);
    const events = await read({ 'last-event-id': `${stream.key}.1` });
    assert.deepEqual(events.map((e) => (JSON.parse(e.data) as { params: { n: number } }).params.n), [2]);
  });
});
