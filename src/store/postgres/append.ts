/**
 * Appending audit events to PostgreSQL: one transaction under the audit
 * advisory lock, so the head read, seal and insert are serial across every
 * process and node (READ COMMITTED alone would let two writers read the same
 * head). The batch goes in as one statement, whatever its size.
 */
import { seal } from '../../audit/chain.ts';
import type { TimedEvent } from '../../audit/events.ts';
import type { AuditAppender } from '../audit.ts';
import { AUDIT_COLUMNS, AUDIT_HEAD_SQL, type HeadRow } from '../query.ts';
import type { Engine } from '../sql/engine.ts';

/** One row per array element; no parameter limit, one round trip. */
const INSERT_BATCH = `INSERT INTO audit_events (${AUDIT_COLUMNS})
  SELECT * FROM unnest(CAST(? AS bigint[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]),
                       CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]))`;

export function postgresAppender(engine: Engine): AuditAppender {
  const append = (events: readonly TimedEvent[]) =>
    engine.transaction(
      'append audit events',
      async (tx) => {
        const last = await tx.get<HeadRow>(AUDIT_HEAD_SQL);
        const records = seal(last ? { seq: Number(last.seq), hash: last.hash } : null, events);
        await tx.run(INSERT_BATCH, [
          records.map((r) => r.seq),
          records.map((r) => r.time),
          records.map((r) => r.type),
          records.map((r) => r.server),
          records.map((r) => r.outcome),
          records.map((r) => r.body),
          records.map((r) => r.prevHash),
          records.map((r) => r.hash),
        ]);
        return records;
      },
      { lock: 'audit' },
    );
  return {
    append,
    record: async (events) => {
      await append(events);
    },
  };
}
