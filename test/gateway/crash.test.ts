/**
 * Crash evidence: after `kill -9` and a restart on the same data directory,
 * the log says that the previous run stopped uncleanly (`gateway.recovered`
 * naming it) and closes the sessions it left open (`session.closed`, reason
 * `crash`). A call that was forwarded when the gateway died has its policy
 * decision recorded at the next start (`policy.allowed`, recovered). An
 * orderly stop leaves nothing to recover.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { EVERYTHING, NODE, startMandate, tempDir, type Mandate } from '../helpers/process.ts';
import { auditEvents, openSession } from './raw.ts';
import { readdirSync, readFileSync, rmSync } from 'node:fs';

describe('evidence of a crash', { timeout: 120_000 }, () => {
  const dir = tempDir('mandate-crash-');
  const dataDir = path.join(dir, 'data');
  const servers = [{ name: 'everything', command: NODE, args: [EVERYTHING, 'stdio'] }];
  let running: Mandate | null = null;

  after(async () => {
    await running?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('kill -9, then a restart: gateway.recovered names the previous run, and its open sessions are closed in the log (reason crash)', async () => {
    const crashed = await startMandate({ servers, dataDir });
    running = crashed;
    const open = await openSession(crashed.endpoint('everything'));
    const ended = await openSession(crashed.endpoint('everything'));
    assert.equal((await fetch(ended.url, { method: 'DELETE', headers: ended.headers })).status, 200);
    const started = (await auditEvents(crashed.cli, ['--type', 'gateway.started'])).at(-1);
    const run = started?.data.run;
    assert.match(String(run), /^[0-9a-f]{16}$/);
    await crashed.stop('SIGKILL');

    const restarted = await startMandate({ servers, dataDir });
    running = restarted;
    const recovered = await auditEvents(restarted.cli, ['--type', 'gateway.recovered']);
    assert.equal(recovered.length, 1, JSON.stringify(recovered));
    assert.equal(recovered[0]?.data.previousRun, run);
    assert.equal(recovered[0]?.data.sessionsClosed, 1);
    const closed = (await auditEvents(restarted.cli, ['--type', 'session.closed'])).filter((e) => e.data.run === run);
    const byReason = closed.map((e) => e.reason).sort();
    assert.deepEqual(byReason, ['client ended the session', 'crash'], JSON.stringify(closed));
    const opened = (await auditEvents(restarted.cli, ['--type', 'session.opened'])).filter((e) => e.data.run === run);
    const crashClosed = closed.find((e) => e.reason === 'crash');
    assert.ok(opened.some((e) => e.data.session === crashClosed?.data.session), 'the crash closes a session that run opened');
    assert.ok(open.id.length > 0);
    const verified = await restarted.cli(['audit', 'verify']);
    assert.equal(verified.code, 0, verified.stdout);

    // An orderly stop leaves nothing to recover.
    await restarted.stop('SIGTERM');
    running = await startMandate({ servers, dataDir });
    assert.equal((await auditEvents(running.cli, ['--type', 'gateway.recovered'])).length, 1);
  });

  it('a call forwarded when the gateway is killed: its decision is recorded at the next start; a call answered before is not recovered', async () => {
    const runs = path.join(dataDir, 'runs');
    const journals = () => readdirSync(runs).filter((name) => name.endsWith('.calls'));
    await running?.stop('SIGTERM');
    const crashed = await startMandate({ servers, dataDir });
    running = crashed;
    const session = await openSession(crashed.endpoint('everything'));
    assert.match(JSON.stringify(await session.callTool('echo', { message: 'answered' })), /answered/);
    // A long call: forwarded (its decision journaled first), never answered before the kill.
    const pending = session.post({ jsonrpc: '2.0', id: 'long', method: 'tools/call', params: { name: 'trigger-long-running-operation', arguments: { duration: 30, steps: 3 } } }).catch(() => null);
    const deadline = Date.now() + 10_000;
    while (!journals().some((name) => readFileSync(path.join(runs, name), 'utf8').includes('trigger-long-running-operation'))) {
      assert.ok(Date.now() < deadline, 'the call was never journaled');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await crashed.stop('SIGKILL');
    await pending;

    const restarted = await startMandate({ servers, dataDir });
    running = restarted;
    const allowed = await auditEvents(restarted.cli, ['--type', 'policy.allowed']);
    assert.equal(allowed.length, 1, JSON.stringify(allowed));
    const [call] = allowed;
    assert.equal(call?.tool, 'trigger-long-running-operation');
    assert.equal(call?.server, 'everything');
    assert.equal(call?.data.recovered, true);
    assert.deepEqual(call?.data.policies, ['scopes-decide']);
    assert.match(String(call?.data.policySet), /^[0-9a-f]{64}$/);
    const recovered = (await auditEvents(restarted.cli, ['--type', 'gateway.recovered'])).at(-1);
    assert.equal(recovered?.data.callsRecovered, 1);
    const echo = (await auditEvents(restarted.cli, ['--type', 'mcp.request'])).find((e) => e.tool === 'echo');
    assert.deepEqual(echo?.data.policies, ['scopes-decide'], 'the answered call names its policies in its own record');
    assert.deepEqual(journals(), [], 'the journal of the crashed run is gone once recovered');
    const verified = await restarted.cli(['audit', 'verify']);
    assert.equal(verified.code, 0, verified.stdout);
  });
});
