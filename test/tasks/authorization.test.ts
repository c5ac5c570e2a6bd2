/**
 * Opening a task from an authorization request (docs/tasks.md "Opening a
 * task from an authorization request"): an agent asks with a `mandate:task`
 * authorization detail (RFC 9396); the consent page says "for this task:";
 * Allow opens the task for the user and client, and the code's access token
 * carries the `task` claim, holds only the task's tools' scopes, ends no
 * later than the task, and stops working at the gateway once the task is
 * closed. A malformed detail is invalid_authorization_details. Real parts:
 * Mandate in process, a fake upstream, the MCP SDK client.
 */
import { callWithToken } from '../helpers/mcp-call.ts';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hashPassword } from '../../src/identity/users.ts';
import { eventually } from '../gateway/raw.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { authorize, authorizeUrl, CookieJar, jwtClaims, loginAndConsent, pageAfter, parseForm, pkcePair, postForm, REDIRECT_URI, register, token, type Params } from '../helpers/oauth.ts';

const PASSWORD = 'correct horse battery staple';
const TOOL = (name: string) => ({ name, description: name, inputSchema: { type: 'object' } });
const PURPOSE = 'incident 77: restart the cache';

describe('opening a task from an authorization request', { timeout: 120_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  let clientId = '';

  before(async () => {
    upstream = await startFakeUpstream({ tools: [TOOL('echo'), TOOL('add')] });
    gateway = await startInProcess({
      servers: ['a', 'b'].map((name) => ({ name, url: upstream.url })),
      identity: { requireToken: true, registration: { mode: 'open' } },
    });
    const now = Date.now();
    await gateway.store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
    const client = await register(gateway.base, { client_name: 'task-agent', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
    assert.equal(client.status, 201, JSON.stringify(client.body));
    clientId = String(client.body.client_id);
  });
  after(async () => {
    await gateway?.stop();
    await upstream?.close();
  });

  const params = (details: unknown, extra: Params = {}): { params: Params; verifier: string } => {
    const { verifier, challenge } = pkcePair();
    return {
      verifier,
      params: {
        client_id: clientId,
        response_type: 'code',
        redirect_uri: REDIRECT_URI,
        resource: gateway.endpoint('a'),
        scope: 'mcp:a',
        code_challenge: challenge,
        code_challenge_method: 'S256',
        state: 'st',
        authorization_details: typeof details === 'string' ? details : JSON.stringify(details),
        ...extra,
      },
    };
  };

  const call = (accessToken: string, tool: string): Promise<string> => callWithToken(gateway.endpoint('a'), accessToken, tool);


  /** The client's redirect for an authorization request refused before any page. */
  async function refused(details: unknown, extra: Params = {}): Promise<URL> {
    const response = await authorize(gateway.base, params(details, extra).params);
    const where = response.headers.get('location');
    assert.ok(where !== null, `expected a redirect, got ${response.status}: ${(await response.text()).slice(0, 300)}`);
    return new URL(where, gateway.base);
  }

  it('shows the task on the consent page; Allow opens it and binds the token to it', async () => {
    // Shorter than the configured access token lifetime (600 s): the token must end with the task, not after it.
    const detail = { type: 'mandate:task', purpose: PURPOSE, ticket: 'INC-77', tools: ['echo'], ttl: 300 };
    const { params: request, verifier } = params([detail]);
    const start = authorizeUrl(gateway.base, request);

    // The consent page, as a browser gets it: sign in, then read the page.
    const jar = new CookieJar();
    const login = await pageAfter(gateway.base, jar, await authorize(gateway.base, request, jar), start);
    const form = parseForm(login.html);
    const posted = await postForm(new URL(form.action, login.url).href, { ...form.hidden, username: 'alice', password: PASSWORD }, jar);
    const consent = await pageAfter(gateway.base, jar, posted, new URL(form.action, login.url).href);
    assert.match(consent.html, /for this task: incident 77: restart the cache/);
    assert.match(consent.html, /INC-77/);
    assert.match(consent.html, /echo/);
    assert.match(consent.html, /5 minutes/);

    const before = Date.now();
    const { code } = await loginAndConsent(gateway.base, start, 'alice', PASSWORD, jar);
    const answer = await token(gateway.base, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: clientId, resource: gateway.endpoint('a') });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.refresh_token, undefined, 'a task-bound grant gets no refresh token');
    const accessToken = String(answer.body.access_token);
    const claims = jwtClaims(accessToken);
    const claim = claims.task as { id: string; purpose: string; ticket?: string; tools: string[] };
    assert.match(claim.id, /^tk-[0-9a-f]{12}$/);
    assert.deepEqual(claim, { id: claim.id, purpose: PURPOSE, ticket: 'INC-77', tools: ['echo'] });
    assert.equal(claims.scope, 'mcp:a:tool:echo');
    assert.equal((answer.body.authorization_details as Array<{ task_id?: string }>)[0]?.task_id, claim.id, 'the token response names the task');

    const task = await gateway.store.tasks.get(claim.id);
    assert.ok(task);
    assert.equal(task.status, 'open');
    assert.equal(task.user, 'alice');
    assert.equal(task.clientId, clientId);
    assert.equal(task.server, 'a');
    assert.deepEqual(task.tools, ['echo']);
    assert.ok(task.expiresAt >= before + 300_000 - 1000 && task.expiresAt <= Date.now() + 300_000, String(task.expiresAt));
    assert.ok((claims.exp as number) * 1000 <= task.expiresAt, `exp ${String(claims.exp)} after the task's expiry ${task.expiresAt}`);
    assert.ok((claims.exp as number) * 1000 > task.expiresAt - 5000, `exp ${String(claims.exp)} not the task's expiry ${task.expiresAt}`);
    assert.equal(answer.body.expires_in, (claims.exp as number) - (claims.iat as number));
    const opened = (await gateway.audit({ types: ['task.opened'] })).find((entry) => entry.data?.id === claim.id);
    assert.ok(opened, 'task.opened recorded');

    // The token works for the task's tool, not another; closing the task ends it within a few seconds.
    assert.equal(await call(accessToken, 'echo'), 'echo: x');
    assert.match(await call(accessToken, 'add'), /refused/);
    assert.equal(await gateway.store.tasks.end(claim.id, 'closed', 'alice', Date.now()), true);
    await eventually(() => call(accessToken, 'echo'), (outcome) => outcome.startsWith('refused'), "the gateway to refuse the closed task's token", 5000);
  });

  it('asks every time: remembered consent does not skip the page for a task', async () => {
    // alice allowed mcp:a for this client without a task.
    const plain = params(undefined, { authorization_details: undefined });
    const jar = new CookieJar();
    const first = await loginAndConsent(gateway.base, authorizeUrl(gateway.base, plain.params), 'alice', PASSWORD, jar);
    assert.ok(first.code);
    const again = await loginAndConsent(gateway.base, authorizeUrl(gateway.base, params(undefined, { authorization_details: undefined }).params), 'alice', PASSWORD, jar);
    assert.ok(again.code, 'remembered: no page');
    const { params: request } = params([{ type: 'mandate:task', purpose: 'another task' }]);
    const start = authorizeUrl(gateway.base, request);
    const page = await pageAfter(gateway.base, jar, await authorize(gateway.base, request, jar), start);
    assert.match(page.html, /for this task: another task/);
  });

  it('a code of a task closed before it is redeemed gets no token; discovery lists mandate:task', async () => {
    const { params: request, verifier } = params([{ type: 'mandate:task', purpose: 'closed early' }]);
    const { code } = await loginAndConsent(gateway.base, authorizeUrl(gateway.base, request), 'alice', PASSWORD);
    const open = (await gateway.store.tasks.list({ user: 'alice', status: 'open' })).find((task) => task.purpose === 'closed early');
    assert.ok(open);
    assert.deepEqual(open.tools, []);
    assert.equal(await gateway.store.tasks.end(open.id, 'closed', 'alice', Date.now()), true);
    const answer = await token(gateway.base, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: clientId, resource: gateway.endpoint('a') });
    assert.equal(answer.body.error, 'invalid_grant', JSON.stringify(answer.body));
    assert.equal(answer.body.access_token, undefined);
    const discovery = (await (await fetch(`${gateway.base}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.deepEqual(discovery.authorization_details_types_supported, ['mandate:task']);
  });

  it('refuses a malformed or misplaced task detail with invalid_authorization_details', async () => {
    const cases: Array<[unknown, Params?]> = [
      [[{ type: 'mandate:task' }]],
      [[{ type: 'mandate:task', purpose: '' }]],
      [[{ type: 'mandate:task', purpose: 'x'.repeat(1001) }]],
      [[{ type: 'mandate:task', purpose: 'ok', ticket: 'y'.repeat(201) }]],
      [[{ type: 'mandate:task', purpose: 'ok', tools: ['bad tool!'] }]],
      [[{ type: 'mandate:task', purpose: 'ok', ttl: 10_000_000 }]],
      [[{ type: 'mandate:task', purpose: 'ok', extra: 1 }]],
      [[{ type: 'mandate:task', purpose: 'one' }, { type: 'mandate:task', purpose: 'two' }]],
      [[{ type: 'mandate:task', purpose: 'two servers' }], { resource: [gateway.endpoint('a'), gateway.endpoint('b')], scope: 'mcp:a mcp:b' }],
      [[{ type: 'mandate:task', purpose: 'a tool outside the scope', tools: ['add'] }], { scope: 'mcp:a:tool:echo' }],
      [[{ type: 'other', purpose: 'x' }]],
      ['not json'],
    ];
    for (const [details, extra] of cases) {
      const url = await refused(details, extra);
      assert.equal(url.searchParams.get('error'), 'invalid_authorization_details', `${JSON.stringify(details)}: ${url.href}`);
    }
  });
});
