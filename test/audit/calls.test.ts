/**
 * The call journal in-process: what a crashed run leaves (begun, not done)
 * is what recovery reads back; a torn last line is skipped; a full file is
 * replaced by a new one and removed once its calls are done; an orderly
 * close leaves nothing; with durability power a line is synced before the
 * call goes on (before-forward) or while it runs (while-forwarding), and a
 * file whose sync failed is never trusted again.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { AGE_CHECK_MS, CallJournal, fixedPart, forgetCalls, journaledCalls, recoveredCall } from '../../src/audit/calls.ts';
import { tempDir } from '../helpers/process.ts';
import { makeUnsyncable, makeUnwritable } from '../helpers/unsyncable.ts';

const RUN = '0123456789abcdef';

function journalDir(): string {
  const dir = tempDir('mandate-calls-');
  mkdirSync(path.join(dir, 'runs'));
  return dir;
}

/** The journal writes what a turn gathered at the next one. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

const FIXED = fixedPart('alice', 'files', { method: 'tools/call', policies: ['p1', 'p2'], policySet: 'a'.repeat(64) });
const entry = (tool: string) => ({ fixed: FIXED, tool, session: 'abc123', address: '10.0.0.7' });

describe('the call journal', () => {
  for (const durability of ['process', 'power'] as const) {
    it(`(${durability}) the calls a run journaled are read back with their refs; a torn last line is skipped`, async () => {
      const dir = journalDir();
      const journal = new CallJournal(dir, RUN, durability);
      const answered = await journal.begin(entry('answered'));
      await Promise.all([journal.begin(entry('left-1')), journal.begin(entry('left-2'))]);
      journal.done(answered);
      assert.deepEqual(journal.pending.map((e) => e.tool), ['left-1', 'left-2']);
      assert.equal(journal.ref(answered), `${RUN}.${answered}`);
      // The process dies here (no close); the last write was torn.
      const [file] = readdirSync(path.join(dir, 'runs'));
      appendFileSync(path.join(dir, 'runs', file as string), '{"begin":99,"time":"2026-');
      const { entries, files } = journaledCalls(dir, RUN);
      // Which were answered is for the log to say (recovery reads the calls' mcp.request events).
      assert.deepEqual(entries.map((e) => [e.tool, e.ref]), [['answered', `${RUN}.1`], ['left-1', `${RUN}.2`], ['left-2', `${RUN}.3`]]);
      assert.equal(journaledCalls(dir, 'fedcba9876543210').entries.length, 0, 'another run has no calls here');
      const event = recoveredCall(entries[1] as (typeof entries)[number], RUN);
      assert.equal(event.type, 'policy.allowed');
      assert.equal(event.reason, 'permitted by p1, p2');
      assert.deepEqual([event.data?.recovered, event.data?.run, event.data?.call, typeof event.data?.calledAt], [true, RUN, `${RUN}.2`, 'string']);
      assert.deepEqual([event.actor, event.server, event.tool, event.data?.session, event.data?.address, event.data?.policySet], ['alice', 'files', 'left-1', 'abc123', '10.0.0.7', 'a'.repeat(64)]);
      forgetCalls(files);
      assert.deepEqual(readdirSync(path.join(dir, 'runs')), []);
    });
  }

  it('an orderly close with everything done leaves no file', async () => {
    const dir = journalDir();
    const journal = new CallJournal(dir, RUN, 'power');
    journal.done(await journal.begin(entry('x')));
    await turn();
    await journal.close();
    assert.deepEqual(readdirSync(path.join(dir, 'runs')), []);
  });

  it('a full file is replaced, and removed once every call in it is done', async () => {
    const dir = journalDir();
    const journal = new CallJournal(dir, RUN, 'process');
    const big = { ...entry('big'), fixed: fixedPart('alice', 'files', { method: 'tools/call', policies: ['p'], policySet: 'b'.repeat(64), pad: 'x'.repeat(1024 * 1024 - 4096) }) };
    const first = await journal.begin(big);
    const ids: number[] = [];
    for (let i = 0; i < 17; i += 1) ids.push(await journal.begin(big));
    // Answered calls stay in the current file until it is replaced.
    const together = await Promise.all([journal.begin(entry('a')), journal.begin(entry('b'))]);
    for (const id of together) journal.done(id);
    const names = () => readdirSync(path.join(dir, 'runs')).sort();
    assert.deepEqual(names(), [`${RUN}.0.calls`, `${RUN}.1.calls`]);
    journal.done(first);
    for (const id of ids.slice(0, 16)) journal.done(id);
    await turn();
    assert.deepEqual(names(), [`${RUN}.1.calls`], 'the full file went once all its calls were done');
    assert.deepEqual(journaledCalls(dir, RUN).entries.map((e) => e.tool), ['big', 'a', 'b']);
    journal.done(ids[16] as number);
    await turn();
    await journal.close();
    assert.deepEqual(names(), []);
  });

  it('(power, before-forward) a call can wait for its line to be synced; a line a sync covered needs no wait', async () => {
    const journal = new CallJournal(journalDir(), RUN, 'power', 'before-forward');
    assert.equal(journal.syncsBeforeForward, true);
    const id = journal.begin(entry('x'));
    const waiting = journal.durable(id);
    assert.ok(waiting instanceof Promise, 'a line just written is not synced yet');
    await waiting;
    assert.equal(journal.durable(id), null, 'covered by the sync it waited for');
    journal.done(id);
    await journal.close();
  });

  it('(power, while-forwarding) the sync starts with the line, without anyone waiting for it', async () => {
    const journal = new CallJournal(journalDir(), RUN, 'power');
    assert.equal(journal.syncsBeforeForward, false);
    const first = journal.begin(entry('a'));
    const second = journal.begin(entry('b'));
    const deadline = Date.now() + 5000;
    while (journal.durable(first) !== null || journal.durable(second) !== null) {
      assert.ok(Date.now() < deadline, 'the lines were never synced');
      await turn();
    }
    await journal.close();
  });

  it('(process) nothing is synced and nothing waits, whatever journalSync says', async () => {
    const journal = new CallJournal(journalDir(), RUN, 'process', 'before-forward');
    assert.equal(journal.syncsBeforeForward, false);
    assert.equal(journal.durable(journal.begin(entry('x'))), null);
    await journal.close();
  });

  it('(power) a file whose sync failed refuses its unsynced calls, and the next call starts a new file', async () => {
    const dir = journalDir();
    const journal = new CallJournal(dir, RUN, 'power', 'before-forward');
    const synced = journal.begin(entry('synced'));
    await journal.durable(synced);
    // The journal's descriptor now names a file that cannot be synced, as a failing disk would answer.
    makeUnsyncable(path.join(dir, 'runs', `${RUN}.0.calls`));
    const unsynced = journal.begin(entry('unsynced'));
    await assert.rejects(journal.durable(unsynced) ?? Promise.resolve(), 'a line the failed sync should have covered');
    await assert.rejects(journal.durable(unsynced) ?? Promise.resolve(), 'a later sync of the same file is not trusted');
    assert.equal(journal.durable(synced), null, 'a line synced before the failure stays synced');
    const next = journal.begin(entry('next'));
    await journal.durable(next);
    assert.deepEqual(readdirSync(path.join(dir, 'runs')).sort(), [`${RUN}.0.calls`, `${RUN}.1.calls`]);
    for (const id of [synced, unsynced, next]) journal.done(id);
    await journal.close();
  });

  it('the lines begun in one turn are written together at its end; a call may be forwarded once its line is in the file', async () => {
    const dir = journalDir();
    const journal = new CallJournal(dir, RUN, 'process');
    const a = journal.begin(entry('a'));
    const b = journal.begin(entry('b'));
    const file = path.join(dir, 'runs', `${RUN}.0.calls`);
    assert.equal(readFileSync(file, 'utf8'), '', 'nothing is written within the turn');
    const wait = journal.forwardable(a);
    assert.ok(wait instanceof Promise, 'the call waits for its line');
    assert.equal(journal.forwardable(b), wait, 'one write for the turn');
    await wait;
    assert.deepEqual(journaledCalls(dir, RUN).entries.map((e) => e.tool), ['a', 'b']);
    assert.equal(journal.forwardable(a), null, 'written: nothing to wait for');
    for (const id of [a, b]) journal.done(id);
    await journal.close();
  });

  it('a file that cannot be written refuses the calls of that turn, and the next call starts a new file', async () => {
    const dir = journalDir();
    const journal = new CallJournal(dir, RUN, 'process');
    const first = journal.begin(entry('first'));
    await journal.forwardable(first);
    makeUnwritable(path.join(dir, 'runs', `${RUN}.0.calls`));
    const refused = journal.begin(entry('refused'));
    await assert.rejects(journal.forwardable(refused) ?? Promise.resolve(), 'the line was not written');
    const next = journal.begin(entry('next'));
    await journal.forwardable(next);
    assert.deepEqual(readdirSync(path.join(dir, 'runs')).sort(), [`${RUN}.0.calls`, `${RUN}.1.calls`]);
    assert.deepEqual(journaledCalls(dir, RUN).entries.map((e) => e.tool), ['first', 'next']);
    for (const id of [first, refused, next]) journal.done(id);
    await journal.close();
  });

  it('(power, while-forwarding) calls done before their lines are looked at cost no sync; a call still in flight has its file synced', async (t) => {
    // The look at the lines is a timer: mocked, so that it runs when the test says, not when a loaded machine lets it.
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const dir = journalDir();
    const journal = new CallJournal(dir, RUN, 'power');
    const names = () => readdirSync(path.join(dir, 'runs')).sort();
    const looked = async () => t.mock.timers.tick(AGE_CHECK_MS * 4);
    const first = journal.begin(entry('first'));
    await journal.forwardable(first);
    // From now on a sync of this file fails, and a failure moves the journal to a new file: a sync shows.
    makeUnsyncable(path.join(dir, 'runs', `${RUN}.0.calls`));
    journal.done(first);
    const quick = journal.begin(entry('quick'));
    await journal.forwardable(quick);
    journal.done(quick);
    await looked();
    const after = journal.begin(entry('after'));
    assert.deepEqual(names(), [`${RUN}.0.calls`], 'no sync was needed: the calls were done');
    await journal.forwardable(after);
    await looked();
    // 'after' was in flight when its line was looked at: the file was synced (and that failed).
    await assert.rejects(journal.durable(after) ?? Promise.resolve(), 'the sync of its file was asked for, and failed');
    journal.done(after);
    const next = journal.begin(entry('next'));
    assert.deepEqual(names(), [`${RUN}.1.calls`], 'a new file (the failed one, all its calls done, is gone)');
    journal.done(next);
    await journal.close();
  });
});
