/**
 * `mandate policy validate | test | explain | schema | reload`: the policy
 * set as an admin works on it. Every command but `reload` reads a policy
 * directory itself (the configured one unless told another) and needs no
 * gateway; `reload` asks the gateway serving a data directory to re-read
 * its own.
 *
 * Exit codes: 0 done (valid, every case as expected, the set in force);
 * 1 the set is invalid, a case is not as expected, or the gateway refused
 * or did not answer; 2 bad usage (a flag, a cases file that is not valid).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { isMap, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import { z } from 'zod';
import { loadConfig } from '../config/load.ts';
import { PolicyEngine, type Decision } from '../policy/engine.ts';
import { loadPolicyDir, loadPolicyTexts, PolicySetError, type PolicySource, type Problem } from '../policy/load.ts';
import { isDecided, toCedar, type ClientFacts, type DecisionRequest, type Principal, type Target, type TargetType, type ToolHints } from '../policy/request.ts';
import { UsageError } from './common.ts';
import { clean, printJson, printLine, printNote } from './output.ts';
import { askGateway, controlDataDir, describePolicy, problemIn, type PolicyOutcome } from './reload.ts';

export interface DirFlags {
  /** Configuration file naming the policy directory (`policies:`). */
  config?: string;
  /** Data directory: the policy directory is DATA/policies when the configuration names none. */
  data?: string;
  json?: boolean;
}

export interface SetFlags extends DirFlags {
  /** The policy directory, instead of the configured one. */
  policies?: string;
}

/** The client a user's case or explanation calls through when none is named. */
const TEST_CLIENT = 'test-client';

// ---------------------------------------------------------------- the policy directory

interface Directory {
  /** As given, or the configured one (absolute): what messages name. */
  shown: string;
  dir: string;
  /** The data directory's default (the configuration names none): the gateway writes the starter set there on first start. */
  isDefault: boolean;
}

/** The directory given (a DIR argument or --policies), else the one the configuration names, else DATA/policies. */
function directory(flags: DirFlags, given: string | undefined): Directory {
  if (given !== undefined) {
    if (given === '') throw new UsageError('the policy directory must not be empty');
    return { shown: given, dir: path.resolve(given), isDefault: false };
  }
  const config = loadConfig({ config: flags.config, data: flags.data });
  return { shown: config.policies, dir: config.policies, isDefault: !config.policiesConfigured };
}

/** Why a directory that does not exist has no set, when it is the default one. */
function missingNote(where: Directory): string | null {
  if (!where.isDefault || existsSync(where.dir)) return null;
  return `${where.dir} does not exist yet: the gateway writes the starter set there on its first start (or set \`policies:\` in the configuration, or name a directory)`;
}

type Loaded = { ok: true; source: PolicySource } | { ok: false; problems: readonly Problem[] };

function load(where: Directory): Loaded {
  try {
    return { ok: true, source: loadPolicyDir(where.dir) };
  } catch (error) {
    if (error instanceof PolicySetError) return { ok: false, problems: error.problems };
    throw error;
  }
}

const count = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/** For commands that need a valid set: says why there is none (stderr, or JSON on stdout) and gives exit 1. */
function refuseSet(where: Directory, problems: readonly Problem[], json: boolean | undefined): number {
  if (json) {
    printJson({ ok: false, dir: where.dir, problems });
    return 1;
  }
  printNote(`mandate: the policy set in ${where.shown} is not valid (${count(problems.length, 'problem', 'problems')}; check it with \`mandate policy validate\`):`);
  for (const problem of problems) printNote(`  ${problemIn(where.shown, problem)}`);
  const note = missingNote(where);
  if (note !== null) printNote(`  ${note}`);
  return 1;
}

// ---------------------------------------------------------------- validate

export function validate(given: string | undefined, flags: DirFlags): number {
  const where = directory(flags, given);
  const loaded = load(where);
  if (flags.json) {
    if (loaded.ok) {
      const { source } = loaded;
      printJson({ ok: true, dir: where.dir, sha256: source.hash, policies: source.policies.length, files: source.files, warnings: source.warnings });
    } else printJson({ ok: false, dir: where.dir, problems: loaded.problems });
    return loaded.ok ? 0 : 1;
  }
  if (!loaded.ok) {
    printLine(`${where.shown}: not valid, ${count(loaded.problems.length, 'problem', 'problems')}`);
    for (const problem of loaded.problems) printLine(problemIn(where.shown, problem));
    const note = missingNote(where);
    if (note !== null) printNote(`mandate: ${note}`);
    return 1;
  }
  const { source } = loaded;
  printLine(`${where.shown}: ${count(source.policies.length, 'policy', 'policies')} valid (sha256 ${source.hash})`);
  if (source.policies.length === 0) printLine('warning: the set has no policy: every request is denied');
  for (const warning of source.warnings) printLine(`warning: ${problemIn(where.shown, warning)}`);
  return 0;
}

// ---------------------------------------------------------------- the actions the schema declares

interface ActionShape {
  principalTypes: readonly string[];
  resourceTypes: readonly string[];
}

/** The actions of the set's schema (Mandate's and the directory's), by id. */
function actionsOf(source: PolicySource): ReadonlyMap<string, ActionShape> {
  const parsed = cedar.schemaToJson(source.schema);
  const actions = new Map<string, ActionShape>();
  if (parsed.type !== 'success') return actions;
  for (const [id, action] of Object.entries(parsed.json['']?.actions ?? {})) {
    actions.set(id, { principalTypes: action.appliesTo?.principalTypes ?? [], resourceTypes: action.appliesTo?.resourceTypes ?? [] });
  }
  return actions;
}

/**
 * Whether a method can be decided on a principal and resource type; a
 * message saying why not, else null. A method the schema does not declare
 * is decided on its Server, as the gateway does.
 */
function actionProblem(actions: ReadonlyMap<string, ActionShape>, method: string, principal: string, resource: TargetType): string | null {
  if (!isDecided(method)) return `"${method}" is never decided by policy (initialize, ping and notifications are not)`;
  const shape = actions.get(method);
  if (shape === undefined) return resource === 'Server' ? null : `"${method}" is not in the schema: the gateway decides such a method on its Server, not on a ${resource}`;
  if (shape.resourceTypes.length === 0) return `"${method}" is an action group: name one MCP method (an action in the group)`;
  if (!shape.principalTypes.includes(principal)) return `"${method}" does not apply to a ${principal} principal (only ${shape.principalTypes.join(', ')})`;
  if (!shape.resourceTypes.includes(resource)) return `"${method}" is decided on a ${shape.resourceTypes.join(' or ')}, not a ${resource}`;
  return null;
}

// ---------------------------------------------------------------- entity literals

const ENTITY = /^([A-Za-z_][A-Za-z0-9_]*)::"((?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*)"$/;

/** `TYPE::"ID"` (ID with JSON string escapes) as its type and id; null when it is not one. */
export function parseEntity(text: string): { type: string; id: string } | null {
  const match = ENTITY.exec(text);
  if (match === null) return null;
  return { type: match[1] as string, id: JSON.parse(`"${match[2] as string}"`) as string };
}

const literal = (type: string, id: string) => `${type}::${JSON.stringify(id)}`;

/** An entity literal of one of `types`, with a non-empty id. */
function entityOf(types: readonly string[]) {
  return z.string().transform((text, ctx) => {
    const entity = parseEntity(text);
    if (entity === null) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not an entity literal such as ${types[0]}::"id"` });
      return z.NEVER;
    }
    if (!types.includes(entity.type)) {
      ctx.addIssue({ code: 'custom', message: `a ${entity.type} cannot be here: expected ${types.join(', ')}` });
      return z.NEVER;
    }
    if (entity.id === '') {
      ctx.addIssue({ code: 'custom', message: 'the id is empty' });
      return z.NEVER;
    }
    return entity as { type: TargetType | 'User' | 'Client'; id: string };
  });
}

// ---------------------------------------------------------------- test

const hintsSchema = z.strictObject({
  readOnlyHint: z.boolean().optional(),
  destructiveHint: z.boolean().optional(),
  idempotentHint: z.boolean().optional(),
  openWorldHint: z.boolean().optional(),
});

const caseSchema = z.strictObject({
  name: z.string().min(1).optional(),
  principal: entityOf(['User', 'Client']),
  groups: z.array(z.string().min(1)).optional(),
  client: entityOf(['Client']).optional(),
  clientName: z.string().optional(),
  clientOwner: z.string().min(1).optional(),
  clientKind: z.enum(['interactive', 'machine', 'anonymous']).optional(),
  action: z.string().min(1),
  resource: entityOf(['Server', 'Tool', 'Prompt', 'Resource']),
  hints: hintsSchema.optional(),
  context: z
    .strictObject({
      args: z.record(z.string(), z.unknown()).optional(),
      scopes: z.array(z.string()).optional(),
      sourceAddress: z.string().refine((address) => isIP(address) !== 0, 'not an IPv4 or IPv6 address').optional(),
      tokenAge: z.number().int().nonnegative().optional(),
      now: z.iso.datetime({ offset: true }).optional(),
    })
    .optional(),
  expect: z.enum(['allow', 'deny']),
  policies: z.array(z.string().min(1)).optional(),
});

type CaseInput = z.infer<typeof caseSchema>;

interface TestCase {
  file: string;
  /** 1-based position in its file. */
  index: number;
  line: number;
  name: string | null;
  request: DecisionRequest;
  expect: 'allow' | 'deny';
  policies: readonly string[] | null;
}

interface CaseProblem {
  file: string;
  line: number | null;
  /** 1-based; null for the file as a whole. */
  case: number | null;
  message: string;
}

/** Where `path` is in the item, else the item, as a 1-based line. */
function lineOf(doc: Document, lines: LineCounter, index: number, at: readonly PropertyKey[]): number | null {
  for (let depth = at.length; depth >= 0; depth--) {
    const node = doc.getIn([index, ...at.slice(0, depth)], true) as YamlNode | undefined;
    const offset = node?.range?.[0];
    if (typeof offset === 'number') return lines.linePos(offset).line;
  }
  return null;
}

/** A case as the decision request it stands for; the message of what does not fit, else the request. */
function requestOf(input: CaseInput, actions: ReadonlyMap<string, ActionShape>, now: number): DecisionRequest | { problem: string; at: string[] } {
  const isUser = input.principal.type === 'User';
  if (!isUser && input.groups !== undefined) return { problem: 'only a User principal has groups', at: ['groups'] };
  if (!isUser && input.client !== undefined && input.client.id !== input.principal.id) {
    return { problem: 'a Client principal calls as itself: leave client out, or name the same client', at: ['client'] };
  }
  const principal: Principal = isUser ? { type: 'User', id: input.principal.id, groups: input.groups ?? [] } : { type: 'Client', id: input.principal.id };
  const clientId = isUser ? (input.client?.id ?? TEST_CLIENT) : input.principal.id;
  const client: ClientFacts = { id: clientId, name: input.clientName ?? clientId, owner: input.clientOwner ?? null, kind: input.clientKind ?? (isUser ? 'interactive' : 'machine') };

  const { type, id } = input.resource;
  let server: string;
  let target: Target;
  if (type === 'Server') {
    server = id;
    target = { type: 'Server', name: id };
  } else {
    const slash = id.indexOf('/');
    if (slash <= 0 || slash === id.length - 1) return { problem: `a ${type} id is "SERVER/NAME" (got ${JSON.stringify(id)})`, at: ['resource'] };
    server = id.slice(0, slash);
    target = { type: type as TargetType, name: id.slice(slash + 1) };
  }
  const wrong = actionProblem(actions, input.action, input.principal.type, target.type);
  if (wrong !== null) return { problem: wrong, at: ['action'] };
  if (input.hints !== undefined && target.type !== 'Tool') return { problem: 'only a Tool has hints', at: ['hints'] };
  const context = input.context ?? {};
  if (context.args !== undefined && input.action !== 'tools/call') return { problem: 'only tools/call has arguments', at: ['context', 'args'] };

  return {
    principal,
    client,
    method: input.action,
    server,
    target,
    // The case states what the upstream declares: no hints given is none declared.
    ...(target.type === 'Tool' ? { hints: (input.hints ?? {}) as ToolHints } : {}),
    scopes: context.scopes ?? [],
    args: context.args ?? {},
    now: context.now !== undefined ? Date.parse(context.now) : now,
    tokenAge: context.tokenAge ?? 0,
    sourceAddress: context.sourceAddress ?? '127.0.0.1',
  };
}

/** Reads one cases file: its cases, or what is wrong with it. */
function readCases(file: string, actions: ReadonlyMap<string, ActionShape>, now: number): { cases: TestCase[]; problems: CaseProblem[] } {
  const problems: CaseProblem[] = [];
  const cases: TestCase[] = [];
  let text: string;
  try {
    if (statSync(file).isDirectory()) return { cases, problems: [{ file, line: null, case: null, message: 'is a directory, not a cases file' }] };
    text = readFileSync(file, 'utf8');
  } catch (error) {
    return { cases, problems: [{ file, line: null, case: null, message: `cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})` }] };
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    for (const error of doc.errors) {
      const offset = error.pos[0];
      problems.push({ file, line: lines.linePos(offset).line, case: null, message: `not valid YAML: ${error.message.split('\n')[0] ?? ''}` });
    }
    return { cases, problems };
  }
  if (!isSeq(doc.contents)) {
    return { cases, problems: [{ file, line: null, case: null, message: 'a cases file is a YAML list of cases (- principal: …, action: …, resource: …, expect: allow|deny)' }] };
  }
  const items = doc.contents.items;
  if (items.length === 0) return { cases, problems: [{ file, line: null, case: null, message: 'has no cases' }] };
  const values = doc.toJS({ maxAliasCount: 100 }) as unknown[];
  items.forEach((item, i) => {
    const index = i + 1;
    const itemLine = lineOf(doc, lines, i, []) ?? null;
    if (!isMap(item)) {
      problems.push({ file, line: itemLine, case: index, message: 'a case is a mapping (principal: …, action: …, resource: …, expect: …)' });
      return;
    }
    const parsed = caseSchema.safeParse(values[i]);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const where = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '');
        // An unknown key is placed on its own line.
        const at = issue.code === 'unrecognized_keys' && issue.keys.length > 0 ? [...issue.path, issue.keys[0] as string] : issue.path;
        problems.push({ file, line: lineOf(doc, lines, i, at), case: index, message: where === '' ? issue.message : `${where}: ${issue.message}` });
      }
      return;
    }
    const request = requestOf(parsed.data, actions, now);
    if ('problem' in request) {
      problems.push({ file, line: lineOf(doc, lines, i, request.at), case: index, message: `${request.at.join('.')}: ${request.problem}` });
      return;
    }
    cases.push({ file, index, line: itemLine ?? 1, name: parsed.data.name ?? null, request, expect: parsed.data.expect, policies: parsed.data.policies ?? null });
  });
  return { cases, problems };
}

function describeCaseProblem(problem: CaseProblem): string {
  const where = problem.line === null ? problem.file : `${problem.file}:${problem.line}`;
  return `${where}: ${problem.case === null ? '' : `case ${problem.case}: `}${problem.message}`;
}

const sameSet = (a: readonly string[], b: readonly string[]) => new Set(a).size === new Set(b).size && a.every((id) => b.includes(id));

/** Policy ids with where each is (`id (file:line)`); an id the set does not have is marked. */
function placed(source: PolicySource, ids: readonly string[]): string {
  if (ids.length === 0) return 'none';
  return ids
    .map((id) => {
      const policy = source.policies.find((p) => p.id === id);
      return policy === undefined ? `${id} (no such policy in the set)` : `${id} (${policy.file}:${policy.line})`;
    })
    .join(', ');
}

export function test(files: string[], flags: SetFlags): number {
  if (files.length === 0) throw new UsageError('name at least one cases file');
  const where = directory(flags, flags.policies);
  const loaded = load(where);
  if (!loaded.ok) return refuseSet(where, loaded.problems, flags.json);
  const { source } = loaded;
  const actions = actionsOf(source);
  const now = Date.now();

  const cases: TestCase[] = [];
  const problems: CaseProblem[] = [];
  for (const file of files) {
    const read = readCases(file, actions, now);
    cases.push(...read.cases);
    problems.push(...read.problems);
  }
  if (problems.length > 0) {
    if (flags.json) printJson({ ok: false, dir: where.dir, problems });
    else {
      printNote(`mandate: ${count(problems.length, 'problem', 'problems')} in the cases; nothing was run:`);
      for (const problem of problems) printNote(`  ${describeCaseProblem(problem)}`);
    }
    return 2;
  }

  const engine = new PolicyEngine(source);
  const results = cases.map((testCase) => {
    const decision = engine.decide(testCase.request);
    const decisionMatches = decision.allow === (testCase.expect === 'allow');
    const policiesMatch = testCase.policies === null || sameSet(testCase.policies, decision.policies);
    return { testCase, decision, pass: decisionMatches && policiesMatch };
  });
  engine.dispose();
  const failed = results.filter((result) => !result.pass);

  if (flags.json) {
    printJson({
      ok: failed.length === 0,
      dir: where.dir,
      sha256: source.hash,
      cases: results.length,
      failed: failed.length,
      results: results.map(({ testCase, decision, pass }) => ({
        file: testCase.file,
        line: testCase.line,
        case: testCase.index,
        name: testCase.name,
        pass,
        expected: { decision: testCase.expect, policies: testCase.policies },
        actual: { decision: decision.allow ? 'allow' : 'deny', policies: decision.policies, error: decision.error },
      })),
    });
    return failed.length === 0 ? 0 : 1;
  }

  for (const { testCase, decision, pass } of results) {
    const label = `${testCase.file}:${testCase.line}: case ${testCase.index}${testCase.name === null ? '' : ` (${testCase.name})`}`;
    if (pass) {
      // Denied as expected, but because a policy could not be evaluated: worth knowing.
      if (decision.error !== null) printLine(`warning: ${label}: ${decision.error}`);
      continue;
    }
    const by = (ids: readonly string[]) => ` by ${ids.length === 0 ? 'no policy' : ids.join(', ')}`;
    const expected = `${testCase.expect}${testCase.policies === null ? '' : by(testCase.policies)}`;
    printLine(`FAIL ${label}: expected ${expected}, got ${decision.allow ? 'allow' : 'deny'}${by(decision.policies)}`);
    if (testCase.policies !== null) printLine(`  expected policies:    ${testCase.policies.length === 0 ? 'none (default deny)' : placed(source, testCase.policies)}`);
    printLine(`  determining policies: ${decision.policies.length === 0 ? (decision.allow ? 'none' : 'none (default deny)') : placed(source, decision.policies)}`);
    if (decision.error !== null) printLine(`  error: ${decision.error}`);
  }
  printLine(`${count(results.length, 'case', 'cases')}, ${failed.length} failed (policy set ${where.shown}, sha256 ${source.hash})`);
  return failed.length === 0 ? 0 : 1;
}

// ---------------------------------------------------------------- explain

export interface ExplainFlags extends SetFlags {
  user?: string;
  group?: string[];
  client?: string;
  server: string;
  tool?: string;
  method?: string;
  target?: string;
  args?: string;
  scope?: string[];
}

const URI_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/** --args: a JSON object. */
function parseArgs(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`--args: not valid JSON (${(error as Error).message}); give a JSON object, e.g. --args '{"path":"/srv/a.txt"}'`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError('--args: give a JSON object (the tool\'s arguments), e.g. --args \'{"path":"/srv/a.txt"}\'');
  return value as Record<string, unknown>;
}

function splitList(values: readonly string[] | undefined): string[] {
  return (values ?? []).flatMap((value) => value.split(',')).map((value) => value.trim()).filter((value) => value !== '');
}

/** What the flags ask about, as a decision request. */
function explainRequest(flags: ExplainFlags, actions: ReadonlyMap<string, ActionShape>): DecisionRequest {
  const groups = splitList(flags.group);
  if (flags.user === '') throw new UsageError('--user: give a user name');
  if (flags.client === '') throw new UsageError('--client: give a client id');
  if (flags.server === '') throw new UsageError('--server: give a server name');
  let principal: Principal;
  let client: ClientFacts;
  if (flags.user !== undefined) {
    principal = { type: 'User', id: flags.user, groups };
    const id = flags.client ?? TEST_CLIENT;
    client = { id, name: id, owner: null, kind: 'interactive' };
  } else if (flags.client !== undefined) {
    if (groups.length > 0) throw new UsageError('--group: only a user has groups (give --user NAME)');
    principal = { type: 'Client', id: flags.client };
    client = { id: flags.client, name: flags.client, owner: null, kind: 'machine' };
  } else {
    throw new UsageError("give --user NAME (a user's call, through --client ID or a test client) or --client ID alone (a machine client's call)");
  }

  if (flags.tool !== undefined && flags.method !== undefined) throw new UsageError('give --tool TOOL (a tools/call) or --method METHOD, not both');
  if (flags.tool !== undefined && flags.target !== undefined) throw new UsageError('--target goes with --method; --tool already names the target');
  const method = flags.tool !== undefined ? 'tools/call' : flags.method;
  if (method === undefined || method === '') throw new UsageError('give --tool TOOL (a tools/call) or --method METHOD (tools/list, prompts/get, resources/read…)');
  const name = flags.tool ?? flags.target;

  const shape = actions.get(method);
  const types = shape?.resourceTypes.filter((type): type is TargetType => type !== 'Server') ?? [];
  let target: Target;
  if (types.length === 0) {
    if (name !== undefined) throw new UsageError(`--target: ${method} is decided on its server; leave --target out`);
    target = { type: 'Server', name: flags.server };
  } else {
    if (name === undefined || name === '') throw new UsageError(`--target: ${method} is decided on a ${types.join(' or ')}: name it with --target NAME`);
    // completion/complete completes a prompt's or a resource template's argument: a URI names a resource.
    const type = types.length === 1 ? (types[0] as TargetType) : types.includes('Resource') && URI_SCHEME.test(name) ? 'Resource' : types.includes('Prompt') ? 'Prompt' : (types[0] as TargetType);
    target = { type, name };
  }
  const wrong = actionProblem(actions, method, principal.type, target.type);
  if (wrong !== null) throw new UsageError(`--method: ${wrong}`);

  if (flags.args !== undefined && method !== 'tools/call') throw new UsageError('--args: only tools/call has arguments');
  const args = flags.args !== undefined ? parseArgs(flags.args) : {};
  return { principal, client, method, server: flags.server, target, ...(target.type === 'Tool' ? { hints: {} } : {}), scopes: splitList(flags.scope), args, now: Date.now(), tokenAge: 0, sourceAddress: '127.0.0.1' };
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A value of Cedar's JSON form as Cedar writes it: `Type::"id"`, `ip("…")`, `{ key: value }`. */
function cedarText(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `[${value.map(cedarText).join(', ')}]`;
  if (typeof value !== 'object' || value === null) return String(value);
  const record = value as Record<string, unknown>;
  const entity = record.__entity as { type?: unknown; id?: unknown } | undefined;
  if (entity !== undefined && typeof entity.type === 'string' && typeof entity.id === 'string') return literal(entity.type, entity.id);
  const extension = record.__extn as { fn?: unknown; arg?: unknown } | undefined;
  if (extension !== undefined && typeof extension.fn === 'string') return `${extension.fn}(${cedarText(extension.arg)})`;
  const entries = Object.entries(record);
  if (entries.length === 0) return '{}';
  return `{ ${entries.map(([key, item]) => `${IDENTIFIER.test(key) ? key : JSON.stringify(key)}: ${cedarText(item)}`).join(', ')} }`;
}

/** One entity on one line: `Type::"id" in [parents] { attributes }`. */
function entityLine(entity: cedar.EntityJson): string {
  const uid = entity.uid as { type: string; id: string };
  const parents = entity.parents.map((parent) => literal((parent as { type: string }).type, (parent as { id: string }).id));
  const attrs = Object.keys(entity.attrs).length === 0 ? '' : ` ${cedarText(entity.attrs)}`;
  return `${literal(uid.type, uid.id)}${parents.length === 0 ? '' : ` in [${parents.join(', ')}]`}${attrs}`;
}

export function explain(flags: ExplainFlags): number {
  const where = directory(flags, flags.policies);
  const loaded = load(where);
  if (!loaded.ok) return refuseSet(where, loaded.problems, flags.json);
  const { source } = loaded;
  const request = explainRequest(flags, actionsOf(source));
  const engine = new PolicyEngine(source);
  let decision: Decision;
  try {
    decision = engine.decide(request);
  } finally {
    engine.dispose();
  }
  // Every context attribute, though a decision is given only those its policies read.
  const built = toCedar(request, new Set(['*']));
  const policies = decision.policies.map((id) => {
    const policy = source.policies.find((p) => p.id === id);
    return { id, effect: policy?.effect ?? null, file: policy?.file ?? null, line: policy?.line ?? null };
  });
  const shown = {
    principal: literal(built.principal.type, built.principal.id),
    action: literal(built.action.type, built.action.id),
    resource: literal(built.resource.type, built.resource.id),
  };

  if (flags.json) {
    printJson({
      dir: where.dir,
      sha256: source.hash,
      decision: decision.allow ? 'allow' : 'deny',
      allow: decision.allow,
      policies,
      error: decision.error,
      request: { ...shown, entities: built.entities, context: built.context },
    });
    return 0;
  }
  printLine(`decision: ${decision.allow ? 'allow' : 'deny'}`);
  if (policies.length === 0) printLine(`determining policies: none${decision.allow ? '' : ' (no permit applies: default deny)'}`);
  else {
    printLine('determining policies:');
    for (const policy of policies) {
      const at = policy.file === null ? '(not in the set)' : `${path.join(where.shown, policy.file)}:${policy.line}`;
      printLine(`  ${policy.id}  ${policy.effect ?? ''}  ${at}`);
    }
  }
  if (decision.error !== null) printLine(`error: ${decision.error}`);
  printLine(`principal: ${shown.principal}`);
  printLine(`action:    ${shown.action}`);
  printLine(`resource:  ${shown.resource}`);
  printLine('entities:');
  for (const entity of built.entities) printLine(`  ${entityLine(entity)}`);
  printLine('context:');
  for (const [key, value] of Object.entries(built.context)) printLine(`  ${key}: ${cedarText(value)}`);
  printLine(`policy set: ${where.shown} (${count(source.policies.length, 'policy', 'policies')}, sha256 ${source.hash})`);
  return 0;
}

// ---------------------------------------------------------------- schema

/** Text of a file for the terminal: every line cleaned, its tabs and line breaks kept. */
function cleanText(text: string): string {
  return text
    .split(/\r?\n/)
    .map((line) => line.split('\t').map(clean).join('\t'))
    .join('\n');
}

export function schema(flags: SetFlags): number {
  const where = directory(flags, flags.policies);
  let source: PolicySource | null = null;
  if (existsSync(where.dir)) {
    let names: string[];
    try {
      if (!statSync(where.dir).isDirectory()) throw new UsageError(`${where.shown} is not a directory`);
      names = readdirSync(where.dir).filter((name) => name.endsWith('.cedarschema')).sort();
    } catch (error) {
      if (error instanceof UsageError) throw error;
      throw new Error(`cannot read the policy directory ${where.shown}: ${(error as Error).message}`);
    }
    const additions = names.map((name) => ({ name, text: readFileSync(path.join(where.dir, name), 'utf8') }));
    try {
      // The schema alone: the directory's policies need not be valid to read it.
      source = loadPolicyTexts(where.dir, [], additions);
    } catch (error) {
      if (!(error instanceof PolicySetError)) throw error;
      if (flags.json) printJson({ ok: false, dir: where.dir, problems: error.problems });
      else {
        printNote(`mandate: the schema additions in ${where.shown} are not valid:`);
        for (const problem of error.problems) printNote(`  ${problemIn(where.shown, problem)}`);
      }
      return 1;
    }
  } else if (flags.policies !== undefined) {
    throw new UsageError(`--policies: no directory at ${where.shown}`);
  } else printNote(`mandate: ${where.dir} does not exist: Mandate's schema without additions`);

  // Without a directory: Mandate's schema as a set with no additions sees it (Args the empty record).
  const text = (source ?? loadPolicyTexts('', [], [])).schema;
  if (flags.json) printJson({ dir: source === null ? null : where.dir, files: source?.files ?? [], schema: text });
  else process.stdout.write(`${cleanText(text).replace(/\n*$/, '')}\n`);
  return 0;
}

// ---------------------------------------------------------------- reload

export function reload(flags: { data?: string; json?: boolean }, env = process.env): Promise<number> {
  return askGateway<PolicyOutcome>(controlDataDir(flags, env), '/policy/reload').then((outcome) => {
    if (outcome === null) return 1;
    if (flags.json) printJson(outcome);
    else {
      const lines = describePolicy(outcome);
      for (const line of lines) (outcome.ok ? printLine : printNote)(line);
    }
    return outcome.ok ? 0 : 1;
  });
}
