/** Identity start-up: the first signing key is on record (keys.rotated); a restart with a young key adds nothing. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { AuditLog } from '../../src/audit/log.ts';
import { loadConfig } from '../../src/config/load.ts';
import { Identity } from '../../src/identity/service.ts';
import { createLogger } from '../../src/observability/log.ts';
import { openStore } from '../../src/store/open.ts';
import { tempDir } from '../helpers/process.ts';

describe('identity start-up', () => {
  it('records keys.rotated for the first signing key, and nothing while the key is young', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'mandate.yaml');
    writeFileSync(file, 'issuer: http://127.0.0.1:1\nlog:\n  level: silent\n');
    const config = loadConfig({ config: file, data: path.join(dir, 'data') });
    const store = await openStore({ dataDir: config.dataDir });
    try {
      await store.migrate();
      const audit = new AuditLog(store);
      const log = createLogger('silent');
      const first = await Identity.start({ config, store, audit, log });
      first.stop();
      const second = await Identity.start({ config, store, audit, log });
      second.stop();
      await audit.flush();
      const rotated = await store.audit.list({ types: ['keys.rotated'] });
      assert.equal(rotated.length, 1);
      const body = JSON.parse(rotated[0]!.body) as { reason: string; data: { kid: string; retired: string[] } };
      assert.equal(body.reason, 'first signing key');
      assert.deepEqual(body.data.retired, []);
      const [key] = await store.identity.listKeys('signing', Date.now());
      assert.equal(body.data.kid, key?.kid, 'the event names the key in use');
    } finally {
      await store.close();
    }
  });
});
