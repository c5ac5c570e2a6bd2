/**
 * Reading a policy directory: every `*.cedar` file (policies) and every
 * `*.cedarschema` file (declarations added to Mandate's schema), parsed and
 * validated against the schema as one set. A set with any problem is refused
 * as a whole, each problem named by file, line and column.
 *
 * Cedar does the parsing and validation; this module only splits files into
 * policies, names them, and maps Cedar's positions back to files and lines.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { analyse, type PolicyFacts } from './analyse.ts';

export const BASE_SCHEMA_PATH = new URL('./mandate.cedarschema', import.meta.url);

/** Mandate's own schema (src/policy/mandate.cedarschema), without a deployment's additions. */
export function baseSchema(): string {
  return readFileSync(BASE_SCHEMA_PATH, 'utf8');
}

export interface Problem {
  /** The file, relative to the policy directory; null for the directory itself. */
  file: string | null;
  line: number | null;
  column: number | null;
  message: string;
  /** The policy the problem is in, when known. */
  policy?: string;
}

export class PolicySetError extends Error {
  readonly problems: readonly Problem[];
  constructor(problems: readonly Problem[]) {
    super(problems.map(describeProblem).join('\n'));
    this.name = 'PolicySetError';
    this.problems = problems;
  }
}

export function describeProblem(problem: Problem): string {
  const where = problem.file === null ? '' : problem.line === null ? `${problem.file}: ` : `${problem.file}:${problem.line}:${problem.column ?? 1}: `;
  return `${where}${problem.message}`;
}

export interface LoadedPolicy extends PolicyFacts {
  /** `@id("…")`, else FILE:LINE. */
  id: string;
  file: string;
  line: number;
  column: number;
  text: string;
  json: cedar.PolicyJson;
}

export interface PolicySource {
  /** Directory the set was read from (for messages). */
  dir: string;
  /** SHA-256 (hex) over every file's name and content, in name order. */
  hash: string;
  /** The schema the set was validated against: Mandate's plus the directory's additions. */
  schema: string;
  policies: readonly LoadedPolicy[];
  /** Cedar's warnings (the set is still accepted). */
  warnings: readonly Problem[];
  files: readonly string[];
}

interface FileText {
  name: string;
  text: string;
}

/** The offsets where each line of the last text asked about starts (a file's policies are placed one after another). */
let indexed: { text: string; starts: number[] } | null = null;

/** Line and column (1-based) of a character offset. */
function position(text: string, offset: number): { line: number; column: number } {
  if (indexed?.text !== text) {
    const starts = [0];
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) starts.push(i + 1);
    indexed = { text, starts };
  }
  const { starts } = indexed;
  const at = Math.min(Math.max(0, offset), text.length);
  let low = 0;
  let high = starts.length - 1;
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    if ((starts[mid] as number) <= at) low = mid;
    else high = mid - 1;
  }
  return { line: low + 1, column: at - (starts[low] as number) + 1 };
}

function cedarMessage(error: cedar.DetailedError): string {
  return error.help ? `${error.message} (${error.help})` : error.message;
}

/** Cedar's error in a file, placed at its first source location. */
function placed(file: FileText, error: cedar.DetailedError): Problem {
  const at = error.sourceLocations?.[0];
  const where = at ? position(file.text, at.start) : null;
  return { file: file.name, line: where?.line ?? null, column: where?.column ?? null, message: cedarMessage(error) };
}

/** A policy directory's files as read, and their hash (what a set loaded from them would report). */
export interface PolicyFiles {
  dir: string;
  policies: FileText[];
  schemas: FileText[];
  /** SHA-256 (hex) over every file's name and content, in name order. */
  hash: string;
}

/** Reads a policy directory's `*.cedar` and `*.cedarschema` files (nothing parsed yet); throws PolicySetError when it cannot. */
export function readPolicyDir(dir: string): PolicyFiles {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new PolicySetError([{ file: null, line: null, column: null, message: `${dir} is not a directory` }]);
    names = readdirSync(dir).sort();
  } catch (error) {
    if (error instanceof PolicySetError) throw error;
    throw new PolicySetError([{ file: null, line: null, column: null, message: `cannot read the policy directory ${dir}: ${(error as Error).message}` }]);
  }
  const problems: Problem[] = [];
  const read = (name: string): FileText[] => {
    try {
      return [{ name, text: readFileSync(join(dir, name), 'utf8') }];
    } catch (error) {
      problems.push({ file: name, line: null, column: null, message: `cannot read it: ${(error as Error).message}` });
      return [];
    }
  };
  const policies = names.filter((name) => name.endsWith('.cedar')).flatMap(read);
  const schemas = names.filter((name) => name.endsWith('.cedarschema')).flatMap(read);
  if (problems.length > 0) throw new PolicySetError(problems);
  return { dir, policies, schemas, hash: hashOf([...policies, ...schemas]) };
}

/** Mandate's schema plus the directory's declarations; `type Args = {}` unless they declare Args. */
function effectiveSchema(additions: readonly FileText[], problems: Problem[]): string {
  let declaresArgs = false;
  for (const file of additions) {
    const parsed = cedar.schemaToJson(file.text);
    if (parsed.type === 'failure') {
      problems.push(...parsed.errors.map((error) => placed(file, error)));
      continue;
    }
    if (Object.values(parsed.json).some((ns) => ns.commonTypes && 'Args' in ns.commonTypes)) declaresArgs = true;
  }
  return [baseSchema(), ...additions.map((file) => `// ${file.name}\n${file.text}`), declaresArgs ? '' : 'type Args = {};'].join('\n');
}

/** Splits one file into policies, each named and placed. */
function splitFile(file: FileText, problems: Problem[], seen: Map<string, LoadedPolicy>): LoadedPolicy[] {
  // One parse: Cedar splits the file into its policies, or says where it could not.
  const parts = cedar.policySetTextToParts(file.text);
  if (parts.type === 'failure') {
    problems.push(...parts.errors.map((error) => placed(file, error)));
    return [];
  }
  let cursor = 0;
  for (const template of parts.policy_templates) {
    const offset = file.text.indexOf(template);
    const where = position(file.text, offset < 0 ? 0 : offset);
    problems.push({ file: file.name, line: where.line, column: where.column, message: 'policy templates (?principal, ?resource) are not supported; write a static policy' });
  }
  const out: LoadedPolicy[] = [];
  for (const text of parts.policies) {
    const offset = file.text.indexOf(text, cursor);
    const start = offset < 0 ? cursor : offset;
    if (offset >= 0) cursor = offset + text.length;
    const where = position(file.text, start);
    const json = cedar.policyToJson(text);
    if (json.type === 'failure') {
      problems.push({ file: file.name, line: where.line, column: where.column, message: json.errors.map(cedarMessage).join('; ') });
      continue;
    }
    const annotated = json.json.annotations?.id;
    const id = annotated !== undefined && annotated !== '' ? annotated : `${file.name}:${where.line}`;
    const earlier = seen.get(id);
    if (earlier !== undefined) {
      problems.push({ file: file.name, line: where.line, column: where.column, message: `policy id "${id}" is already used at ${earlier.file}:${earlier.line}`, policy: id });
      continue;
    }
    const policy: LoadedPolicy = { id, file: file.name, line: where.line, column: where.column, text, json: json.json, ...analyse(json.json) };
    seen.set(id, policy);
    out.push(policy);
  }
  return out;
}

function hashOf(files: readonly FileText[]): string {
  const hash = createHash('sha256');
  for (const file of [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    hash.update(file.name).update('\0').update(file.text).update('\0');
  }
  return hash.digest('hex');
}

/** Reads, parses and validates a policy directory; throws PolicySetError listing every problem. */
export function loadPolicyDir(dir: string): PolicySource {
  return loadPolicyFiles(readPolicyDir(dir));
}

/** The same for texts already in memory (tests, `policy explain`). */
export function loadPolicyTexts(dir: string, policyFiles: readonly FileText[], schemaFiles: readonly FileText[] = []): PolicySource {
  return loadPolicyFiles({ dir, policies: [...policyFiles], schemas: [...schemaFiles], hash: hashOf([...policyFiles, ...schemaFiles]) });
}

/** Parses and validates files read by readPolicyDir. */
export function loadPolicyFiles(files: PolicyFiles): PolicySource {
  const { dir, policies: policyFiles, schemas: schemaFiles } = files;
  const problems: Problem[] = [];
  const schema = effectiveSchema(schemaFiles, problems);
  const seen = new Map<string, LoadedPolicy>();
  const policies = policyFiles.flatMap((file) => splitFile(file, problems, seen));
  if (problems.length > 0) throw new PolicySetError(problems);

  const warnings: Problem[] = [];
  if (policies.length > 0) {
    const staticPolicies: Record<string, string> = {};
    for (const policy of policies) staticPolicies[policy.id] = policy.text;
    const answer = cedar.validate({ schema, policies: { staticPolicies } });
    if (answer.type === 'failure') {
      throw new PolicySetError(answer.errors.map((error) => ({ file: null, line: null, column: null, message: `the schema: ${cedarMessage(error)}` })));
    }
    const place = (policyId: string, error: cedar.DetailedError): Problem => {
      const policy = seen.get(policyId);
      if (policy === undefined) return { file: null, line: null, column: null, message: cedarMessage(error), policy: policyId };
      const at = error.sourceLocations?.[0];
      const inner = at ? position(policy.text, at.start) : { line: 1, column: 1 };
      return {
        file: policy.file,
        line: policy.line + inner.line - 1,
        column: inner.line === 1 ? policy.column + inner.column - 1 : inner.column,
        message: cedarMessage(error),
        policy: policyId,
      };
    };
    const errors = answer.validationErrors.map((entry) => place(entry.policyId, entry.error));
    // Cedar reports one mistake once per action it applies to (naming the action): keep the first per place.
    const unique = [...new Map(errors.map((problem) => [`${problem.policy}\0${problem.file}:${problem.line}:${problem.column}`, problem])).values()];
    if (unique.length > 0) throw new PolicySetError(unique);
    for (const entry of answer.validationWarnings) warnings.push(place(entry.policyId, entry.error));
    for (const error of answer.otherWarnings) warnings.push({ file: null, line: null, column: null, message: cedarMessage(error) });
  }
  return { dir, hash: files.hash, schema, policies, warnings, files: [...policyFiles, ...schemaFiles].map((file) => file.name) };
}
