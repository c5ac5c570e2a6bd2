/**
 * Live reconfiguration: `mandate reload` and SIGHUP re-read mandate.yaml
 * while MCP clients stay connected. An added server is routable (and a token
 * `resource`), a removed one answers 404 and its sessions and processes end,
 * a changed one serves new sessions from its new definition and ends the old
 * ones; a broken file changes nothing; settings that need a restart say so.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import { stringify } from 'yaml';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { registerMachine } from '../helpers/oauth.ts';
import { alive, NODE, ROOT, runCli, startMandate, tempDir, waitFor, type Mandate } from '../helpers/process.ts';
import { auditEvents, eventually, initializeMessage, openSession, post, responseOf } from './raw.ts';

const CRASHY = path.join(ROOT, 'test/fixtures/crashy-server.ts');

async function connect(url: string, name: string): Promise<Client> {
  const client = new Client({ name, version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return client;
}

async function echo(client: Client, text: string): Promise<string> {
  const result = await client.callTool({ name: 'echo', arguments: { text } });
  return ((result.content as { text: string }[])[0]?.text ?? '');
}

/** Rewrites the gateway's configuration file with these servers (and extra keys), as an operator would. */
function rewrite(mandate: { base: string; configPath: string }, servers: Record<string, unknown>[], extra: Record<string, unknown> = {}): void {
  writeFileSync(mandate.configPath, stringify({ issuer: mandate.base, servers, identity: { requireToken: false }, log: { level: 'warn' }, ...extra }));
}

describe('mandate reload with the SDK client connected', { timeout: 120_000 }, () => {
  let mandate: Mandate;
  let first: FakeUpstream;
  let second: FakeUpstream;
  const dir = tempDir('mandate-reload-');
  const startsFile = path.join(dir, 'starts.txt');
  const clients: Client[] = [];
  let alpha: Record<string, unknown>;
  let local: Record<string, unknown>;

  before(async () => {
    writeFileSync(startsFile, '');
    [first, second] = await Promise.all([startFakeUpstream(), startFakeUpstream()]);
    alpha = { name: 'alpha', url: first.url };
    local = { name: 'local', command: NODE, args: [CRASHY], env: { STARTS_FILE: startsFile } };
    mandate = await startMandate({ servers: [alpha] });
  });
  after(async () => {
    await Promise.all(clients.map((client) => client.close().catch(() => undefined)));
    await mandate?.cleanup();
    await Promise.all([first?.close(), second?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  const reload = () => mandate.cli(['reload']);

  it('an added server is routable at once; the connected client keeps its session', async () => {
    const onAlpha = await connect(mandate.endpoint('alpha'), 'alpha-client');
    clients.push(onAlpha);
    assert.equal(await echo(onAlpha, 'before'), 'echo: before');
    assert.equal((await post(mandate.endpoint('local'), initializeMessage('x'))).status, 404);

    rewrite(mandate, [alpha, local]);
    const out = await reload();
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /servers added: local/);

    const onLocal = await connect(mandate.endpoint('local'), 'local-client');
    clients.push(onLocal);
    assert.match(await echo(onLocal, 'new server'), /^echo: new server \(pid \d+\)$/);
    assert.equal(await echo(onAlpha, 'after'), 'echo: after', 'the unchanged server kept its session');
    const loaded = (await auditEvents(mandate.cli, ['--type', 'config.loaded'])).at(-1);
    assert.equal(loaded?.data.sha256, createHash('sha256').update(readFileSync(mandate.configPath)).digest('hex'));
    assert.deepEqual((loaded?.data.changes as { servers: unknown }).servers, { added: ['local'], removed: [], changed: [] });
  });

  it('a broken file is refused with its path, field and message, and changes nothing', async () => {
    const before = readFileSync(mandate.configPath, 'utf8');
    rewrite(mandate, [alpha, { name: 'Bad Name!', url: second.url }]);
    const out = await reload();
    assert.equal(out.code, 1);
    assert.ok(out.stderr.includes(mandate.configPath), out.stderr);
    assert.match(out.stderr, /servers\[1\]\.name: must be lowercase letters/);
    writeFileSync(mandate.configPath, 'servers: [\n');
    const yaml = await reload();
    assert.equal(yaml.code, 1);
    assert.match(yaml.stderr, /not valid YAML/);
    // Both servers still serve; nothing was added.
    const onLocal = await connect(mandate.endpoint('local'), 'still-local');
    clients.push(onLocal);
    assert.match(await echo(onLocal, 'unchanged'), /^echo: unchanged/);
    const rejected = await auditEvents(mandate.cli, ['--type', 'config.rejected']);
    assert.equal(rejected.length, 2);
    assert.equal(rejected[0]?.data.source, mandate.configPath);
    writeFileSync(mandate.configPath, before);
  });

  it('a changed server serves new sessions from its new definition and ends the old ones', async () => {
    const old = await connect(mandate.endpoint('alpha'), 'old-alpha');
    clients.push(old);
    assert.equal(await echo(old, 'one'), 'echo: one');
    const seenBySecond = second.requests.length;
    rewrite(mandate, [{ name: 'alpha', url: second.url }, local]);
    const out = await reload();
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /servers changed: alpha/);
    await assert.rejects(echo(old, 'two'), 'the old session ended');
    const fresh = await connect(mandate.endpoint('alpha'), 'new-alpha');
    clients.push(fresh);
    assert.equal(await echo(fresh, 'three'), 'echo: three');
    assert.ok(second.messages('tools/call').length >= 1 && second.requests.length > seenBySecond, 'the new definition (the second upstream) served the new session');
    const closed = await eventually(() => auditEvents(mandate.cli, ['--type', 'session.closed']), (list) => list.some((e) => e.server === 'alpha' && e.reason === 'server changed'), 'session.closed for the changed server');
    assert.ok(closed.length > 0);
  });

  it('a removed server answers 404, and its sessions end and its processes stop', async () => {
    const pids = readFileSync(startsFile, 'utf8').trim().split('\n').map(Number).filter((pid) => pid > 0);
    assert.ok(pids.some(alive), 'a local process runs');
    rewrite(mandate, [{ name: 'alpha', url: second.url }]);
    const out = await reload();
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /servers removed: local/);
    assert.equal((await post(mandate.endpoint('local'), initializeMessage('gone'))).status, 404);
    await waitFor(async () => !pids.some(alive), 'the removed server\'s processes to stop', 10_000);
  });

  it('SIGHUP reloads too; a setting that needs a restart is reported, not silently ignored', async () => {
    rewrite(mandate, [{ name: 'alpha', url: second.url }, { name: 'beta', url: first.url }], { identity: { requireToken: false, accessTokenTtl: 120 }, gateway: { maxBodyBytes: 4096 } });
    mandate.child.kill('SIGHUP');
    await waitFor(async () => (await post(mandate.endpoint('beta'), initializeMessage('b'))).status === 200, 'beta after SIGHUP', 10_000);
    assert.equal(mandate.child.exitCode, null, 'SIGHUP did not stop the gateway');
    const loaded = (await auditEvents(mandate.cli, ['--type', 'config.loaded'])).at(-1);
    const changes = loaded?.data.changes as { restartRequired: string[]; applied: string[] };
    assert.deepEqual(changes.restartRequired, ['identity.accessTokenTtl']);
    assert.deepEqual(changes.applied, ['gateway.maxBodyBytes']);
    const big = await post(mandate.endpoint('beta'), { jsonrpc: '2.0', id: 1, method: 'ping', params: { pad: 'x'.repeat(5000) } });
    assert.equal(big.status, 413, 'the new body limit is in force');
    const again = await reload();
    assert.equal(again.code, 0);
    assert.match(again.stdout, /need a restart to take effect.*identity\.accessTokenTtl/);
  });

  it('mandate reload for a data directory no gateway serves says so and exits 1', async () => {
    const empty = tempDir('mandate-reload-none-');
    try {
      const out = await runCli(['reload', '--data', empty]);
      assert.equal(out.code, 1);
      assert.match(out.stderr, /no gateway is serving/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe('reload in-process: tokens and consent follow the registry', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;

  before(async () => {
    upstream = await startFakeUpstream();
    mandate = await startInProcess({ servers: [{ name: 'alpha', url: upstream.url }], identity: { registration: { mode: 'open' } } });
  });
  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  async function tokenAnswer(client: { id: string; secret: string }, server: string): Promise<Response> {
    return fetch(`${mandate.base}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: mandate.endpoint(server) }),
    });
  }

  it('an added server is accepted as a token resource and listed in discovery; a removed one is not', async () => {
    const client = await registerMachine(mandate.base, 'reloader');
    assert.equal((await tokenAnswer(client, 'beta')).status, 400, 'beta is not a server yet');

    writeFileSync(mandate.configPath, stringify({ issuer: mandate.base, servers: [{ name: 'beta', url: upstream.url }], identity: { registration: { mode: 'open' } }, log: { level: 'warn' } }));
    const outcome = await mandate.app.reload();
    assert.equal(outcome.ok, true, JSON.stringify(outcome));

    const issued = await tokenAnswer(client, 'beta');
    assert.equal(issued.status, 200, await issued.clone().text());
    const { access_token: token } = (await issued.json()) as { access_token: string };
    const res = await post(mandate.endpoint('beta'), initializeMessage('i'), { authorization: `Bearer ${token}` });
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const refused = await tokenAnswer(client, 'alpha');
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: string }).error, 'invalid_target');
    const metadata = (await (await fetch(`${mandate.base}/.well-known/oauth-authorization-server`)).json()) as { scopes_supported: string[] };
    assert.ok(metadata.scopes_supported.includes('mcp:beta') && !metadata.scopes_supported.includes('mcp:alpha'), metadata.scopes_supported.join(' '));
    assert.equal((await fetch(`${mandate.base}/.well-known/oauth-protected-resource/mcp/beta`)).status, 200);
    assert.equal((await fetch(`${mandate.base}/.well-known/oauth-protected-resource/mcp/alpha`)).status, 404);
  });
});

describe('reload in-process: a request in flight on a removed server', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;

  before(async () => {
    upstream = await startFakeUpstream();
    upstream.onTool('slow', () => ({ hang: true }));
    mandate = await startInProcess({ servers: [{ name: 'alpha', url: upstream.url }, { name: 'beta', url: upstream.url }] });
  });
  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  it('is answered with an error saying the gateway ended its session and why, not left without an answer', async () => {
    const session = await openSession(mandate.endpoint('alpha'));
    const pending = session.post({ jsonrpc: '2.0', id: 'in-flight', method: 'tools/call', params: { name: 'slow', arguments: {} } });
    await eventually(async () => upstream.messages('tools/call'), (list) => list.some((m) => m.params?.name === 'slow'), 'the call to reach the upstream');

    writeFileSync(mandate.configPath, stringify({ issuer: mandate.base, servers: [{ name: 'beta', url: upstream.url }], identity: { requireToken: false }, log: { level: 'warn' } }));
    const outcome = await mandate.app.reload();
    assert.equal(outcome.ok, true, JSON.stringify(outcome));

    const res = await pending;
    assert.equal(res.status, 200);
    const answer = await responseOf(res, 'in-flight');
    assert.equal(answer.error?.code, -32001, JSON.stringify(answer));
    assert.match(answer.error?.message ?? '', /^the session ended at the gateway \(server removed\) before this request was answered: initialize a new session$/);
    const recorded = await eventually(() => mandate.audit({ types: ['mcp.request'] }), (list) => list.some((e) => e.server === 'alpha' && e.tool === 'slow'), 'mcp.request for the call');
    const call = recorded.find((e) => e.server === 'alpha' && e.tool === 'slow');
    assert.equal(call?.outcome, 'error');
    assert.equal(call?.reason, 'session_not_found');
  });
});
