/**
 * The policy engine in-process: loading a set (problems named by file and
 * line), decisions (groups, forbid over permit, arguments, machine clients,
 * tool hints, evaluation errors fail closed), list-time partial decisions,
 * the step-up scope, and arguments as Cedar sees them.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { PolicyEngine } from '../../src/policy/engine.ts';
import { loadPolicyDir, loadPolicyTexts, PolicySetError, type Problem } from '../../src/policy/load.ts';
import { argsRecord, cedarAddress, type DecisionRequest } from '../../src/policy/request.ts';
import { FILES_POLICIES } from '../helpers/policies.ts';
import { tempDir } from '../helpers/process.ts';

const ARGS_SCHEMA = 'type Args = { path?: String, count?: Long };';

const POLICIES = `${FILES_POLICIES}
@id("small-batches")
permit (principal in Group::"readers", action == Action::"tools/call", resource == Tool::"files/batch")
  when { context.args has count && context.args.count <= 10 };

@id("admins-scope")
permit (principal in Group::"admins", action == Action::"tools/call", resource == Tool::"files/delete")
  when { context.scopes.contains("mcp:files:admin") };

@id("read-only-tools")
permit (principal in Group::"auditors", action == Action::"tools/call", resource in Server::"files")
  when { resource has readOnlyHint && resource.readOnlyHint };
`;

function engineFor(policies = POLICIES, schema = ARGS_SCHEMA): PolicyEngine {
  return new PolicyEngine(loadPolicyTexts('test', [{ name: 'main.cedar', text: policies }], schema ? [{ name: 'args.cedarschema', text: schema }] : []));
}

function ask(overrides: Partial<DecisionRequest> = {}): DecisionRequest {
  return {
    principal: { type: 'User', id: 'alice', groups: ['readers'] },
    client: { id: 'mc_1', name: 'agent', owner: 'alice', kind: 'interactive' },
    method: 'tools/call',
    server: 'files',
    target: { type: 'Tool', name: 'read_file' },
    scopes: ['mcp:files'],
    args: {},
    now: Date.parse('2026-12-03T08:00:00Z'),
    tokenAge: 5,
    sourceAddress: '127.0.0.1',
    ...overrides,
  };
}

function problemsOf(fn: () => unknown): readonly Problem[] {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof PolicySetError, String(error));
    return error.problems;
  }
  assert.fail('the set was accepted');
}

describe('loading a policy set', () => {
  it('names each policy by its @id, else FILE:LINE, and hashes the files', () => {
    const source = loadPolicyTexts('t', [{ name: 'a.cedar', text: '// c\n\npermit (principal, action, resource);\n@id("x") forbid (principal, action, resource == Server::"s");' }]);
    assert.deepEqual(
      source.policies.map((p) => [p.id, p.line, p.server]),
      [
        ['a.cedar:3', 3, null],
        ['x', 4, 's'],
      ],
    );
    assert.match(source.hash, /^[0-9a-f]{64}$/);
    const other = loadPolicyTexts('t', [{ name: 'a.cedar', text: 'permit (principal, action, resource);' }]);
    assert.notEqual(other.hash, source.hash);
  });

  it('a syntax error is refused with its file, line and column', () => {
    const [problem] = problemsOf(() => loadPolicyTexts('t', [{ name: 'ok.cedar', text: 'permit (principal, action, resource);' }, { name: 'bad.cedar', text: '// one\npermit (principal, action = Action::"read", resource);' }]));
    assert.equal(problem?.file, 'bad.cedar');
    assert.equal(problem?.line, 2);
    assert.ok((problem?.column ?? 0) > 1);
    assert.match(problem?.message ?? '', /not a valid operator/);
  });

  it('a policy that does not validate against the schema is refused with file and line (an unknown attribute, an unknown action)', () => {
    const problems = problemsOf(() =>
      loadPolicyTexts('t', [{ name: 'p.cedar', text: 'permit (principal, action, resource);\n\npermit (principal, action == Action::"tools/call", resource)\n  when { context.args.path == "x" };\npermit (principal, action == Action::"tools/delete", resource);' }]),
    );
    assert.ok(problems.some((p) => p.file === 'p.cedar' && p.line === 4 && /args/.test(p.message)), JSON.stringify(problems));
    assert.ok(problems.some((p) => p.file === 'p.cedar' && p.line === 5 && /tools\/delete/.test(p.message)), JSON.stringify(problems));
    // A mistake in a policy for every action is reported once, not once per action.
    const once = problemsOf(() => loadPolicyTexts('t', [{ name: 'q.cedar', text: 'permit (principal, action, resource) when { context.nope };' }]));
    assert.equal(once.length, 1, JSON.stringify(once));
  });

  it('declaring Args in a .cedarschema file makes argument conditions valid', () => {
    const text = 'permit (principal, action == Action::"tools/call", resource) when { context.args.path like "/tmp/*" };';
    assert.match(problemsOf(() => loadPolicyTexts('t', [{ name: 'p.cedar', text }]))[0]?.message ?? '', /args\.path/);
    // Declared optional, an access needs `has` first: the validator says so.
    assert.match(problemsOf(() => loadPolicyTexts('t', [{ name: 'p.cedar', text }], [{ name: 'args.cedarschema', text: ARGS_SCHEMA }]))[0]?.message ?? '', /optional attribute/);
    assert.equal(loadPolicyTexts('t', [{ name: 'p.cedar', text }], [{ name: 'args.cedarschema', text: 'type Args = { path: String };' }]).policies.length, 1);
    const broken = problemsOf(() => loadPolicyTexts('t', [{ name: 'p.cedar', text }], [{ name: 'args.cedarschema', text: 'type Args = { path: Strin };' }]));
    assert.ok(broken.length > 0);
  });

  it('duplicate ids and templates are refused', () => {
    const dup = problemsOf(() => loadPolicyTexts('t', [{ name: 'a.cedar', text: '@id("p") permit (principal, action, resource);' }, { name: 'b.cedar', text: '@id("p") forbid (principal, action, resource);' }]));
    assert.match(dup[0]?.message ?? '', /"p" is already used at a\.cedar:1/);
    const template = problemsOf(() => loadPolicyTexts('t', [{ name: 't.cedar', text: 'permit (principal == ?principal, action, resource);' }]));
    assert.match(template[0]?.message ?? '', /template/);
  });

  it('reads only *.cedar and *.cedarschema files from a directory; a missing directory is a problem', () => {
    const dir = tempDir('mandate-policies-');
    writeFileSync(path.join(dir, 'a.cedar'), 'permit (principal, action, resource);');
    writeFileSync(path.join(dir, 'notes.md'), 'not a policy');
    mkdirSync(path.join(dir, 'sub'));
    const source = loadPolicyDir(dir);
    assert.deepEqual(source.files, ['a.cedar']);
    assert.match(problemsOf(() => loadPolicyDir(path.join(dir, 'missing')))[0]?.message ?? '', /cannot read the policy directory/);
    // A .cedar entry that cannot be read is a problem named by its file, not an error without one.
    mkdirSync(path.join(dir, 'odd.cedar'));
    const [odd] = problemsOf(() => loadPolicyDir(dir));
    assert.equal(odd?.file, 'odd.cedar');
    assert.match(odd?.message ?? '', /cannot read it/);
  });
});

describe('decisions', () => {
  const engine = engineFor();

  it('default deny: nothing permits it, no policy is named', () => {
    const decision = engine.decide(ask({ principal: { type: 'User', id: 'bob', groups: [] } }));
    assert.deepEqual([decision.allow, decision.policies, decision.error], [false, [], null]);
  });

  it('a group permit allows, and the decision names it and the set', () => {
    const decision = engine.decide(ask({ method: 'tools/list', target: { type: 'Server', name: 'files' } }));
    assert.deepEqual([decision.allow, decision.policies], [true, ['readers-read']]);
    assert.equal(decision.set, engine.hash);
    assert.equal(engine.decide(ask({ method: 'tools/list', server: 'other', target: { type: 'Server', name: 'other' } })).allow, false);
  });

  it('arguments decide at call time: a path prefix and a numeric bound', () => {
    assert.equal(engine.decide(ask({ args: { path: '/srv/public/a.txt' } })).allow, true);
    assert.equal(engine.decide(ask({ args: { path: '/etc/passwd' } })).allow, false);
    assert.equal(engine.decide(ask({ args: {} })).allow, false);
    const batch = { target: { type: 'Tool' as const, name: 'batch' } };
    assert.equal(engine.decide(ask({ ...batch, args: { count: 10 } })).allow, true);
    assert.equal(engine.decide(ask({ ...batch, args: { count: 11 } })).allow, false);
  });

  it('a forbid beats a permit, and is named as the reason', () => {
    const decision = engine.decide(ask({ args: { path: '/srv/public/secret.txt' } }));
    assert.deepEqual([decision.allow, decision.policies], [false, ['no-secrets']]);
  });

  it('a machine client is decided as a Client with its kind', () => {
    const machine = { principal: { type: 'Client' as const, id: 'mc_m' }, client: { id: 'mc_m', name: 'robot', owner: null, kind: 'machine' as const } };
    assert.equal(engine.decide(ask({ ...machine, method: 'tools/list', target: { type: 'Server', name: 'files' } })).allow, true);
    assert.equal(engine.decide(ask({ ...machine, method: 'tools/list', target: { type: 'Server', name: 'files' }, client: { ...machine.client, kind: 'interactive' } })).allow, false);
  });

  it('tool hints come from the request (the upstream list), and are absent unless given', () => {
    const auditor = { principal: { type: 'User' as const, id: 'carol', groups: ['auditors'] }, target: { type: 'Tool' as const, name: 'stat' } };
    assert.equal(engine.decide(ask(auditor)).allow, false);
    assert.equal(engine.decide(ask({ ...auditor, hints: { readOnlyHint: true } })).allow, true);
    assert.equal(engine.decide(ask({ ...auditor, hints: { readOnlyHint: false } })).allow, false);
  });

  it('a policy that cannot be evaluated denies the request and says which (fail closed)', () => {
    // Args declares count as a Long; a string makes `<=` an evaluation error, and the permit must not be skipped silently.
    const decision = engine.decide(ask({ target: { type: 'Tool', name: 'batch' }, args: { count: 'many' } }));
    assert.equal(decision.allow, false);
    assert.match(decision.error ?? '', /small-batches/);
    // A forbid that errors must not turn into an allow either.
    const strict = engineFor('permit (principal, action, resource);\n@id("f") forbid (principal, action, resource) when { context.args has count && context.args.count > 3 };');
    const forbidErrors = strict.decide(ask({ args: { count: 'x' } }));
    assert.equal(forbidErrors.allow, false);
    assert.match(forbidErrors.error ?? '', /"f"/);
  });

  it('the context holds time, token age and address', () => {
    const timed = engineFor(`permit (principal, action, resource) when { context.now < datetime("2027-01-01") && context.tokenAge < 60 && context.sourceAddress.isInRange(ip("10.0.0.0/8")) };`, '');
    assert.equal(timed.decide(ask({ sourceAddress: '10.1.2.3' })).allow, true);
    assert.equal(timed.decide(ask({ sourceAddress: '::ffff:10.1.2.3' })).allow, true);
    assert.equal(timed.decide(ask({ sourceAddress: '192.168.1.1' })).allow, false);
    assert.equal(timed.decide(ask({ sourceAddress: '10.1.2.3', tokenAge: 120 })).allow, false);
    assert.equal(timed.decide(ask({ sourceAddress: '10.1.2.3', now: Date.parse('2027-02-01T00:00:00Z') })).allow, false);
  });

  it('context.client names the client a user calls through', () => {
    const through = engineFor(`permit (principal, action, resource) when { context.client == Client::"mc_1" && context.client has owner && context.client.owner == principal };`, '');
    assert.equal(through.decide(ask()).allow, true);
    assert.equal(through.decide(ask({ client: { id: 'mc_2', name: 'other', owner: 'alice', kind: 'interactive' } })).allow, false);
    assert.equal(through.decide(ask({ client: { id: 'mc_1', name: 'agent', owner: 'bob', kind: 'interactive' } })).allow, false);
  });

  it('cached decisions follow what they were built from (groups, scopes)', () => {
    const list = { method: 'tools/list', target: { type: 'Server' as const, name: 'files' } };
    assert.equal(engine.decide(ask(list)).allow, true);
    assert.equal(engine.decide(ask({ ...list, principal: { type: 'User', id: 'alice', groups: [] } })).allow, false);
    const del = { principal: { type: 'User' as const, id: 'root', groups: ['admins'] }, target: { type: 'Tool' as const, name: 'delete' } };
    assert.equal(engine.decide(ask(del)).allow, false);
    assert.equal(engine.decide(ask({ ...del, scopes: ['mcp:files', 'mcp:files:admin'] })).allow, true);
  });
});

describe('list-time decisions and step-up', () => {
  const engine = engineFor();

  it('an item whose call depends on arguments is shown; one no call of could be allowed is not', () => {
    assert.equal(engine.couldAllow(ask()), true, 'read_file: allowed for some paths');
    assert.equal(engine.couldAllow(ask({ target: { type: 'Tool', name: 'batch' } })), true);
    assert.equal(engine.couldAllow(ask({ target: { type: 'Tool', name: 'delete' } })), false);
    assert.equal(engine.couldAllow(ask({ principal: { type: 'User', id: 'bob', groups: [] } })), false);
  });

  it('an unconditional forbid hides the item even where a permit reads the arguments', () => {
    const hidden = engineFor(`${POLICIES}\n@id("no-read-file") forbid (principal, action, resource == Tool::"files/read_file");`);
    assert.equal(hidden.couldAllow(ask()), false);
    assert.equal(hidden.couldAllow(ask({ target: { type: 'Tool', name: 'batch' } })), true);
  });

  it('the step-up scope is one a policy tests for and that would allow the request', () => {
    const del = ask({ principal: { type: 'User', id: 'root', groups: ['admins'] }, target: { type: 'Tool', name: 'delete' } });
    assert.equal(engine.stepUp(del), 'mcp:files:admin');
    assert.equal(engine.stepUp(ask({ principal: { type: 'User', id: 'bob', groups: [] }, target: { type: 'Tool', name: 'delete' } })), null);
  });
});

describe('arguments as Cedar sees them', () => {
  it('strings, booleans, safe integers, arrays and records pass; fractions, nulls and Cedar escapes are left out and named', () => {
    const { record, omitted } = argsRecord({
      path: '/a',
      recursive: true,
      depth: 3,
      ratio: 0.5,
      nothing: null,
      tags: ['a', 'b'],
      mixed: [1, null],
      nested: { ok: 'y', bad: 1.5 },
      sneaky: { __entity: { type: 'User', id: 'admin' } },
      __extn: { fn: 'ip', arg: '1.1.1.1' },
      big: 2 ** 60,
    });
    assert.deepEqual(record, { path: '/a', recursive: true, depth: 3, tags: ['a', 'b'], nested: { ok: 'y' }, sneaky: {} });
    assert.deepEqual(omitted.sort(), ['__extn', 'big', 'mixed', 'nested.bad', 'nothing', 'ratio', 'sneaky.__entity'].sort());
  });

  it('addresses: IPv4-mapped IPv6 as IPv4, zones dropped, anything else the unspecified address', () => {
    assert.equal(cedarAddress('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(cedarAddress('fe80::1%eth0'), 'fe80::1');
    assert.equal(cedarAddress('not an address'), '0.0.0.0');
  });
});

describe('the rest of the model, as policies name it', () => {
  it('the call group, a Resource by id, every tool hint, and the arguments left out', () => {
    const engine = engineFor(
      `@id("calls") permit (principal, action in Action::"call", resource in Server::"files") when { resource has idempotentHint && resource.idempotentHint };
@id("doc") permit (principal, action == Action::"resources/read", resource == Resource::"files/file:///srv/doc.md");
@id("closed-world") forbid (principal, action in Action::"call", resource) when { resource has openWorldHint && resource.openWorldHint };
@id("no-fractions") forbid (principal, action == Action::"tools/call", resource) when { context.argsOmitted.contains("ratio") };`,
      '',
    );
    const tool = (hints: Record<string, boolean>, args: Record<string, unknown> = {}) => engine.decide(ask({ target: { type: 'Tool', name: 'stat' }, hints, args }));
    assert.deepEqual([tool({ idempotentHint: true }).allow, tool({ idempotentHint: true }).policies], [true, ['calls']]);
    assert.equal(tool({ idempotentHint: false }).allow, false);
    assert.deepEqual(tool({ idempotentHint: true, openWorldHint: true }).policies, ['closed-world']);
    const fraction = tool({ idempotentHint: true }, { ratio: 0.5 });
    assert.deepEqual([fraction.allow, fraction.policies], [false, ['no-fractions']]);
    const read = (uri: string) => engine.decide(ask({ method: 'resources/read', target: { type: 'Resource', name: uri } })).allow;
    assert.equal(read('file:///srv/doc.md'), true);
    assert.equal(read('file:///srv/other.md'), false);
  });
});

describe('tool hints the gateway has not seen', () => {
  const engine = engineFor(
    `@id("all") permit (principal, action, resource);
@id("no-destructive-machines") forbid (principal is Client, action == Action::"tools/call", resource is Tool)
  when { resource has destructiveHint && resource.destructiveHint };`,
    '',
  );
  const machine = { principal: { type: 'Client' as const, id: 'mc_m' }, client: { id: 'mc_m', name: 'robot', owner: null, kind: 'machine' as const } };

  it('a forbid on a hint is never skipped because the hint is unknown: the call is refused until the list is seen', () => {
    const unseen = engine.decide(ask({ ...machine, target: { type: 'Tool', name: 'wipe' } }));
    assert.deepEqual([unseen.allow, unseen.unseen, unseen.policies], [false, true, ['no-destructive-machines']]);
    assert.equal(engine.decide(ask({ ...machine, target: { type: 'Tool', name: 'wipe' }, hints: { destructiveHint: true } })).allow, false);
    assert.equal(engine.decide(ask({ ...machine, target: { type: 'Tool', name: 'wipe' }, hints: { destructiveHint: false } })).allow, true);
    assert.equal(engine.decide(ask({ ...machine, target: { type: 'Tool', name: 'wipe' }, hints: {} })).allow, true, 'seen, and not declared destructive');
  });

  it('a decision that does not depend on the hints is taken without them', () => {
    const user = engine.decide(ask({ target: { type: 'Tool', name: 'wipe' } }));
    assert.deepEqual([user.allow, user.unseen, user.policies], [true, undefined, ['all']]);
  });
});

describe('decisions shared between targets', () => {
  it('targets no policy tells apart share a decision; a condition on the name or a named target does not', () => {
    const engine = engineFor(
      `permit (principal, action == Action::"tools/call", resource in Server::"files") when { resource has readOnlyHint && resource.readOnlyHint };
forbid (principal, action, resource in Server::"names") when { resource.name == "secret" };
permit (principal, action, resource in Server::"names");
permit (principal, action, resource == Tool::"exact/one");`,
      '',
    );
    const call = (server: string, name: string, hints?: { readOnlyHint: boolean }) => engine.decide(ask({ server, target: { type: 'Tool', name }, ...(hints ? { hints } : {}) })).allow;
    assert.equal(call('files', 'a', { readOnlyHint: true }), true);
    assert.equal(call('files', 'b', { readOnlyHint: true }), true);
    assert.equal(call('files', 'c', { readOnlyHint: false }), false, 'the hints are part of what is shared');
    assert.equal(call('files', 'd'), false, 'no hints: the attribute is absent');
    assert.equal(call('names', 'public'), true);
    assert.equal(call('names', 'secret'), false, 'a condition on the name decides per target');
    assert.equal(call('names', 'other'), true);
    assert.equal(call('exact', 'one'), true);
    assert.equal(call('exact', 'two'), false, 'a named target is decided on its own');
  });
});
