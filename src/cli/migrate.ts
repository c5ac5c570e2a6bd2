/** `mandate migrate`: applies pending schema migrations and prints what it applied. */
import type { MigrationState } from '../store/types.ts';
import { openFlaggedStore, type StoreFlags } from './common.ts';

export async function migrate(flags: StoreFlags & { json?: boolean }): Promise<number> {
  // Creates an embedded store that does not exist yet, as `mandate up` would.
  const store = await openFlaggedStore(flags);
  try {
    const before = new Set((await store.migrations()).map((m) => m.version));
    const after = await store.migrate();
    const applied: MigrationState[] = after.filter((m) => !before.has(m.version));
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(applied, null, 2)}\n`);
      return 0;
    }
    const version = Math.max(0, ...after.map((m) => m.version));
    if (applied.length === 0) {
      process.stdout.write(`${store.description}: the schema is current (version ${version}); nothing to apply\n`);
      return 0;
    }
    process.stdout.write(`${store.description}: applied ${applied.length} migration${applied.length === 1 ? '' : 's'}, now at version ${version}\n`);
    for (const m of applied) process.stdout.write(`  ${String(m.version).padStart(4)}  ${m.name.padEnd(24)}  ${m.appliedAt}\n`);
    return 0;
  } finally {
    await store.close();
  }
}
