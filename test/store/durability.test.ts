/** audit.durability picks SQLite's synchronous mode; both modes append through the writer thread. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CHECKPOINT_BACKSTOP_PAGES, openDatabase } from '../../src/store/sqlite/append.ts';
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

/**
 * The WAL's frame count and how many of them were copied into the database
 * file, read from the -shm file's header (SQLite's WAL-index format: mxFrame
 * at byte 16, nBackfill at byte 96, native byte order), so that looking does
 * not itself checkpoint.
 */
function walIndex(dbFile: string): { frames: number; backfilled: number } {
  const shm = readFileSync(`${dbFile}-shm`);
  return { frames: shm.readUInt32LE(16), backfilled: shm.readUInt32LE(96) };
}

describe('SQLite checkpoints', () => {
  it('every connection leaves checkpoints to the checkpoint thread, up to the backstop', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mandate-checkpoint-'));
    try {
      const db = openDatabase(path.join(dir, 'mandate.db'));
      assert.equal((db.prepare('PRAGMA wal_autocheckpoint').get() as { wal_autocheckpoint: number }).wal_autocheckpoint, CHECKPOINT_BACKSTOP_PAGES);
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the checkpoint thread copies committed frames into the database file while the gateway appends', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mandate-checkpoint-'));
    const file = path.join(dir, 'mandate.db');
    try {
      const store = await openStore({ dataDir: dir, durability: 'process' });
      await store.migrate();
      const time = new Date().toISOString();
      // Commits one after another, each a few WAL frames: more than SQLite's default limit, far below the backstop.
      for (let i = 0; i < 400; i++) await store.audit.append([{ time, type: 'mcp.request', outcome: 'success', data: { i, pad: 'x'.repeat(2000) } }]);
      const written = walIndex(file);
      assert.ok(written.frames > 1000 && written.frames < CHECKPOINT_BACKSTOP_PAGES, `frames ${written.frames}`);
      // Nothing commits now: within a few intervals the thread has copied every frame.
      let seen = walIndex(file);
      for (let waited = 0; waited < 5000 && (seen.frames === 0 || seen.backfilled < seen.frames); waited += 50) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        seen = walIndex(file);
      }
      assert.ok(seen.frames > 0 && seen.backfilled === seen.frames, `backfilled ${seen.backfilled} of ${seen.frames} frames`);
      assert.equal((await store.audit.list({ limit: 1000 })).length, 400);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
