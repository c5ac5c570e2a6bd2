/**
 * The policy plane on one node: the policy set in force, read from the
 * configured directory (a starter set is written there on first start when
 * the directory is the default one), replaced without a restart (file watch,
 * SIGHUP and `mandate policy reload`), each load and each refusal an audit
 * event recorded before the set applies. An invalid set is refused with
 * file, line and message and the set in force stays; with no valid set at
 * start, every decided request fails closed and /readyz says why.
 */
import type { BreakglassFacts } from './request.ts';
import { copyFileSync, existsSync, mkdirSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { AuditLog } from '../audit/log.ts';
import type { Logger } from '../observability/log.ts';
import { PolicyEngine } from './engine.ts';
import { describeProblem, loadPolicyFiles, PolicySetError, readPolicyDir, type Problem } from './load.ts';
import type { ToolHints } from './request.ts';

export const STARTER_FILES = ['starter.cedar', 'starter.cases.yaml'] as const;
const STARTER_DIR = new URL('./starter/', import.meta.url);

export type PolicyLoadOutcome =
  | { ok: true; dir: string; sha256: string; policies: number; files: readonly string[]; warnings: string[]; unchanged: boolean }
  | { ok: false; dir: string; error: string; problems: readonly Problem[]; /** The set still in force (its SHA-256), or null when none is. */ kept: string | null };

/** Writes the starter set into `dir` when it does not exist yet; true when it did. */
export function writeStarterSet(dir: string): boolean {
  if (existsSync(dir)) return false;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const file of STARTER_FILES) copyFileSync(new URL(file, STARTER_DIR), join(dir, file));
  return true;
}

/** Tool hints as each upstream declared them in its own tools/list, per server definition. */
export class ToolHintCache {
  private readonly servers = new Map<string, { generation: number; tools: Map<string, ToolHints> }>();

  note(server: string, generation: number, tools: Iterable<[string, ToolHints]>): void {
    let entry = this.servers.get(server);
    if (entry === undefined || entry.generation !== generation) {
      entry = { generation, tools: new Map() };
      this.servers.set(server, entry);
    }
    for (const [name, hints] of tools) {
      if (entry.tools.size >= 10_000 && !entry.tools.has(name)) break;
      entry.tools.set(name, hints);
    }
  }

  /** The tool's hints; none (`{}`) for a tool the server's list did not declare; undefined until a list of this server was seen. */
  get(server: string, generation: number, tool: string): ToolHints | undefined {
    const entry = this.servers.get(server);
    if (entry?.generation !== generation) return undefined;
    return entry.tools.get(tool) ?? {};
  }
}

export interface PolicyServiceDeps {
  audit: AuditLog;
  log: Logger;
  /** The servers routable now (each gets its policies prepared at load). */
  servers: () => Iterable<string>;
  run: string;
}

/** Finds the break-glass grant covering a user's request on a server (and tool; null for a request on the server itself). */
export interface BreakglassLookup {
  covering(user: string, server: string, tool: string | null): BreakglassFacts | null;
}

export class PolicyService {
  private current: PolicyEngine | null = null;
  private failure: string | null = 'no policy set has been loaded';
  private directory: string;
  private watcher: FSWatcher | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  readonly hints = new ToolHintCache();
  /** Break-glass grants in force (src/breakglass/runtime.ts): what `context.breakglass` is read from; null: none are looked up. */
  breakglass: BreakglassLookup | null = null;
  private readonly deps: PolicyServiceDeps;

  constructor(dir: string, deps: PolicyServiceDeps) {
    this.directory = dir;
    this.deps = deps;
  }

  get dir(): string {
    return this.directory;
  }

  /** The set deciding now; null when none could be loaded (every decided request is refused). */
  get engine(): PolicyEngine | null {
    return this.current;
  }

  /** Why no set is in force (null when one is). */
  get problem(): string | null {
    return this.current === null ? this.failure : null;
  }

  /**
   * Reads the directory (or `dir`, which becomes the directory) and puts the
   * set in force when it is valid; one load at a time.
   */
  load(reason: 'start' | 'reload' | 'watch' | 'command', dir?: string): Promise<PolicyLoadOutcome> {
    const next = this.queue.then(() => this.loadNow(reason, dir ?? this.directory));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async loadNow(reason: string, dir: string): Promise<PolicyLoadOutcome> {
    const { audit, log, run } = this.deps;
    const previous = this.current;
    let engine: PolicyEngine;
    try {
      const files = readPolicyDir(dir);
      // The same files as the set in force: nothing to parse, validate or prepare again.
      if (previous !== null && previous.hash === files.hash && dir === this.directory) {
        const { source } = previous;
        return { ok: true, dir, sha256: source.hash, policies: previous.size, files: source.files, warnings: source.warnings.map(describeProblem), unchanged: true };
      }
      engine = new PolicyEngine(loadPolicyFiles(files));
      engine.prepare(this.deps.servers());
    } catch (error) {
      const problems: Problem[] = error instanceof PolicySetError ? [...error.problems] : [{ file: null, line: null, column: null, message: (error as Error).message }];
      const lines = problems.map(describeProblem);
      const message = `the policy set in ${dir} was refused: ${lines.length} problem(s)\n${lines.map((line) => `  ${line}`).join('\n')}`;
      if (this.current === null) this.failure = message;
      log.error({ dir, reason }, `${message}${this.current === null ? '' : '\nthe policy set in force stays'}`);
      await audit
        .record({ type: 'policy.rejected', outcome: 'failure', reason: lines[0] ?? 'invalid policy set', data: { dir, trigger: reason, problems: lines.slice(0, 50), kept: this.current?.hash ?? null, run } })
        .catch(() => undefined);
      return { ok: false, dir, error: message, problems, kept: this.current?.hash ?? null };
    }
    const warnings = engine.source.warnings.map(describeProblem);
    try {
      // Recorded before it applies: a policy set never decides without its record.
      await audit.record({
        type: 'policy.loaded',
        outcome: 'success',
        reason: reason,
        data: { dir, sha256: engine.hash, policies: engine.size, files: [...engine.source.files], warnings, previous: previous?.hash ?? null, run },
      });
    } catch (error) {
      engine.dispose();
      const message = `the audit log cannot be written, so the policy set was not changed: ${(error as Error).message}`;
      if (this.current === null) this.failure = message;
      return { ok: false, dir, error: message, problems: [], kept: this.current?.hash ?? null };
    }
    this.current = engine;
    this.failure = null;
    if (dir !== this.directory) {
      this.directory = dir;
      if (this.watcher !== null) this.watch();
    }
    previous?.dispose();
    for (const warning of warnings) log.warn({ dir }, `policy: ${warning}`);
    log.info({ dir, sha256: engine.hash, policies: engine.size, reason }, 'policy set in force');
    return { ok: true, dir, sha256: engine.hash, policies: engine.size, files: engine.source.files, warnings, unchanged: false };
  }

  /** Reloads when a file in the directory changes (debounced). */
  watch(): void {
    this.watcher?.close();
    this.watcher = null;
    try {
      this.watcher = watch(this.directory, { persistent: false }, () => {
        if (this.debounce !== null) clearTimeout(this.debounce);
        this.debounce = setTimeout(() => {
          this.debounce = null;
          void this.load('watch');
        }, 200);
        this.debounce.unref();
      });
      this.watcher.on('error', (error) => this.deps.log.warn({ dir: this.directory, err: String(error) }, 'policy directory watch failed; use `mandate policy reload`'));
    } catch (error) {
      this.deps.log.warn({ dir: this.directory, err: String(error) }, 'cannot watch the policy directory; use `mandate policy reload`');
    }
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    this.watcher = null;
    if (this.debounce !== null) clearTimeout(this.debounce);
    await this.queue;
  }
}
