/**
 * `mandate tasks open | close | revoke | list` (docs/tasks.md). Each reads
 * mandate.yaml (`--config`) for its `admin` roles and `tasks` settings, opens
 * the store it names, and (but `list`) acts as a named Mandate user (`--as`)
 * through the task service, which holds every rule. A missing or malformed
 * flag exits 2 naming the flag; a refusal by a rule exits 1 naming the rule.
 */
import { AuditLog } from '../audit/log.ts';
import type { TaskRecord, TaskStatus } from '../store/tasks.ts';
import { TASK_STATUSES } from '../store/tasks.ts';
import { Tasks } from '../tasks/service.ts';
import { iso, parseDuration, parseText, when } from './clients.ts';
import { required, UsageError, withConfiguredStore } from './common.ts';
import { printFields, printJson, printLine, printTable } from './output.ts';
import type { StoreFlags } from './common.ts';

export interface TaskFlags extends StoreFlags {
  config?: string;
  json?: boolean;
  as?: string;
  reason?: string;
}

export interface OpenTaskFlags extends TaskFlags {
  purpose?: string;
  ticket?: string;
  server?: string;
  tool?: string[];
  ttl?: string;
  forClient?: string;
}

export interface ListTaskFlags extends TaskFlags {
  user?: string;
  status?: string;
}

/** The longest --ttl the flag parser takes; tasks.maxTtlSeconds (at most 7 days) is the real bound. */
const TTL_FLAG_MAX = 365 * 86_400_000;

/** Loads mandate.yaml and opens the store it names, for one task action. */
function withTasks<T>(flags: TaskFlags, body: (service: Tasks) => Promise<T>): Promise<T> {
  return withConfiguredStore(flags, (store, config) => body(new Tasks({ store, audit: new AuditLog(store), settings: () => ({ admin: config.admin, tasks: config.tasks }) })));
}

const actor = (flags: TaskFlags): string => parseText('--as', required('--as USER', flags.as, 'task actions are taken as a named Mandate user'), 128);

/** A task as `--json` prints it: times in ISO 8601. */
function view(task: TaskRecord) {
  return { ...task, openedAt: iso(task.openedAt), expiresAt: iso(task.expiresAt), endedAt: iso(task.endedAt) };
}

const toolsText = (task: TaskRecord): string => (task.tools.length === 0 ? 'every tool' : task.tools.join(', '));

export async function open(flags: OpenTaskFlags): Promise<void> {
  const purpose = required('--purpose TEXT', flags.purpose, 'say what the task is for');
  const server = required('--server NAME', flags.server, 'name the server the task uses');
  const ttlSeconds = flags.ttl === undefined ? undefined : parseDuration('--ttl', flags.ttl, 1000, TTL_FLAG_MAX, '1s to 365d') / 1000;
  const as = actor(flags);
  await withTasks(flags, async (service) => {
    const task = await service.open(as, { purpose, ticket: flags.ticket, server, tools: flags.tool ?? [], ttlSeconds, clientId: flags.forClient });
    if (flags.json) return printJson(view(task));
    printLine(`opened task ${task.id}`);
    printFields([
      ['user', task.user],
      ['client', task.clientId ?? 'any client of the user'],
      ['server', task.server],
      ['tools', toolsText(task)],
      ['purpose', task.purpose],
      ['ticket', task.ticket ?? '-'],
      ['until', when(task.expiresAt)],
    ]);
  });
}

export async function close(id: string, flags: TaskFlags): Promise<void> {
  const as = actor(flags);
  await withTasks(flags, async (service) => {
    const task = await service.close(as, id);
    if (flags.json) return printJson(view(task));
    printLine(`closed task ${task.id} (${task.user} on ${task.server}): its tokens fail on their next request`);
  });
}

export async function revoke(id: string, flags: TaskFlags): Promise<void> {
  const as = actor(flags);
  await withTasks(flags, async (service) => {
    const task = await service.revoke(as, id, flags.reason);
    if (flags.json) return printJson(view(task));
    printLine(`revoked task ${task.id} (${task.user} on ${task.server}): its tokens fail on their next request`);
  });
}

export async function list(flags: ListTaskFlags): Promise<void> {
  const status = flags.status;
  if (status !== undefined && !(TASK_STATUSES as readonly string[]).includes(status)) throw new UsageError(`--status takes ${TASK_STATUSES.join(', ')}`);
  await withTasks(flags, async (service) => {
    const tasks = await service.list({ user: flags.user, status: status as TaskStatus | undefined });
    if (flags.json) return printJson(tasks.map(view));
    printTable(
      ['ID', 'USER', 'CLIENT', 'SERVER', 'TOOLS', 'PURPOSE', 'TICKET', 'OPENED', 'UNTIL', 'STATUS'],
      tasks.map((t) => [t.id, t.user, t.clientId ?? '*', t.server, toolsText(t), t.purpose, t.ticket ?? '-', when(t.openedAt), when(t.expiresAt), t.status]),
      'no tasks',
    );
  });
}
