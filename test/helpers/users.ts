/** Users for catalog tests, straight into a store: name → groups (no password: they act through the CLI's --as or the catalog's API). */
import type { Store } from '../../src/store/types.ts';

export async function createUsers(store: Store, users: Record<string, readonly string[]>): Promise<void> {
  for (const [name, groups] of Object.entries(users)) {
    await store.identity.createUser({ name, passwordHash: null, groups: [...groups], disabled: false, createdAt: 0, updatedAt: 0 });
  }
}
