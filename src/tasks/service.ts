/**
 * Tasks: a bounded piece of work a user's tokens are bound to (docs/tasks.md).
 *
 * Rules, each refusal a TaskError naming its rule:
 * - The acting user must exist and be enabled (rule `user`).
 * - `open`: the acting user opens a task for themselves. It needs a purpose
 *   (1 to 1000 printable characters), an optional ticket (1 to 200), a
 *   server name, optional tool names (each 1 to 200), an optional client id
 *   (an existing client, not rejected or revoked), and a ttl in
 *   (0, tasks.maxTtlSeconds] (default tasks.defaultTtlSeconds).
 * - `close`: the task's user, or someone with the role `admin` (rule `roles`).
 * - `revoke`: the role `admin` (rule `roles`).
 * - Only an open task that has not expired is closed or revoked (rule `status`).
 *
 * Every change is one store write (src/store/tasks.ts; ending a task writes
 * its `task` revocation in the same transaction), then its event:
 * `task.opened`, `task.closed`, `task.revoked`.
 */
import { randomBytes } from 'node:crypto';
import { grantInputs, RuleError } from '../admin/refusal.ts';
import { rolesHeld } from '../admin/roles.ts';
import type { EventType, JsonValue } from '../audit/events.ts';
import type { AuditLog } from '../audit/log.ts';
import type { AdminConfig } from '../config/catalog-schema.ts';
import type { TasksConfig } from '../config/schema.ts';
import type { TaskRecord, TaskStatus } from '../store/tasks.ts';
import type { Store, UserRecord } from '../store/types.ts';

/** A task action was refused: the message names the rule (`user`, `roles`, `purpose`, `tasks.maxTtlSeconds`, `status`…). */
export class TaskError extends RuleError {
  override readonly name = 'TaskError';
}

export interface OpenTaskInput {
  purpose: string;
  ticket?: string | undefined;
  server: string;
  /** Absent or []: every tool of the server. */
  tools?: readonly string[] | undefined;
  /** Absent: tasks.defaultTtlSeconds. */
  ttlSeconds?: number | undefined;
  /** The one client its tokens may be issued to; absent: any client of the user. */
  clientId?: string | undefined;
}

export interface TasksDeps {
  store: Store;
  audit: AuditLog;
  /** Read at each action, so a reload's settings apply at once. */
  settings: () => { admin: AdminConfig; tasks: TasksConfig };
  now?: () => number;
}

const { text, server, tools, ttl } = grantInputs((rule, message) => new TaskError(rule, message), {
  needs: 'a task needs one',
  lasts: 'a task',
  ttlRule: 'tasks.maxTtlSeconds',
});

const newId = (): string => `tk-${randomBytes(6).toString('hex')}`;
const iso = (ms: number): string => new Date(ms).toISOString();

/** A task's event data. */
function eventData(task: TaskRecord): { [key: string]: JsonValue } {
  return {
    id: task.id,
    user: task.user,
    clientId: task.clientId,
    server: task.server,
    tools: task.tools,
    purpose: task.purpose,
    ticket: task.ticket,
    expiresAt: iso(task.expiresAt),
  };
}

export class Tasks {
  private readonly deps: TasksDeps;

  constructor(deps: TasksDeps) {
    this.deps = deps;
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** The acting user: existing and enabled (rule `user`). */
  private async actor(name: string): Promise<UserRecord> {
    const user = await this.deps.store.identity.getUser(name);
    if (user === null) throw new TaskError('user', `no Mandate user "${name}": act as a user that exists (mandate users add)`);
    if (user.disabled) throw new TaskError('user', `user "${name}" is disabled`);
    return user;
  }

  private isAdmin(user: UserRecord): boolean {
    return rolesHeld(this.deps.settings().admin, user).includes('admin');
  }

  /** Opens a task for the acting user; records `task.opened`. */
  async open(actor: string, input: OpenTaskInput): Promise<TaskRecord> {
    const user = await this.actor(actor);
    const settings = this.deps.settings().tasks;
    const purpose = text('purpose', 'a purpose', input.purpose, 1000);
    const ticket = input.ticket === undefined ? null : text('ticket', 'a ticket', input.ticket, 200);
    const seconds = ttl(input.ttlSeconds ?? settings.defaultTtlSeconds, settings.maxTtlSeconds);
    const clientId = input.clientId === undefined ? null : await this.client(input.clientId);
    const openedAt = this.now();
    const task: TaskRecord = {
      id: newId(),
      user: user.name,
      clientId,
      purpose,
      ticket,
      server: server(input.server),
      tools: tools(input.tools),
      status: 'open',
      openedAt,
      expiresAt: openedAt + seconds * 1000,
      endedAt: null,
      endedBy: null,
    };
    await this.deps.store.tasks.create(task);
    await this.recorded('task.opened', actor, task, `task ${task.id} is open`);
    return task;
  }

  /** An existing client that is not rejected or revoked (rule `client`). */
  private async client(id: string): Promise<string> {
    const value = text('client', 'a client id', id, 200);
    const client = await this.deps.store.identity.getClient(value);
    if (client === null) throw new TaskError('client', `no client "${value}" (mandate clients list)`);
    if (client.status === 'rejected' || client.status === 'revoked') throw new TaskError('client', `client "${value}" is ${client.status}`);
    return value;
  }

  /** Ends a task before it expires: its user, or an admin. Its tokens fail on their next request. */
  async close(actor: string, id: string): Promise<TaskRecord> {
    const user = await this.actor(actor);
    const task = await this.get(id);
    if (task.user !== actor && !this.isAdmin(user)) {
      throw new TaskError('roles', `user "${actor}" may not close task ${id}: only its user (${task.user}) or the role admin (admin.roles in mandate.yaml) may`);
    }
    return this.end(actor, task, 'closed');
  }

  /** Revokes a task: the role admin. Its tokens fail on their next request. */
  async revoke(actor: string, id: string, reason?: string): Promise<TaskRecord> {
    const user = await this.actor(actor);
    if (!this.isAdmin(user)) throw new TaskError('roles', `user "${actor}" may not revoke tasks: that needs the role admin (admin.roles in mandate.yaml)`);
    const why = reason === undefined ? null : text('reason', 'a reason', reason, 1000);
    return this.end(actor, await this.get(id), 'revoked', why);
  }

  private async end(actor: string, task: TaskRecord, status: 'closed' | 'revoked', reason: string | null = null): Promise<TaskRecord> {
    const at = this.now();
    if (task.status !== 'open') throw notOpen(task);
    if (task.expiresAt <= at) throw new TaskError('status', `task ${task.id} expired at ${iso(task.expiresAt)}: there is nothing to ${status === 'closed' ? 'close' : 'revoke'}`);
    if (!(await this.deps.store.tasks.end(task.id, status, actor, at))) throw notOpen(await this.get(task.id));
    const ended: TaskRecord = { ...task, status, endedAt: at, endedBy: actor };
    const extra: { [key: string]: JsonValue } = status === 'revoked' ? { reason } : {};
    await this.recorded(status === 'closed' ? 'task.closed' : 'task.revoked', actor, ended, `task ${task.id} is ${status}`, extra);
    return ended;
  }

  /** Tasks, newest first; open tasks past their expiry are marked expired first. */
  async list(options: { user?: string; status?: TaskStatus; limit?: number } = {}): Promise<TaskRecord[]> {
    await this.deps.store.tasks.expire(this.now());
    return this.deps.store.tasks.list(options);
  }

  async get(id: string): Promise<TaskRecord> {
    const task = await this.deps.store.tasks.get(id);
    if (task === null) throw new TaskError('unknown', `no task "${id}"`);
    return task;
  }

  /** Records the change's event; if it cannot be written, says that the change itself was made. */
  private async recorded(type: EventType, actor: string, task: TaskRecord, done: string, extra: { [key: string]: JsonValue } = {}): Promise<void> {
    try {
      await this.deps.audit.record({ type, actor, server: task.server, outcome: 'success', data: { ...eventData(task), ...extra } });
    } catch (error) {
      throw new Error(`${done}, but its audit event could not be written: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}

function notOpen(task: TaskRecord): TaskError {
  const by = task.endedBy === null ? '' : `, by ${task.endedBy}`;
  const at = task.endedAt === null ? '' : ` at ${iso(task.endedAt)}`;
  return new TaskError('status', `task ${task.id} is ${task.status} already${by}${at}: only an open task is closed or revoked`);
}
