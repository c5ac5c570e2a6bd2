/**
 * A refusal by a named rule (a role, an admission rule, the two-person rule…):
 * the message says what was refused and why, in words; `rule` names the rule
 * for scripts and the admin API. The catalog and break-glass services each
 * throw their own subclass.
 */
import { SERVER_NAME } from '../config/schema.ts';

export class RuleError extends Error {
  override readonly name: string = 'RuleError';
  /** The rule that refused it (`roles`, `admission.requireOwner`, `breakglass.maxTtlSeconds`…). */
  readonly rule: string;
  constructor(rule: string, message: string) {
    super(message);
    this.rule = rule;
  }
}

/** What an access grant's checks say of it: "break-glass access" needs a ticket, "a task" lasts at most… */
export interface GrantWords {
  /** The end of "…is required: NEEDS". */
  needs: string;
  /** The start of "LASTS lasts more than 0 and at most …". */
  lasts: string;
  /** The setting that bounds its lifetime. */
  ttlRule: string;
}

/**
 * Checks of what an administrator typed for an access grant (break-glass,
 * tasks): each refusal is `refuse(rule, message)`, the service's own
 * RuleError.
 */
export function grantInputs(refuse: (rule: string, message: string) => RuleError, words: GrantWords) {
  /** A value someone typed: 1 to `max` printable characters, not only spaces. */
  const text = (rule: string, label: string, value: string | undefined, max: number): string => {
    if (value === undefined || value.trim() === '') throw refuse(rule, `${label} is required: ${words.needs}`);
    if (value.length > max || /[\p{Cc}\p{Cf}]/u.test(value)) throw refuse(rule, `${label} takes 1 to ${max} printable characters`);
    return value;
  };
  return {
    text,
    server(value: string): string {
      if (!SERVER_NAME.test(value)) throw refuse('server', `server "${value}" is not a server name (lowercase letters, digits and hyphens, at most 63)`);
      return value;
    },
    tools(values: readonly string[] = []): string[] {
      return [...new Set(values.map((tool) => text('tools', 'a tool name', tool, 200)))];
    },
    ttl(seconds: number, max: number): number {
      if (!(seconds > 0 && seconds <= max)) throw refuse(words.ttlRule, `${words.lasts} lasts more than 0 and at most ${max} seconds (${words.ttlRule}), not ${seconds}`);
      return seconds;
    },
  };
}
