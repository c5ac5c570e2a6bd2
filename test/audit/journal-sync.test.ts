/**
 * `audit.journalSync` on the wire (durability power, Mandate in-process, a
 * fake upstream): when the call journal's file can no longer be synced (its
 * descriptor swapped for one whose fdatasync fails, as a failing disk
 * answers), `before-forward` refuses the call before the upstream sees it,
 * and `while-forwarding` forwards it, syncs the file while the call is
 * still in flight (and fails), and answers it (the answer still waits for
 * its durable `mcp.request`). Either way a later call goes to a new
 * journal file and works.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startFakeUpstream, textResult, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { tempDir } from '../helpers/process.ts';
import { makeUnsyncable } from '../helpers/unsyncable.ts';
import { auditEvents, openSession, toolText, type RawSession } from '../gateway/raw.ts';

for (const journalSync of ['before-forward', 'while-forwarding'] as const) {
  describe(`audit.journalSync: ${journalSync}, when the journal cannot be synced`, { timeout: 60_000 }, () => {
    let upstream: FakeUpstream;
    let mandate: InProcessMandate;
    let session: RawSession;
    const calls = () => upstream.messages('tools/call').map((m) => (m.params?.arguments as { text?: string } | undefined)?.text);
    const journals = () => readdirSync(path.join(mandate.dataDir, 'runs')).filter((name) => name.endsWith('.calls')).sort();

    before(async () => {
      upstream = await startFakeUpstream();
      // Its own data directory: read with the CLI after the gateway stopped.
      mandate = await startInProcess({ servers: [{ name: 'main', url: upstream.url }], dataDir: tempDir('mandate-journal-sync-'), extra: { audit: { durability: 'power', journalSync } } });
      session = await openSession(mandate.endpoint('main'));
    });

    after(async () => {
      await mandate?.stop();
      await upstream?.close();
      if (mandate) rmSync(mandate.dataDir, { recursive: true, force: true });
    });

    it('a call is journaled before it is forwarded, and answered', async () => {
      assert.equal(toolText(await session.callTool('echo', { text: 'first' })), 'echo: first');
      const [file] = journals();
      assert.ok(file, 'a journal file');
      assert.match(readFileSync(path.join(mandate.dataDir, 'runs', file), 'utf8'), /"tool":"echo"/);
    });

    it(
      journalSync === 'before-forward'
        ? 'a call whose line cannot be synced is refused, and never reaches the upstream'
        : 'a call still in flight when its line is looked at is synced; when that fails, the call is still answered (its mcp.request is durable)',
      async () => {
        const [file] = journals();
        makeUnsyncable(path.join(mandate.dataDir, 'runs', file as string));
        // In flight for 200 ms: long past the look at its line, which syncs the file (and fails).
        upstream.onTool('echo', (message) => ((message.params?.arguments as { text?: string } | undefined)?.text === 'second' ? { json: textResult(message, 'echo: second'), delayMs: 200 } : undefined));
        const answer = await session.callTool('echo', { text: 'second' });
        if (journalSync === 'before-forward') {
          assert.equal(answer.error?.code, -32603, JSON.stringify(answer));
          assert.match(String(answer.error?.message), /audit log is unavailable/);
          assert.deepEqual(calls(), ['first'], 'the refused call was forwarded');
        } else {
          assert.equal(toolText(answer), 'echo: second');
          assert.deepEqual(calls(), ['first', 'second']);
          const recorded = await mandate.audit({ types: ['mcp.request'] });
          assert.ok(recorded.some((e) => e.tool === 'echo' && e.outcome === 'success' && typeof e.data.call === 'string' && e.data.call.endsWith('.2')), JSON.stringify(recorded.map((e) => e.data.call)));
        }
      },
    );

    it('the next call goes to a new journal file and works', async () => {
      assert.equal(toolText(await session.callTool('echo', { text: 'third' })), 'echo: third');
      assert.equal(calls().at(-1), 'third');
      assert.ok(journals().some((name) => name.endsWith('.1.calls')), `a new file: ${journals().join(', ')}`);
    });

    it('an orderly stop records no call as forwarded without its record, and leaves no journal', async () => {
      await mandate.stop();
      const recovered = await auditEvents(mandate.cli, ['--type', 'policy.allowed']);
      assert.deepEqual(recovered, [], 'a refused call is not a forwarded one');
      assert.deepEqual(journals(), []);
      if (journalSync === 'before-forward') {
        const refused = (await auditEvents(mandate.cli, ['--type', 'mcp.request'])).find((e) => e.reason === 'audit_unavailable');
        assert.ok(refused, 'the refused call has its record');
        assert.equal(refused.data.call, undefined, 'the record of a call never forwarded names no journal line');
      }
    });
  });
}
