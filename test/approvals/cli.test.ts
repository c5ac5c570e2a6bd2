/**
 * `mandate approvals` against a running gateway's store (docs/approvals.md).
 * Requests are put straight into `store.approvals`, as the gateway does when
 * a permit's @approval holds a call. A member of the request's group other
 * than its requester approves it once (a second decision is refused naming
 * `decided`), recorded as `approval.approved` without the arguments; the
 * requester is refused (`self-approval`), a non-member too (naming the
 * group), and an expired request (`expired`), each exit 1 and changing
 * nothing; `deny` records `approval.denied`; `list --status pending` shows
 * only pending requests that have not expired; a missing --reason exits 2.
 * Real parts: the CLI as a process, the in-process gateway's store.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { ARGS_KEPT_MS, Approvals } from '../../src/approvals/service.ts';
import { AuditLog } from '../../src/audit/log.ts';
import { NOT_DECIDED, type ApprovalRecord } from '../../src/store/approvals.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { createUsers } from '../helpers/users.ts';

const MINUTE = 60_000;
const ARGS = '{"amount":120,"memo":"secret-memo-7f3a","order":"A-17"}';
const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** A request by ann for payments/refund, decidable by the group finance, open `ttl` from `requestedAt`. */
function request(extra: Partial<ApprovalRecord> = {}, requestedAt = Date.now(), ttl = 15 * MINUTE): ApprovalRecord {
  return {
    id: `ap-${randomBytes(6).toString('hex')}`,
    binding: sha256(`binding ${Math.random()}`),
    requester: 'ann',
    clientId: 'client-1',
    server: 'payments',
    tool: 'refund',
    argsHash: sha256(ARGS),
    args: ARGS,
    groups: ['finance'],
    policies: ['refunds-need-approval'],
    policySet: sha256('policy set'),
    pin: sha256('pin'),
    requestedAt,
    expiresAt: requestedAt + ttl,
    ...NOT_DECIDED,
    ...extra,
  };
}

describe('mandate approvals', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;

  before(async () => {
    mandate = await startInProcess({ servers: [] });
    // ann asks; bea and cid decide (ann is in finance too: that does not let her approve her own call); joe is in no such group.
    await createUsers(mandate.store, { ann: ['finance'], bea: ['finance'], cid: ['ops', 'finance'], joe: ['sales'] });
    await mandate.store.identity.createUser({ name: 'dee', passwordHash: null, groups: ['finance'], disabled: true, createdAt: 0, updatedAt: 0 });
  });
  after(async () => {
    await mandate?.stop();
  });

  const cli = (args: string[]) => mandate.cli(['approvals', ...args, '--config', mandate.configPath]);
  const created = async (extra?: Partial<ApprovalRecord>, requestedAt?: number, ttl?: number): Promise<ApprovalRecord> => {
    const record = request(extra, requestedAt, ttl);
    await mandate.store.approvals.create(record);
    return record;
  };
  const events = () => mandate.audit({ types: ['approval.approved', 'approval.denied'] });

  it('a member of the group approves once: stored, recorded without the arguments; a second decision is refused naming decided', async () => {
    const pending = await created();
    const out = await cli(['approve', pending.id, '--reason', 'refund matches ticket FIN-9', '--as', 'bea', '--json']);
    assert.equal(out.code, 0, out.stderr);
    const printed = JSON.parse(out.stdout) as { id: string; status: string; decidedBy: string };
    assert.deepEqual([printed.id, printed.status, printed.decidedBy], [pending.id, 'approved', 'bea']);

    const stored = await mandate.store.approvals.get(pending.id);
    assert.ok(stored);
    assert.deepEqual([stored.status, stored.decidedBy, stored.reason, stored.usedAt], ['approved', 'bea', 'refund matches ticket FIN-9', null]);
    assert.ok(stored.decidedAt !== null && stored.decidedAt <= Date.now() && stored.decidedAt >= pending.requestedAt);

    const recorded = await events();
    assert.equal(recorded.length, 1);
    const [event] = recorded;
    assert.deepEqual([event?.type, event?.actor, event?.server, event?.tool, event?.outcome], ['approval.approved', 'bea', 'payments', 'refund', 'success']);
    assert.deepEqual(event?.data, {
      id: pending.id,
      requester: 'ann',
      clientId: 'client-1',
      argsHash: sha256(ARGS),
      policies: ['refunds-need-approval'],
      policySet: sha256('policy set'),
      reason: 'refund matches ticket FIN-9',
    });
    assert.doesNotMatch(JSON.stringify(recorded), /secret-memo-7f3a/, 'the arguments reached the audit log');

    const again = await cli(['deny', pending.id, '--reason', 'second thoughts', '--as', 'cid']);
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /approval request ap-[0-9a-f]{12} is decided already: approved by bea/);
    const twice = await cli(['approve', pending.id, '--reason', 'me too', '--as', 'cid']);
    assert.equal(twice.code, 1, twice.stderr);
    assert.match(twice.stderr, /is decided already: approved by bea/);
    assert.equal((await mandate.store.approvals.get(pending.id))?.decidedBy, 'bea', 'a second decision changed the request');
    assert.equal((await events()).length, 1, 'a refused decision was recorded');

    // Used by the gateway's retried call, it can no longer be decided either.
    assert.equal(await mandate.store.approvals.consume(pending.id, Date.now()), true);
    const afterUse = await cli(['approve', pending.id, '--reason', 'again', '--as', 'cid']);
    assert.equal(afterUse.code, 1, afterUse.stderr);
    assert.match(afterUse.stderr, /is decided already: approved by bea at \S+, and used at /);
  });

  it('refuses the requester (self-approval), a non-member (naming the group) and an expired request (expired), an unknown or disabled decider (user): exit 1, nothing changed or recorded', async () => {
    const pending = await created();
    const expired = await created({}, Date.now() - 20 * MINUTE, 15 * MINUTE);
    const before = (await events()).length;
    const [bySelf, byOutsider, byStranger, byDisabled, late] = await Promise.all([
      cli(['approve', pending.id, '--reason', 'I need it', '--as', 'ann']),
      cli(['approve', pending.id, '--reason', 'looks fine', '--as', 'joe']),
      cli(['approve', pending.id, '--reason', 'looks fine', '--as', 'nobody']),
      cli(['approve', pending.id, '--reason', 'looks fine', '--as', 'dee']),
      cli(['approve', expired.id, '--reason', 'sorry, late', '--as', 'bea']),
    ]);
    assert.equal(bySelf.code, 1, bySelf.stderr);
    assert.match(bySelf.stderr, /user "ann" requested approval request ap-[0-9a-f]{12} and may not decide it \(self-approval\)/);
    assert.equal(byOutsider.code, 1, byOutsider.stderr);
    assert.match(byOutsider.stderr, /user "joe" may not decide approval request ap-[0-9a-f]{12}: that needs membership of the group finance/);
    assert.equal(byStranger.code, 1, byStranger.stderr);
    assert.match(byStranger.stderr, /no Mandate user "nobody"/);
    assert.equal(byDisabled.code, 1, byDisabled.stderr);
    assert.match(byDisabled.stderr, /user "dee" is disabled/);
    assert.equal(late.code, 1, late.stderr);
    assert.match(late.stderr, /approval request ap-[0-9a-f]{12} expired at \S+ undecided/);

    assert.deepEqual(await mandate.store.approvals.get(pending.id), pending, 'a refused decision changed the request');
    assert.deepEqual(await mandate.store.approvals.get(expired.id), expired, 'the expired request changed');
    assert.equal((await events()).length, before, 'a refused decision was recorded');

    const unknown = await cli(['approve', 'ap-ffffffffffff', '--reason', 'x', '--as', 'bea']);
    assert.equal(unknown.code, 1, unknown.stderr);
    assert.match(unknown.stderr, /unknown approval request "ap-ffffffffffff"/);
  });

  it('deny: stored and recorded as approval.denied with the reason', async () => {
    const pending = await created({ tool: 'charge', policies: ['charges-need-approval', 'big-amounts'] });
    const out = await cli(['deny', pending.id, '--reason', 'no ticket for this charge', '--as', 'cid']);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, new RegExp(`^denied ${pending.id} \\(ann's call of payments/charge\\)`));
    const stored = await mandate.store.approvals.get(pending.id);
    assert.deepEqual([stored?.status, stored?.decidedBy, stored?.reason], ['denied', 'cid', 'no ticket for this charge']);
    assert.equal(await mandate.store.approvals.consume(pending.id, Date.now()), false, 'a denied request can be used');
    const denied = await mandate.audit({ types: ['approval.denied'] });
    assert.equal(denied.length, 1);
    assert.deepEqual([denied[0]?.actor, denied[0]?.tool, denied[0]?.data.id, denied[0]?.data.reason, denied[0]?.data.policies], [
      'cid',
      'charge',
      pending.id,
      'no ticket for this charge',
      ['charges-need-approval', 'big-amounts'],
    ]);
    assert.equal('args' in (denied[0]?.data ?? {}), false);
  });

  it('list --status pending shows only the pending requests that have not expired, with their arguments in --json', async () => {
    const open = await created({ requester: 'bea', tool: 'payout' });
    const all = await mandate.store.approvals.list();
    const out = await cli(['list', '--status', 'pending', '--json']);
    assert.equal(out.code, 0, out.stderr);
    const listed = JSON.parse(out.stdout) as { id: string; status: string; args: string; expiresAt: string; expired: boolean }[];
    const now = Date.now();
    const expected = all.filter((r) => r.status === 'pending' && r.expiresAt > now).map((r) => r.id);
    assert.ok(expected.length >= 2, 'the test needs pending requests to list');
    assert.ok(all.some((r) => r.status === 'pending' && r.expiresAt <= now), 'the test needs an expired pending request');
    assert.ok(all.some((r) => r.status !== 'pending'), 'the test needs decided requests');
    assert.deepEqual(listed.map((r) => r.id), expected);
    assert.equal(listed[0]?.id, open.id, 'not newest first');
    assert.ok(listed.every((r) => r.status === 'pending' && !r.expired));
    assert.equal(listed[0]?.args, ARGS);
    assert.equal(listed[0]?.expiresAt, new Date(open.expiresAt).toISOString());

    const text = await cli(['list', '--status', 'pending']);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trim().split('\n');
    assert.match(lines[0] ?? '', /^ID\s+REQUESTER\s+SERVER\/TOOL\s+STATUS\s+REQUESTED\s+EXPIRES\s+GROUPS$/);
    assert.equal(lines.length, 1 + expected.length);
    assert.match(lines[1] ?? '', new RegExp(`^${open.id}\\s+bea\\s+payments/payout\\s+pending\\s+\\S+Z\\s+\\S+Z\\s+finance$`));

    const everything = await cli(['list', '--json']);
    assert.deepEqual((JSON.parse(everything.stdout) as { id: string }[]).map((r) => r.id), all.map((r) => r.id));
    const bad = await cli(['list', '--status', 'open']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--status takes pending, approved, denied, used/);
  });

  it('a request\'s arguments are kept a day after it ended, then forgotten (their hash stays); an open one keeps them', async () => {
    const now = Date.now();
    const ended = await created({}, now - ARGS_KEPT_MS - 20 * MINUTE, 15 * MINUTE);
    const recent = await created({}, now - ARGS_KEPT_MS + 10 * MINUTE, 15 * MINUTE);
    const open = await created({}, now - 20 * MINUTE, ARGS_KEPT_MS * 2);
    const service = new Approvals({ store: mandate.store, audit: new AuditLog(mandate.store), now: () => now });
    assert.ok((await service.forgetArguments()) >= 1);
    const after = await Promise.all([ended, recent, open].map((r) => mandate.store.approvals.get(r.id)));
    assert.deepEqual(after.map((r) => r?.args), ['', ARGS, ARGS]);
    assert.equal(after[0]?.argsHash, sha256(ARGS));
  });

  it('a missing --reason (or --as) exits 2 naming it, and decides nothing', async () => {
    const pending = await created();
    const [noReason, emptyReason, noActor] = await Promise.all([
      cli(['approve', pending.id, '--as', 'bea']),
      cli(['deny', pending.id, '--reason', '  ', '--as', 'bea']),
      cli(['approve', pending.id, '--reason', 'fine']),
    ]);
    for (const out of [noReason, emptyReason]) {
      assert.equal(out.code, 2, out.stderr);
      assert.match(out.stderr, /--reason TEXT is required/);
    }
    assert.equal(noActor.code, 2, noActor.stderr);
    assert.match(noActor.stderr, /--as USER is required/);
    assert.equal((await mandate.store.approvals.get(pending.id))?.status, 'pending');
  });
});
