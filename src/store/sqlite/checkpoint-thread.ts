/**
 * The SQLite checkpoint thread: copies committed WAL frames into the
 * database file, on its own connection, every CHECKPOINT_INTERVAL_MS.
 *
 * Left to SQLite, a checkpoint runs inside the commit that takes the WAL past
 * its limit: that commit (the writer thread's, or the main thread's, which
 * would block the event loop) waits for the frames to be copied and the
 * database file to be synced, and every request waiting on it waits too.
 * Here checkpoints are PASSIVE: they copy what no reader still needs and
 * never wait for, or hold up, a writer or a reader. Every connection keeps
 * SQLite's own checkpoint as a backstop at CHECKPOINT_BACKSTOP_PAGES
 * (append.ts), so the WAL stays bounded if this thread falls behind or stops.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openDatabase } from './append.ts';
import type { Durability } from '../types.ts';

const port = parentPort;
if (!port) throw new Error('checkpoint-thread.ts runs as a worker thread');
const { file, durability, intervalMs } = workerData as { file: string; durability: Durability; intervalMs: number };
const db = openDatabase(file, durability);
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');

const timer = setInterval(() => {
  try {
    checkpoint.get();
  } catch {
    // Nothing is lost: the frames stay in the WAL, and the backstop checkpoint still bounds it.
  }
}, intervalMs);

port.on('message', (message: unknown) => {
  if (message !== 'close') return;
  clearInterval(timer);
  db.close();
  port.close();
});
