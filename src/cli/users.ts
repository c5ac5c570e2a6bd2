/** `mandate users add | list | disable | enable`: local users and their scrypt password hashes. */
import { KEEP_MS } from '../identity/revocations.ts';
import { checkPassword, GROUP_NAME, hashPassword, MAX_PASSWORD_LENGTH, USER_NAME } from '../identity/users.ts';
import type { UserRecord } from '../store/types.ts';
import { readStdin, UsageError } from './common.ts';
import { clean, printJson, printLine, printTable } from './output.ts';
import { iso, when, withAdmin, type AdminFlags } from './clients.ts';

/** A user as shown: whether a password is set, never its hash. */
export function userView(user: UserRecord) {
  return {
    name: user.name,
    groups: user.groups,
    disabled: user.disabled,
    hasPassword: user.passwordHash !== null,
    createdAt: iso(user.createdAt),
    updatedAt: iso(user.updatedAt),
  };
}

export function parseUserName(name: string): string {
  if (!USER_NAME.test(name)) {
    throw new UsageError(`"${clean(name)}" is not a user name: 1 to 64 of a-z 0-9 . _ @ -, starting with a letter or digit`);
  }
  return name;
}

/** `--group` values, repeated or comma-separated; duplicates dropped, order kept. */
export function parseGroups(values: readonly string[] = []): string[] {
  const groups = values.flatMap((value) => value.split(',')).map((value) => value.trim()).filter(Boolean);
  for (const group of groups) {
    if (!GROUP_NAME.test(group)) throw new UsageError(`--group: "${clean(group)}" is not a group name: 1 to 128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit`);
  }
  return [...new Set(groups)];
}


/**
 * The terminal in raw mode (no echo) for the time of a few prompts. Raw mode
 * is on before any prompt is shown, and keystrokes are queued across prompts,
 * so nothing typed or pasted early is echoed or lost.
 */
function hiddenTerminal() {
  const input = process.stdin;
  const chars: string[] = [];
  let ended = false;
  let wake: (() => void) | null = null;
  const onData = (chunk: string) => {
    chars.push(...chunk);
    wake?.();
  };
  const onEnd = () => {
    ended = true;
    wake?.();
  };
  input.setRawMode(true);
  input.setEncoding('utf8');
  input.on('data', onData);
  input.once('end', onEnd);
  input.resume();
  let afterCR = false;
  return {
    async line(prompt: string): Promise<string> {
      process.stderr.write(prompt);
      let value = '';
      for (;;) {
        const ch = chars.shift();
        if (ch === undefined) {
          if (ended) throw new UsageError('standard input closed before a password was given');
          await new Promise<void>((resolve) => (wake = resolve));
          wake = null;
          continue;
        }
        const wasCR = afterCR;
        afterCR = ch === '\r';
        if (ch === '\n' && wasCR) continue; // the second half of a pasted CRLF
        if (ch === '\r' || ch === '\n') {
          process.stderr.write('\n');
          return value;
        }
        if (ch === '\u0003' || (ch === '\u0004' && value === '')) {
          process.stderr.write('\n');
          throw new UsageError('cancelled');
        }
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch === '\u0015') value = '';
        else if (ch >= ' ') value += ch;
      }
    },
    close(): void {
      input.off('data', onData);
      input.off('end', onEnd);
      input.setRawMode(false);
      input.pause();
    },
  };
}

async function readPassword(fromStdin: boolean): Promise<string> {
  let password: string;
  if (fromStdin) {
    password = (await readStdin(4 * MAX_PASSWORD_LENGTH + 2, 'a password')).replace(/\r?\n$/, '');
    if (/[\r\n]/.test(password)) throw new UsageError('the password on standard input spans several lines: give one line');
  } else if (process.stdin.isTTY) {
    const terminal = hiddenTerminal();
    try {
      password = await terminal.line('Password: ');
      const problem = checkPassword(password);
      if (problem) throw new UsageError(problem);
      if ((await terminal.line('Password again: ')) !== password) throw new UsageError('the passwords do not match');
    } finally {
      terminal.close();
    }
  } else {
    throw new UsageError('standard input is not a terminal: give --password-stdin and write the password to standard input');
  }
  const problem = checkPassword(password);
  if (problem) throw new UsageError(problem);
  return password;
}

export interface AddUserFlags extends AdminFlags {
  passwordStdin?: boolean;
  group?: string[];
}

export function addUser(nameArg: string, flags: AddUserFlags): Promise<number> {
  const name = parseUserName(nameArg);
  const groups = parseGroups(flags.group);
  return withAdmin(flags, async ({ store, record }) => {
    // Refused before asking for a password nobody would use.
    if (await store.identity.getUser(name)) throw new UsageError(`user "${name}" already exists`);
    const password = await readPassword(flags.passwordStdin === true);
    const now = Date.now();
    try {
      await store.identity.createUser({ name, passwordHash: await hashPassword(password), groups, disabled: false, createdAt: now, updatedAt: now });
    } catch (error) {
      // Added by someone else meanwhile: the store says so with a plain Error.
      if (await store.identity.getUser(name).catch(() => null)) throw new UsageError(`user "${name}" already exists`);
      throw error;
    }
    await record('user.added', { user: name, groups }, `user "${name}" was added`);
    const user = await store.identity.getUser(name);
    if (flags.json) printJson(user ? userView(user) : { name, groups, disabled: false, hasPassword: true });
    else printLine(`added user ${name}${groups.length ? ` (groups: ${groups.join(', ')})` : ''}`);
    return 0;
  });
}

export function listUsers(flags: AdminFlags): Promise<number> {
  return withAdmin(flags, async ({ store }) => {
    const users = await store.identity.listUsers();
    if (flags.json) printJson(users.map(userView));
    else {
      printTable(
        ['NAME', 'STATUS', 'PASSWORD', 'GROUPS', 'CREATED'],
        users.map((u) => [u.name, u.disabled ? 'disabled' : 'active', u.passwordHash !== null ? 'yes' : 'no', u.groups.join(',') || '-', when(u.createdAt)]),
        'no users',
      );
    }
    return 0;
  });
}

export function setUserDisabled(nameArg: string, disabled: boolean, flags: AdminFlags): Promise<number> {
  const name = parseUserName(nameArg);
  return withAdmin(flags, async ({ store, record }) => {
    const before = await store.identity.getUser(name);
    if (!before) throw new UsageError(`no user "${name}" (see \`mandate users list\`)`);
    if (before.disabled === disabled) throw new UsageError(`user "${name}" is already ${disabled ? 'disabled' : 'enabled'}`);
    const now = Date.now();
    if (!(await store.identity.setUserDisabled(name, disabled, now))) throw new UsageError(`no user "${name}"`);
    // Disabling ends every token issued for the user so far, at once; enabling does not bring them back.
    const revocation = disabled
      ? await store.identity.addRevocation({ kind: 'user', value: name, revokedAt: now, expiresAt: now + KEEP_MS.user }).catch((error: unknown) => {
          throw new Error(`user "${name}" is disabled, but their tokens could not be revoked (run \`mandate tokens revoke --user ${name}\`): ${error instanceof Error ? error.message : String(error)}`);
        })
      : null;
    await record(disabled ? 'user.disabled' : 'user.enabled', { user: name }, `user "${name}" was ${disabled ? 'disabled' : 'enabled'}`);
    const user = (await store.identity.getUser(name)) ?? { ...before, disabled, updatedAt: now };
    if (flags.json) {
      printJson(revocation ? { ...userView(user), revocation: { kind: revocation.kind, value: revocation.value, revokedAt: iso(revocation.revokedAt), expiresAt: iso(revocation.expiresAt) } } : userView(user));
    } else if (disabled) {
      printLine(`disabled user ${name}: they cannot log in, and every token issued for them is refused`);
    } else {
      printLine(`enabled user ${name}: they can log in again (tokens revoked earlier stay revoked)`);
    }
    return 0;
  });
}
