/**
 * A `task` revocation (written by `store.tasks.end`, docs/tasks.md) covers
 * every token whose facts name the task, whenever it was issued, on every
 * node that refreshes its revocation list; tokens of other tasks, and tokens
 * bound to no task, are not touched. Real parts: the SQLite store.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RevocationList } from '../../src/identity/revocations.ts';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/types.ts';

const HOUR = 3_600_000;

describe('a task revocation', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mandate-task-revocation-'));
  let store: Store;

  before(async () => {
    store = await openStore({ dataDir: path.join(dir, 'data') });
    await store.migrate();
  });
  after(async () => {
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("covers every token naming the ended task, issued before or after the end, once a node's list refreshes", async () => {
    const now = Date.now();
    const facts = (task: string | undefined, issuedAtMs: number) => ({ jti: 'j', grantId: 'g', clientId: 'c', sub: 'ann', task, issuedAtMs });
    const list = new RevocationList(store);
    await list.refresh();
    assert.equal(list.revokedBy(facts('tk-000000000001', now)), null);

    await store.tasks.create({
      id: 'tk-000000000001',
      user: 'ann',
      clientId: null,
      purpose: 'rotate keys',
      ticket: null,
      server: 'payments',
      tools: [],
      status: 'open',
      openedAt: now - HOUR,
      expiresAt: now + HOUR,
      endedAt: null,
      endedBy: null,
    });
    assert.equal(await store.tasks.end('tk-000000000001', 'closed', 'ann', now), true);
    assert.equal(list.revokedBy(facts('tk-000000000001', now)), null, 'applied before the list refreshed');

    await list.refresh();
    assert.equal(list.revokedBy(facts('tk-000000000001', now - 1000)), 'task');
    assert.equal(list.revokedBy(facts('tk-000000000001', now + 1000)), 'task', 'a task revocation does not depend on the issue time');
    assert.equal(list.revokedBy(facts('tk-000000000002', now - 1000)), null, 'another task');
    assert.equal(list.revokedBy(facts(undefined, now - 1000)), null, 'a token bound to no task');
  });
});
