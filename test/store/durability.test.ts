/** audit.durability picks SQLite's synchronous mode; both modes append through the writer thread. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openDatabase } from '../../src/store/sqlite/append.ts';
import { openStore } from '../../src/store/open.ts';
import { ChainVerifier } from '../../src/audit/chain.ts';

describe('SQLite durability settings', () => {
  for (const [durability, synchronous] of [['power', 2], ['process', 1]] as const) {
    it(`${durability}: synchronous=${synchronous}, appends commit and chain`, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'mandate-durability-'));
      try {
        const store = await openStore({ dataDir: dir, durability });
        await store.migrate();
        const time = new Date().toISOString();
        await Promise.all([1, 2, 3].map((i) => store.audit.append([{ time, type: 'mcp.request', outcome: 'success', data: { i } }])));
        const verifier = new ChainVerifier();
        for (const record of await store.audit.list()) verifier.push(record);
        assert.deepEqual(verifier.result().ok && verifier.result().count, 3);
        await store.close();
        const db = openDatabase(path.join(dir, 'mandate.db'), durability);
        assert.equal((db.prepare('PRAGMA synchronous').get() as { synchronous: number }).synchronous, synchronous);
        assert.equal((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode, 'wal');
        db.close();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
