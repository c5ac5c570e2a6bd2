/** The SQLite writer thread: its own connection, one transaction per batch. */
import { parentPort, workerData } from 'node:worker_threads';
import { Appender, openDatabase } from './append.ts';
import type { TimedEvent } from '../../audit/events.ts';
import type { Durability } from '../types.ts';

interface Job {
  id: number;
  events: TimedEvent[];
  /** Send the sealed records back (else only that they are durable). */
  records: boolean;
}

const port = parentPort;
if (!port) throw new Error('writer-thread.ts runs as a worker thread');
const { file, durability } = workerData as { file: string; durability: Durability };
const db = openDatabase(file, durability);
let appender: Appender | null = null;

port.on('message', (job: Job | 'close') => {
  if (job === 'close') {
    db.close();
    port.close();
    return;
  }
  try {
    appender ??= new Appender(db);
    const records = appender.append(job.events);
    port.postMessage({ id: job.id, records: job.records ? records : true });
  } catch (error) {
    const typeError = error instanceof TypeError || error instanceof RangeError;
    port.postMessage({ id: job.id, error: error instanceof Error ? error.message : String(error), typeError });
  }
});
