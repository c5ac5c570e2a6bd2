/**
 * `mandate breakglass` against a running gateway's store (docs/breakglass.md):
 * no grant without a ticket or a reason (exit 2 naming the flag), nor beyond
 * breakglass.maxTtlSeconds, nor by someone without the role admin (exit 1
 * naming the rule); a grant that opens is in the store, in force, recorded as
 * a high-severity `breakglass.opened`, and announced to the webhook (and
 * opens all the same when the webhook refuses the connection, saying so).
 * A review is refused to the opener, taken once by another admin or an
 * auditor; `overdue` lists what is unreviewed; `close` ends a grant.
 * Real parts: the CLI as a process, a node:http webhook receiver.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { freePort } from '../helpers/process.ts';
import { createUsers } from '../helpers/users.ts';

const ROLES = { roles: { admin: ['user:ann', 'user:bea'], auditor: ['user:sam'] } };

interface Received {
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

/** A webhook receiver that keeps what it is sent and answers 204. */
async function startReceiver(): Promise<{ server: Server; url: string; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((request, response) => {
    let text = '';
    request.on('data', (chunk: Buffer) => (text += chunk.toString()));
    request.on('end', () => {
      received.push({ headers: request.headers, body: JSON.parse(text) as Record<string, unknown> });
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/breakglass`, received };
}

describe('mandate breakglass', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  /** The same configuration, with a webhook at a port nothing listens on. */
  let refusingConfig: string;
  const opened: string[] = [];

  before(async () => {
    receiver = await startReceiver();
    mandate = await startInProcess({ servers: [], extra: { admin: ROLES, breakglass: { webhook: receiver.url, reviewDays: 0 } } });
    await createUsers(mandate.store, { ann: [], bea: [], sam: [], joe: [] });
    const config = parse(readFileSync(mandate.configPath, 'utf8')) as { breakglass: { webhook: string } };
    config.breakglass.webhook = `http://127.0.0.1:${await freePort()}/breakglass`;
    refusingConfig = path.join(path.dirname(mandate.configPath), 'refusing.yaml');
    writeFileSync(refusingConfig, stringify(config));
  });
  after(async () => {
    await mandate?.stop();
    receiver?.server.close();
  });

  const cli = (args: string[], config = mandate.configPath) => mandate.cli(['breakglass', ...args, '--config', config]);
  const open = (extra: string[], config?: string) => cli(['open', '--server', 'payments', ...extra], config);
  const openedEvents = () => mandate.audit({ types: ['breakglass.opened'] });

  it('refuses a grant without a ticket or a reason (exit 2 naming the flag), beyond the maximum ttl, or by a non-admin (exit 1 naming the rule)', async () => {
    const [noTicket, noReason, tooLong, notAdmin] = await Promise.all([
      open(['--reason', 'database down', '--as', 'ann']),
      open(['--ticket', 'INC-1', '--as', 'ann']),
      open(['--ticket', 'INC-1', '--reason', 'database down', '--ttl', '5h', '--as', 'ann']),
      open(['--ticket', 'INC-1', '--reason', 'database down', '--as', 'joe']),
    ]);
    assert.equal(noTicket.code, 2, noTicket.stderr);
    assert.match(noTicket.stderr, /--ticket TEXT is required/);
    assert.equal(noReason.code, 2, noReason.stderr);
    assert.match(noReason.stderr, /--reason TEXT is required/);
    assert.equal(tooLong.code, 1, tooLong.stderr);
    assert.match(tooLong.stderr, /at most 14400 seconds \(breakglass\.maxTtlSeconds\)/);
    assert.equal(notAdmin.code, 1, notAdmin.stderr);
    assert.match(notAdmin.stderr, /user "joe" may not open break-glass access: that needs the role admin/);
    assert.deepEqual(await mandate.store.breakglass.list(), [], 'a refused grant was stored');
    assert.deepEqual(await openedEvents(), []);
    assert.equal(receiver.received.length, 0, 'the webhook was told of a refused grant');
  });

  it('opens a grant: stored and in force, a high-severity event, and the webhook told', async () => {
    const out = await open(['--ticket', 'INC-7', '--reason', 'payments database down', '--tool', 'refund', '--ttl', '30m', '--as', 'ann', '--json']);
    assert.equal(out.code, 0, out.stderr);
    const printed = JSON.parse(out.stdout) as { id: string; webhook: string };
    assert.match(printed.id, /^bg-[0-9a-f]{12}$/);
    assert.equal(printed.webhook, 'sent');
    opened.push(printed.id);

    const grant = await mandate.store.breakglass.get(printed.id);
    assert.ok(grant);
    assert.deepEqual([grant.user, grant.openedBy, grant.server, grant.tools, grant.ticket], ['ann', 'ann', 'payments', ['refund'], 'INC-7']);
    assert.equal(grant.expiresAt - grant.openedAt, 30 * 60_000);
    assert.deepEqual((await mandate.store.breakglass.active(Date.now())).map((g) => g.id), [printed.id]);

    const [event] = await openedEvents();
    assert.equal(event?.actor, 'ann');
    assert.equal(event?.server, 'payments');
    assert.deepEqual(event?.data, {
      id: printed.id,
      user: 'ann',
      tools: ['refund'],
      ticket: 'INC-7',
      reason: 'payments database down',
      expiresAt: new Date(grant.expiresAt).toISOString(),
      severity: 'high',
      webhook: 'sent',
    });

    assert.equal(receiver.received.length, 1);
    const notice = receiver.received[0]!;
    assert.match(String(notice.headers['content-type']), /^application\/json/);
    assert.deepEqual(notice.body, {
      type: 'breakglass.opened',
      id: printed.id,
      user: 'ann',
      openedBy: 'ann',
      server: 'payments',
      tools: ['refund'],
      ticket: 'INC-7',
      reason: 'payments database down',
      openedAt: new Date(grant.openedAt).toISOString(),
      expiresAt: new Date(grant.expiresAt).toISOString(),
    });
  });

  it('opens a grant all the same when the webhook refuses the connection, and says so', async () => {
    const out = await open(['--ticket', 'INC-8', '--reason', 'on-call needs refunds', '--for', 'joe', '--as', 'bea', '--json'], refusingConfig);
    assert.equal(out.code, 0, out.stderr);
    const printed = JSON.parse(out.stdout) as { id: string; webhook: string; user: string };
    assert.equal(printed.webhook, 'failed: ECONNREFUSED');
    opened.push(printed.id);
    assert.equal((await mandate.store.breakglass.get(printed.id))?.user, 'joe');
    const event = (await openedEvents()).find((e) => e.data.id === printed.id);
    assert.deepEqual([event?.actor, event?.data.user, event?.data.webhook, event?.data.severity], ['bea', 'joe', 'failed: ECONNREFUSED', 'high']);
  });

  it('a review is refused to the opener, taken once by another admin or an auditor; overdue lists only the unreviewed', async () => {
    const [first, second] = opened as [string, string];
    const overdue = await cli(['overdue', '--json']);
    assert.equal(overdue.code, 0, overdue.stderr);
    assert.deepEqual((JSON.parse(overdue.stdout) as { id: string }[]).map((g) => g.id), [first, second]);

    const byOpener = await cli(['review', first, '--outcome', 'justified', '--reason', 'I fixed it', '--as', 'ann']);
    assert.equal(byOpener.code, 1, byOpener.stderr);
    assert.match(byOpener.stderr, /user "ann" opened break-glass grant bg-[0-9a-f]{12} and may not review it: the two-person rule/);
    assert.equal((await mandate.store.breakglass.get(first))?.reviewedBy, null);

    const byAuditor = await cli(['review', first, '--outcome', 'justified', '--reason', 'outage confirmed in INC-7', '--as', 'sam']);
    assert.equal(byAuditor.code, 0, byAuditor.stderr);
    const reviewed = await mandate.store.breakglass.get(first);
    assert.deepEqual([reviewed?.reviewedBy, reviewed?.outcome, reviewed?.reviewReason], ['sam', 'justified', 'outage confirmed in INC-7']);
    const [event] = await mandate.audit({ types: ['breakglass.reviewed'] });
    assert.deepEqual([event?.actor, event?.data.id, event?.data.outcome, event?.data.openedBy], ['sam', first, 'justified', 'ann']);

    const again = await cli(['review', first, '--outcome', 'unjustified', '--reason', 'second look', '--as', 'bea']);
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /was reviewed already, by sam/);
    assert.equal((await mandate.store.breakglass.get(first))?.outcome, 'justified');

    const stillDue = await cli(['overdue', '--json']);
    assert.deepEqual((JSON.parse(stillDue.stdout) as { id: string }[]).map((g) => g.id), [second]);
    const byOtherAdmin = await cli(['review', second, '--outcome', 'unjustified', '--reason', 'not an emergency', '--as', 'ann']);
    assert.equal(byOtherAdmin.code, 0, byOtherAdmin.stderr);
    const none = await cli(['overdue']);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout.trim(), 'no overdue reviews');
  });

  it('close ends a grant: no longer in force, recorded, and not closed twice', async () => {
    const [first, second] = opened as [string, string];
    const closed = await cli(['close', first, '--reason', 'database back', '--as', 'bea']);
    assert.equal(closed.code, 0, closed.stderr);
    const active = (await mandate.store.breakglass.active(Date.now())).map((g) => g.id);
    assert.ok(!active.includes(first), 'the closed grant is still in force');
    assert.ok(active.includes(second), 'close ended another grant too');
    const [event] = await mandate.audit({ types: ['breakglass.closed'] });
    assert.deepEqual([event?.actor, event?.data.id, event?.data.reason], ['bea', first, 'database back']);
    const again = await cli(['close', first, '--as', 'ann']);
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /was closed already, by bea/);
  });
});
