/**
 * Secrets the gateway presents to upstreams (docs/credentials.md), end to
 * end: an HTTP upstream that wants an API key and a stdio upstream that
 * wants an environment variable work through Mandate with the key stored
 * only in Mandate (set with `mandate secrets set --stdin`); the client never
 * sees it, and neither `mandate secrets list`, the logs, the audit log nor
 * `audit export` contain it. A rotation is in force without a restart; the
 * version it replaced is tried once while its grace period lasts, then no
 * more.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startFakeUpstream, type FakeUpstream, type Received } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { NODE, ROOT } from '../helpers/process.ts';
import { mandate as cli } from '../cli/run.ts';
import { eventually } from '../gateway/raw.ts';

const RAW = path.join(ROOT, 'test/fixtures/raw-server.ts');
const secret = () => `sk_live_${randomBytes(18).toString('base64url')}`;

describe('secrets presented to upstreams', { timeout: 120_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  const logs: string[] = [];
  /** The keys the HTTP upstream accepts now. */
  let accepted = new Set<string>();
  const seenAuthorization: string[] = [];
  const first = secret();
  const second = secret();
  const local = secret();

  before(async () => {
    upstream = await startFakeUpstream();
    const guard = (_message: unknown, request: Received) => {
      if (request.headers.authorization !== undefined) seenAuthorization.push(String(request.headers.authorization));
      return accepted.has(String(request.headers['x-api-key'])) ? undefined : { status: 401, body: '' };
    };
    for (const method of ['initialize', 'notifications/initialized', 'tools/list', 'tools/call']) upstream.on(method, guard);
    const sink = new Writable({
      write(chunk, _encoding, done) {
        logs.push(String(chunk));
        done();
      },
    });
    gateway = await startInProcess({
      servers: [
        { name: 'weather', url: upstream.url, auth: { kind: 'secret', secret: 'weather-key', header: 'X-Api-Key' } },
        { name: 'local', command: NODE, args: [RAW, 'ok'], auth: { kind: 'secret', secret: 'local-token', env: 'LOCAL_TOKEN' } },
      ],
      app: { log: pino({ level: 'debug' }, sink) },
    });
  });
  after(async () => {
    await gateway?.stop();
    await upstream?.close();
  });

  const secrets = (args: string[], input?: string) => cli(['secrets', ...args, '--data', gateway.dataDir], input === undefined ? {} : { input });

  async function connect(name: string): Promise<Client> {
    const client = new Client({ name: 'secrets-test', version: '1.0.0' });
    // A credential of the client's own must never reach the upstream.
    await client.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint(name)), { requestInit: { headers: { 'x-api-key': 'client-own-key' } } }));
    return client;
  }

  it('a secret that is not set fails the call closed, naming the secret and not a value', async () => {
    await assert.rejects(connect('weather'), /needs the secret "weather-key", which is not set/);
    await assert.rejects(connect('local'), /needs the secret "local-token", which is not set/);
  });

  it('set from standard input: the HTTP upstream gets its header, the stdio upstream its variable; the client sees neither', async () => {
    const noStdin = await secrets(['set', 'weather-key']);
    assert.equal(noStdin.code, 2);
    assert.match(noStdin.stderr, /read from standard input: pass --stdin/);
    accepted = new Set([first]);
    const set = await secrets(['set', 'weather-key', '--stdin'], `${first}\n`);
    assert.equal(set.code, 0, set.stderr);
    assert.equal((await secrets(['set', 'local-token', '--stdin'], local)).code, 0);
    const client = await eventually(() => connect('weather').catch(() => null), (c) => c !== null, 'the secret to be in force');
    const result = await client!.callTool({ name: 'echo', arguments: { text: 'hi' } });
    assert.equal((result.content as { text: string }[])[0]?.text, 'echo: hi');
    assert.ok(!JSON.stringify(result).includes(first));
    await client!.close();
    assert.deepEqual(seenAuthorization, [], 'no Authorization reached the upstream');
    assert.ok(upstream.requests.length > 0 && upstream.requests.every((r) => r.headers['x-api-key'] !== 'client-own-key'), 'the client\'s own key never reached the upstream');

    // Set a moment after the other: in force at the next poll (within a second).
    const stdio = (await eventually(() => connect('local').catch(() => null), (c) => c !== null, 'the stdio secret to be in force'))!;
    const hashed = await stdio.callTool({ name: 'env-sha256', arguments: { name: 'LOCAL_TOKEN' } });
    assert.equal((hashed.content as { text: string }[])[0]?.text, createHash('sha256').update(local).digest('hex'));
    await stdio.close();
  });

  it('rotation is in force without a restart; the replaced version is tried while its grace lasts, then no more', async () => {
    // The upstream still knows only the old key: the new one is refused, the old one is tried once more.
    const rotated = await secrets(['rotate', 'weather-key', '--stdin', '--grace', '3s'], second);
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.match(rotated.stdout, /version 2; version 1 stays usable for 3s/);
    await eventually(async () => upstream.requests.some((r) => r.headers['x-api-key'] === second) || (await connect('weather').then((c) => c.close().then(() => false))), Boolean, 'the new version to be sent', 10_000);
    const during = await connect('weather');
    assert.equal(((await during.callTool({ name: 'echo', arguments: { text: 'a' } })).content as { text: string }[])[0]?.text, 'echo: a');
    await during.close();
    // After the grace period the old version is gone: an upstream that still wants it refuses the gateway.
    await new Promise((resolve) => setTimeout(resolve, 3500));
    await assert.rejects(eventually(() => connect('weather').then(() => false, () => true), Boolean, 'refused', 5000).then(() => connect('weather')), /upstream credential rejected for server "weather"/);
    const rejected = await eventually(() => gateway.audit({ types: ['credential.rejected'] }), (list) => list.length > 0, 'credential.rejected');
    assert.equal(rejected[0]?.server, 'weather');
    assert.equal(rejected[0]?.data?.secret, 'weather-key');
    assert.equal(rejected[0]?.data?.status, 401);
    // The upstream takes the new key: served again, no restart.
    accepted = new Set([second]);
    const after = await connect('weather');
    assert.equal(((await after.callTool({ name: 'echo', arguments: { text: 'b' } })).content as { text: string }[])[0]?.text, 'echo: b');
    await after.close();
  });

  it('the values are nowhere: not in secrets list, the logs, the audit log or its export', async () => {
    const listed = await secrets(['list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const rows = JSON.parse(listed.stdout) as { name: string; version: number; lastUsedAt: string | null }[];
    assert.deepEqual(rows.map((r) => [r.name, r.version]), [['local-token', 1], ['weather-key', 2]]);
    assert.ok(rows.every((r) => r.lastUsedAt !== null), 'last use is kept');
    const text = await secrets(['list']);
    const exported = await cli(['audit', 'export', '--data', gateway.dataDir]);
    assert.equal(exported.code, 0, exported.stderr);
    // Each forwarded request names the credential it carried, by name and version.
    const calls = (await gateway.audit({ types: ['mcp.request'] })).filter((e) => e.data?.method === 'tools/call');
    const used = new Set(calls.map((e) => `${e.server} ${String(e.data?.credential)}`));
    for (const reference of ['weather secret:weather-key:v1', 'weather secret:weather-key:v2', 'local secret:local-token:v1']) assert.ok(used.has(reference), `${reference} in ${[...used].join(', ')}`);
    const events = await gateway.audit({ types: ['credential.*'] });
    assert.deepEqual(events.filter((e) => e.type === 'credential.rotated').map((e) => [e.data?.secret, e.data?.version]), [['weather-key', 1], ['local-token', 1], ['weather-key', 2]]);
    for (const value of [first, second, local]) {
      for (const [where, haystack] of [['secrets list --json', listed.stdout], ['secrets list', text.stdout], ['audit export', exported.stdout], ['logs', logs.join('')]] as const) {
        assert.ok(!haystack.includes(value), `a secret value appears in ${where}`);
      }
    }
    assert.ok(logs.length > 0, 'the logs were captured');
  });
});
