/**
 * A refusal by a named rule (a role, an admission rule, the two-person rule…):
 * the message says what was refused and why, in words; `rule` names the rule
 * for scripts and the admin API. The catalog and break-glass services each
 * throw their own subclass.
 */
export class RuleError extends Error {
  override readonly name: string = 'RuleError';
  /** The rule that refused it (`roles`, `admission.requireOwner`, `breakglass.maxTtlSeconds`…). */
  readonly rule: string;
  constructor(rule: string, message: string) {
    super(message);
    this.rule = rule;
  }
}
