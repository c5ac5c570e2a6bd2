/**
 * List filtering on every route: a tools/list (and the other lists) keeps
 * only what the caller could use, whether the upstream answers as JSON, as
 * SSE with a notification first, after notifications/tools/list_changed on
 * the standalone stream, from a stdio server or a stateless one, across
 * pages. A list answer the gateway cannot read is an error, never passed.
 * With no policy set in force, decided requests fail closed and /readyz
 * says why; a scope a policy asks for gets the step-up challenge.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ECHO_TOOL, MODERN_VERSION, result, startFakeUpstream, startRouteUpstreams, type FakeUpstream, type RouteUpstreams, type Message } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { machineToken, registerMachine } from '../helpers/oauth.ts';
import { tempDir } from '../helpers/process.ts';
import { listedNames as names, openSession, parseSse, post, readEventsUntil, responseOf, type RpcMessage } from '../gateway/raw.ts';

const SECRET_TOOL = { name: 'secret', description: 'not for you', inputSchema: { type: 'object' } };

// Without a token (identity.requireToken false) requests are decided as Client::"anonymous".
const POLICIES = `
@id("all") permit (principal, action, resource);
@id("no-secret") forbid (principal, action == Action::"tools/call", resource is Tool) when { resource.name == "secret" };
@id("no-env") forbid (principal, action == Action::"tools/call", resource == Tool::"stdio/get-env");
@id("no-private-prompts") forbid (principal, action == Action::"prompts/get", resource is Prompt) when { resource.name like "private*" };
@id("no-etc") forbid (principal, action == Action::"resources/read", resource is Resource) when { resource.name like "file:///etc/*" };
@id("no-destructive") forbid (principal, action == Action::"tools/call", resource is Tool) when { resource has destructiveHint && resource.destructiveHint };
`;

const WIPE_TOOL = { name: 'wipe', description: 'deletes everything', inputSchema: { type: 'object' }, annotations: { destructiveHint: true } };


describe('list filtering on every route', { timeout: 120_000 }, () => {
  let mandate: InProcessMandate;
  let routes: RouteUpstreams;
  let json: FakeUpstream;
  let hinted: FakeUpstream;

  before(async () => {
    routes = await startRouteUpstreams([ECHO_TOOL, SECRET_TOOL]);
    json = routes.json;
    hinted = await startFakeUpstream({ tools: [ECHO_TOOL, WIPE_TOOL] });
    // Pages: the cursor and the rest of the result pass; each page is filtered.
    json.on('prompts/list', (message: Message) => {
      const cursor = (message.params as { cursor?: string } | undefined)?.cursor;
      return {
        json:
          cursor === undefined
            ? result(message, { prompts: [{ name: 'public-1' }, { name: 'private-1' }], nextCursor: 'page-2' })
            : result(message, { prompts: [{ name: 'private-2' }, { name: 'public-2' }] }),
      };
    });
    json.on('resources/list', (message: Message) => ({ json: result(message, { resources: [{ uri: 'file:///etc/passwd', name: 'passwd' }, { uri: 'file:///srv/a.txt', name: 'a' }] }) }));
    json.on('resources/templates/list', (message: Message) => ({ json: result(message, { resourceTemplates: [{ uriTemplate: 'file:///etc/{name}', name: 'etc' }, { uriTemplate: 'file:///srv/{name}', name: 'srv' }] }) }));
    const dir = tempDir('mandate-list-policies-');
    writeFileSync(path.join(dir, 'main.cedar'), POLICIES);
    mandate = await startInProcess({ servers: [...routes.servers, { name: 'hinted', url: hinted.url }], extra: { policies: dir } });
  });

  after(async () => {
    await mandate?.stop();
    await Promise.all([routes?.close(), hinted?.close()]);
  });

  it('a tool the upstream declares destructive: refused before its list is seen, hidden and refused after', async () => {
    const session = await openSession(mandate.endpoint('hinted'));
    const early = await session.post({ jsonrpc: '2.0', id: 'early', method: 'tools/call', params: { name: 'wipe', arguments: {} } });
    assert.equal(early.status, 403);
    assert.match(((await early.json()) as RpcMessage).error?.message ?? '', /tool list/);
    // The forbid reads a hint of every tool: echo cannot be decided before the list either.
    const echo = await session.post({ jsonrpc: '2.0', id: 'echo-early', method: 'tools/call', params: { name: 'echo', arguments: { text: 'hi' } } });
    assert.equal(echo.status, 403);
    assert.deepEqual(names(await session.call('tools/list')), ['echo']);
    const after = await session.post({ jsonrpc: '2.0', id: 'echo-late', method: 'tools/call', params: { name: 'echo', arguments: { text: 'hi' } } });
    assert.equal(after.status, 200, 'once the list is seen, echo is decided (and allowed)');
    const late = await session.post({ jsonrpc: '2.0', id: 'late', method: 'tools/call', params: { name: 'wipe', arguments: {} } });
    assert.equal(late.status, 403);
    assert.match(((await late.json()) as RpcMessage).error?.message ?? '', /"wipe" is not allowed by policy/);
    assert.equal(hinted.messages('tools/call').filter((m) => (m.params as { name?: string }).name === 'wipe').length, 0, 'wipe never reached the upstream');
    const denied = (await mandate.audit({ types: ['policy.denied'] })).filter((e) => e.tool === 'wipe');
    assert.deepEqual(denied.map((e) => e.data.policies), [['no-destructive'], ['no-destructive']]);
  });

  it('JSON: the forbidden tool is not listed, and calling it by name is denied', async () => {
    const session = await openSession(mandate.endpoint('json'));
    assert.deepEqual(names(await session.call('tools/list')), ['echo']);
    const res = await session.post({ jsonrpc: '2.0', id: 'guess', method: 'tools/call', params: { name: 'secret', arguments: {} } });
    assert.equal(res.status, 403);
    const answer = (await res.json()) as RpcMessage;
    assert.equal(answer.error?.code, -32003);
    assert.equal(json.messages('tools/call').length, 0, 'the denied call never reached the upstream');
    // A call that names no tool is not decided on the server in its place.
    const nameless = await session.post({ jsonrpc: '2.0', id: 'nameless', method: 'tools/call', params: { arguments: {} } });
    assert.equal(nameless.status, 400);
    assert.equal(((await nameless.json()) as RpcMessage).error?.code, -32602);
    assert.equal(json.messages('tools/call').length, 0);
  });

  it('SSE with a notification first: the notification passes, the list is filtered', async () => {
    const session = await openSession(mandate.endpoint('sse'));
    const res = await session.post({ jsonrpc: '2.0', id: 'l1', method: 'tools/list' });
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const messages = parseSse(await res.text()).filter((e) => e.data !== '').map((e) => JSON.parse(e.data) as RpcMessage);
    assert.equal(messages[0]?.method, 'notifications/message');
    const answer = messages.find((m) => m.id === 'l1');
    assert.ok(answer);
    assert.deepEqual(names(answer), ['echo']);
  });

  it('after notifications/tools/list_changed on the standalone stream, the new list is filtered too', async () => {
    const session = await openSession(mandate.endpoint('json'));
    const listening = new AbortController();
    const stream = await fetch(session.url, { headers: { ...session.headers, accept: 'text/event-stream' }, signal: listening.signal });
    assert.equal(stream.status, 200);
    await json.streamOpen();
    try {
      json.tools.push({ name: 'secret-2', description: 'also not for you', inputSchema: { type: 'object' } }, { name: 'fresh', description: 'new', inputSchema: { type: 'object' } });
      json.push({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' });
      await readEventsUntil(stream, (list) => list.some((e) => e.data.includes('list_changed')));
    } finally {
      listening.abort();
    }
    // secret-2 is not named "secret": it is listed; "secret" stays hidden.
    assert.deepEqual(names(await session.call('tools/list')).sort(), ['echo', 'fresh', 'secret-2']);
  });

  it('a stdio server (server-everything): get-env is not listed, the other tools are', async () => {
    const session = await openSession(mandate.endpoint('stdio'));
    const listed = names(await session.call('tools/list'));
    assert.ok(listed.includes('echo') && listed.length > 5, listed.join(', '));
    assert.ok(!listed.includes('get-env'));
    await fetch(session.url, { method: 'DELETE', headers: session.headers });
  });

  it('a stateless (2026-07-28) server: the list is filtered', async () => {
    const res = await post(
      mandate.endpoint('modern'),
      { jsonrpc: '2.0', id: 's1', method: 'tools/list', params: { _meta: { 'io.modelcontextprotocol/protocolVersion': MODERN_VERSION } } },
      { 'mcp-protocol-version': MODERN_VERSION, 'mcp-method': 'tools/list' },
    );
    assert.equal(res.status, 200);
    assert.deepEqual(names(await responseOf(res, 's1')), ['echo']);
  });

  it('prompts across pages, resources and resource templates are filtered; the cursor passes', async () => {
    const session = await openSession(mandate.endpoint('json'));
    const first = await session.call('prompts/list');
    assert.deepEqual(names(first, 'prompts'), ['public-1']);
    assert.equal(first.result?.nextCursor, 'page-2');
    assert.deepEqual(names(await session.call('prompts/list', { cursor: 'page-2' }), 'prompts'), ['public-2']);
    assert.deepEqual(names(await session.call('resources/list'), 'resources', 'uri'), ['file:///srv/a.txt']);
    assert.deepEqual(names(await session.call('resources/templates/list'), 'resourceTemplates', 'uriTemplate'), ['file:///srv/{name}']);
  });

  it('a list answer the gateway cannot read is an error, never the list', async () => {
    const session = await openSession(mandate.endpoint('json'));
    for (const broken of [{ tools: 'not an array' }, { tools: [{ description: 'no name' }, SECRET_TOOL] }, { nothing: [] }]) {
      json.on('tools/list', (message: Message) => ({ json: result(message, broken) }));
      const answer = await session.call('tools/list');
      assert.equal(answer.result, undefined, JSON.stringify(answer));
      assert.equal(answer.error?.code, -32000);
      assert.match(answer.error?.message ?? '', /could not check/);
    }
    json.on('tools/list', (message: Message) => ({ json: result(message, { tools: json.tools }) }));
  });
});

describe('no policy set in force, and the step-up challenge', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;
  let dir: string;

  before(async () => {
    upstream = await startFakeUpstream({ tools: [ECHO_TOOL] });
    dir = tempDir('mandate-broken-policies-');
    writeFileSync(path.join(dir, 'main.cedar'), 'permit (principal, action, resource) when { context.nope };\n');
    mandate = await startInProcess({ servers: [{ name: 'up', url: upstream.url }], identity: { requireToken: true, registration: { mode: 'open' } }, extra: { policies: dir } });
  });

  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  it('a broken set at start: /readyz is 503 and says why; decided requests fail closed', async () => {
    const ready = await fetch(`${mandate.base}/readyz`);
    assert.equal(ready.status, 503);
    const body = (await ready.json()) as { reason: string; detail: string };
    assert.equal(body.reason, 'no policy set is in force');
    assert.match(body.detail, /main\.cedar:1/);
    const token = await machineToken(mandate.base, await registerMachine(mandate.base), 'up');
    const session = await openSession(mandate.endpoint('up'), 'policy-tests', { authorization: `Bearer ${token}` });
    const res = await session.post({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
    assert.equal(res.status, 503);
    assert.match(JSON.stringify(await res.json()), /no policy set is in force/);
    assert.equal(upstream.messages('tools/list').length, 0);
  });

  it('once a valid set is loaded, a scope a policy asks for gets the step-up challenge', async () => {
    writeFileSync(
      path.join(dir, 'main.cedar'),
      '@id("list") permit (principal, action == Action::"tools/list", resource);\n@id("echo-admin") permit (principal, action == Action::"tools/call", resource == Tool::"up/echo") when { context.scopes.contains("mcp:up:admin") };\n',
    );
    const outcome = await mandate.app.reloadPolicies();
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    assert.equal((await fetch(`${mandate.base}/readyz`)).status, 200);
    const token = await machineToken(mandate.base, await registerMachine(mandate.base), 'up');
    const session = await openSession(mandate.endpoint('up'), 'policy-tests', { authorization: `Bearer ${token}` });
    // Lists show what the token may use now: echo needs a scope it lacks.
    assert.deepEqual(names(await session.call('tools/list')), []);
    const res = await session.post({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } });
    assert.equal(res.status, 403);
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /error="insufficient_scope"/);
    assert.match(challenge, /scope="mcp:up:admin"/);
    const denied = await mandate.audit({ types: ['policy.denied'] });
    assert.ok(denied.some((e) => e.data.stepUp === 'mcp:up:admin'), JSON.stringify(denied));
  });

  it('a policy that cannot be evaluated refuses the request (503), and its denial names the policy', async () => {
    writeFileSync(path.join(dir, 'args.cedarschema'), 'type Args = { count?: Long };\n');
    writeFileSync(
      path.join(dir, 'main.cedar'),
      '@id("list") permit (principal, action == Action::"tools/list", resource);\n@id("small") permit (principal, action == Action::"tools/call", resource == Tool::"up/echo") when { context.args has count && context.args.count < 3 };\n',
    );
    assert.equal((await mandate.app.reloadPolicies()).ok, true);
    const token = await machineToken(mandate.base, await registerMachine(mandate.base), 'up');
    const session = await openSession(mandate.endpoint('up'), 'policy-tests', { authorization: `Bearer ${token}` });
    const before = upstream.messages('tools/call').length;
    const ok = await session.post({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'echo', arguments: { count: 2 } } });
    assert.equal(ok.status, 200);
    // A string where the policy compares a number: an evaluation error, never a skipped policy.
    const res = await session.post({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'echo', arguments: { count: 'two' } } });
    assert.equal(res.status, 503);
    const answer = (await res.json()) as RpcMessage;
    assert.equal(answer.error?.code, -32603);
    assert.match(answer.error?.message ?? '', /could not be decided by policy/);
    assert.doesNotMatch(JSON.stringify(answer), /small|count/, 'the answer names no policy and no condition');
    assert.equal(upstream.messages('tools/call').length, before + 1, 'only the decided call reached the upstream');
    const denied = await mandate.audit({ types: ['policy.denied'] });
    const failed = denied.find((e) => e.outcome === 'error' && e.tool === 'echo');
    assert.ok(failed, JSON.stringify(denied));
    assert.deepEqual(failed.data.policies, ['small']);
    assert.match(String(failed.reason), /policy "small" could not be evaluated/);
  });
});
