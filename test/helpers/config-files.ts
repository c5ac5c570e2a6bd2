/**
 * Configuration files for a test file: a temporary directory (removed after
 * its tests), a data directory path inside it, and YAML written there under
 * a fresh name each time (`config-N.yaml`, unless named).
 */
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';
import { tempDir } from './process.ts';

export interface ConfigFiles {
  dir: string;
  dataDir: string;
  /** Writes `yaml` to a new file in `dir` and returns its path. */
  file(yaml: string, name?: string): string;
}

export function configFiles(prefix: string): ConfigFiles {
  const dir = tempDir(prefix);
  after(() => rmSync(dir, { recursive: true, force: true }));
  let counter = 0;
  return {
    dir,
    dataDir: path.join(dir, 'data'),
    file(yaml, name = `config-${++counter}.yaml`) {
      const target = path.join(dir, name);
      writeFileSync(target, yaml);
      return target;
    },
  };
}
