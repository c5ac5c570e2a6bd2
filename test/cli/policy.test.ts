/**
 * `mandate policy validate | test | explain | schema | reload` through the
 * real `mandate` binary: exit codes, problems named by file and line, cases
 * files (a wrong decision, a wrong set of determining policies, a file that
 * is not valid), what `explain` shows, the schema with a directory's
 * additions, and reloads asked of a running gateway (and reported by
 * `mandate reload`).
 */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { runCli, tempDir } from '../helpers/process.ts';
import { FILES_POLICIES } from '../helpers/policies.ts';

const dir = tempDir('mandate-cli-policy-');
after(() => rmSync(dir, { recursive: true, force: true }));

const POLICIES = FILES_POLICIES;
const ARGS = 'type Args = { path?: String };';

/** A policy directory holding `files`. */
function policyDir(name: string, files: Record<string, string>): string {
  const target = path.join(dir, name);
  mkdirSync(target, { recursive: true });
  for (const [file, text] of Object.entries(files)) writeFileSync(path.join(target, file), text);
  return target;
}

function casesFile(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

const good = policyDir('good', { 'main.cedar': POLICIES, 'args.cedarschema': ARGS });
/** A policy naming an entity type the schema does not have, on line 3. */
const bad = policyDir('bad', { 'ok.cedar': '@id("all")\npermit (principal, action, resource);\n', 'typo.cedar': '// line 1\n@id("typo")\npermit (principal in Grup::"x", action, resource);\n' });

const READ_PUBLIC = `
- name: alice reads a public file
  principal: 'User::"alice"'
  groups: [readers]
  action: tools/call
  resource: 'Tool::"files/read_file"'
  context: { args: { path: /srv/public/a.txt } }
  expect: allow
  policies: [readers-read-file]
`;

describe('mandate policy validate', () => {
  it('exits 0 on a valid directory, naming the count and the hash', async () => {
    const [text, json] = await Promise.all([runCli(['policy', 'validate', good]), runCli(['policy', 'validate', good, '--json'])]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /: 4 policies valid \(sha256 [0-9a-f]{64}\)/);
    assert.equal(json.code, 0, json.stderr);
    const outcome = JSON.parse(json.stdout) as Record<string, unknown>;
    assert.equal(outcome.ok, true);
    assert.equal(outcome.dir, good);
    assert.match(String(outcome.sha256), /^[0-9a-f]{64}$/);
    assert.equal(outcome.policies, 4);
    assert.deepEqual(outcome.warnings, []);
    assert.equal(outcome.problems, undefined);
  });

  it('exits 1 on an invalid directory, each problem as file:line:col: message', async () => {
    const [text, json] = await Promise.all([runCli(['policy', 'validate', bad]), runCli(['policy', 'validate', bad, '--json'])]);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /not valid, 1 problem/);
    assert.match(text.stdout, /typo\.cedar:3:\d+: .*Grup/);
    assert.equal(json.code, 1);
    const outcome = JSON.parse(json.stdout) as { ok: boolean; dir: string; problems: { file: string; line: number; message: string }[]; sha256?: string };
    assert.equal(outcome.ok, false);
    assert.equal(outcome.dir, bad);
    assert.equal(outcome.sha256, undefined);
    assert.equal(outcome.problems.length, 1);
    assert.equal(outcome.problems[0]?.file, 'typo.cedar');
    assert.equal(outcome.problems[0]?.line, 3);
  });

  it('reads the configured directory when none is named', async () => {
    const configDir = path.join(dir, 'configured');
    mkdirSync(configDir, { recursive: true });
    const config = path.join(configDir, 'mandate.yaml');
    writeFileSync(config, `policies: ${JSON.stringify(path.relative(configDir, bad))}\n`);
    const result = await runCli(['policy', 'validate', '--config', config, '--json']);
    assert.equal(result.code, 1, result.stderr);
    assert.equal((JSON.parse(result.stdout) as { dir: string }).dir, bad);
  });
});

describe('mandate policy test', () => {
  it("exits 0 on the starter set's own cases", async () => {
    const result = await runCli(['policy', 'test', 'src/policy/starter/starter.cases.yaml', '--policies', 'src/policy/starter']);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^3 cases, 0 failed/m);
  });

  it('exits 1 on a wrong expectation and prints the mismatch', async () => {
    const file = casesFile(
      'wrong.yaml',
      `${READ_PUBLIC}
- name: a secret file
  principal: 'User::"alice"'
  groups: [readers]
  action: tools/call
  resource: 'Tool::"files/read_file"'
  context: { args: { path: /srv/public/secret.txt } }
  expect: allow
`,
    );
    const result = await runCli(['policy', 'test', file, '--policies', good]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stdout, /FAIL .*wrong\.yaml:11: case 2 \(a secret file\): expected allow, got deny by no-secrets/);
    assert.match(result.stdout, /determining policies: no-secrets \(main\.cedar:9\)/);
    assert.doesNotMatch(result.stdout, /case 1/);
    assert.match(result.stdout, /^2 cases, 1 failed/m);
  });

  it('compares the determining policies as a set', async () => {
    const file = casesFile(
      'policies.yaml',
      `${READ_PUBLIC}
- principal: 'Client::"mc_1"'
  action: tools/list
  resource: 'Server::"files"'
  expect: allow
  policies: [readers-read]
`,
    );
    const [text, json] = await Promise.all([runCli(['policy', 'test', file, '--policies', good]), runCli(['policy', 'test', file, '--policies', good, '--json'])]);
    assert.equal(text.code, 1, text.stderr);
    assert.match(text.stdout, /case 2: expected allow by readers-read, got allow by machines-list/);
    assert.match(text.stdout, /expected policies: +readers-read \(main\.cedar:2\)/);
    assert.match(text.stdout, /^2 cases, 1 failed/m);
    assert.equal(json.code, 1);
    const outcome = JSON.parse(json.stdout) as { ok: boolean; cases: number; failed: number; results: { case: number; pass: boolean; actual: { decision: string; policies: string[] } }[] };
    assert.equal(outcome.ok, false);
    assert.equal(outcome.cases, 2);
    assert.equal(outcome.failed, 1);
    assert.deepEqual(
      outcome.results.map((r) => [r.case, r.pass, r.actual.decision, r.actual.policies]),
      [
        [1, true, 'allow', ['readers-read-file']],
        [2, false, 'allow', ['machines-list']],
      ],
    );
  });

  it('exits 2 on a cases file that is not valid, naming the file, line and case; nothing is run', async () => {
    const file = casesFile(
      'invalid.yaml',
      `${READ_PUBLIC}
- principal: 'User:"bob"'
  action: tools/call
  resource: 'Tool::"files/read_file"'
  expect: allow
- principal: 'User::"bob"'
  action: tools/list
  resource: 'Tool::"files/read_file"'
  expect: deny
- principal: 'Client::"mc_1"'
  groups: [readers]
  action: tools/list
  resource: 'Server::"files"'
  expect: maybe
  colour: blue
`,
    );
    const [text, json] = await Promise.all([runCli(['policy', 'test', file, '--policies', good]), runCli(['policy', 'test', file, '--policies', good, '--json'])]);
    assert.equal(text.code, 2);
    assert.equal(text.stdout, '');
    assert.match(text.stderr, /invalid\.yaml:11: case 2: principal: "User:"bob"" is not an entity literal/);
    assert.match(text.stderr, /invalid\.yaml:16: case 3: action: "tools\/list" is decided on a Server, not a Tool/);
    assert.match(text.stderr, /invalid\.yaml:23: case 4: expect: /);
    assert.match(text.stderr, /invalid\.yaml:24: case 4: Unrecognized key: "colour"/);
    assert.doesNotMatch(text.stderr, /case 1/);
    assert.equal(json.code, 2);
    const outcome = JSON.parse(json.stdout) as { ok: boolean; problems: { file: string; line: number; case: number }[] };
    assert.equal(outcome.ok, false);
    assert.deepEqual([...new Set(outcome.problems.map((p) => p.case))], [2, 3, 4]);
  });

  it('exits 2 on a file that is not a list of cases, or cannot be read', async () => {
    const file = casesFile('map.yaml', 'principal: \'User::"alice"\'\n');
    const result = await runCli(['policy', 'test', file, path.join(dir, 'missing.yaml'), '--policies', good]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /map\.yaml: a cases file is a YAML list of cases/);
    assert.match(result.stderr, /missing\.yaml: cannot read it \(ENOENT\)/);
  });

  it('exits 1 when the policy set itself is not valid', async () => {
    const file = casesFile('for-bad.yaml', READ_PUBLIC);
    const result = await runCli(['policy', 'test', file, '--policies', bad]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /is not valid/);
    assert.match(result.stderr, /typo\.cedar:3:/);
  });
});

describe('mandate policy explain', () => {
  it('names the determining policy with its file and line, and shows the entities and context', async () => {
    const args = ['policy', 'explain', '--policies', good, '--user', 'alice', '--group', 'readers', '--server', 'files', '--tool', 'read_file', '--args', '{"path":"/srv/public/secret.txt","ratio":0.5}', '--scope', 'mcp:files'];
    const [text, json] = await Promise.all([runCli(args), runCli([...args, '--json'])]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^decision: deny$/m);
    assert.match(text.stdout, /^ {2}no-secrets {2}forbid {2}.*main\.cedar:9$/m);
    assert.match(text.stdout, /^resource: +Tool::"files\/read_file"$/m);
    assert.match(text.stdout, /^ {2}User::"alice" in \[Group::"readers"\]$/m);
    assert.match(text.stdout, /^ {2}args: \{ path: "\/srv\/public\/secret\.txt" \}$/m);
    assert.match(text.stdout, /^ {2}argsOmitted: \["ratio"\]$/m);
    assert.match(text.stdout, /^ {2}scopes: \["mcp:files"\]$/m);
    assert.match(text.stdout, /^ {2}sourceAddress: ip\("127\.0\.0\.1"\)$/m);

    assert.equal(json.code, 0, json.stderr);
    const outcome = JSON.parse(json.stdout) as {
      decision: string;
      allow: boolean;
      policies: { id: string; effect: string; file: string; line: number }[];
      error: string | null;
      request: { principal: string; action: string; resource: string; context: Record<string, unknown>; entities: unknown[] };
    };
    assert.equal(outcome.decision, 'deny');
    assert.equal(outcome.allow, false);
    assert.deepEqual(outcome.policies, [{ id: 'no-secrets', effect: 'forbid', file: 'main.cedar', line: 9 }]);
    assert.equal(outcome.error, null);
    assert.equal(outcome.request.principal, 'User::"alice"');
    assert.equal(outcome.request.action, 'Action::"tools/call"');
    assert.deepEqual(outcome.request.context.args, { path: '/srv/public/secret.txt' });
    assert.deepEqual(outcome.request.context.client, { __entity: { type: 'Client', id: 'test-client' } });
  });

  it('decides a machine client on its own, and says when no permit applies', async () => {
    const [machine, user] = await Promise.all([
      runCli(['policy', 'explain', '--policies', good, '--client', 'mc_1', '--server', 'files', '--method', 'tools/list']),
      runCli(['policy', 'explain', '--policies', good, '--user', 'bob', '--server', 'files', '--method', 'prompts/get', '--target', 'greeting']),
    ]);
    assert.equal(machine.code, 0, machine.stderr);
    assert.match(machine.stdout, /^decision: allow$/m);
    assert.match(machine.stdout, /machines-list {2}permit {2}.*main\.cedar:13$/m);
    assert.match(machine.stdout, /Client::"mc_1" \{ name: "mc_1", kind: "machine" \}/);
    assert.equal(user.code, 0, user.stderr);
    assert.match(user.stdout, /^decision: deny$/m);
    assert.match(user.stdout, /determining policies: none \(no permit applies: default deny\)/);
    assert.match(user.stdout, /^resource: +Prompt::"files\/greeting"$/m);
  });

  it('refuses --args that is not a JSON object, with exit 2 and a clear message', async () => {
    const base = ['policy', 'explain', '--policies', good, '--user', 'alice', '--server', 'files', '--tool', 'read_file'];
    const [broken, array, noTarget] = await Promise.all([
      runCli([...base, '--args', '{path:']),
      runCli([...base, '--args', '[1,2]']),
      runCli(['policy', 'explain', '--policies', good, '--user', 'alice', '--server', 'files', '--method', 'resources/read']),
    ]);
    assert.equal(broken.code, 2);
    assert.match(broken.stderr, /^mandate: --args: not valid JSON/);
    assert.equal(broken.stdout, '');
    assert.equal(array.code, 2);
    assert.match(array.stderr, /--args: give a JSON object/);
    assert.equal(noTarget.code, 2);
    assert.match(noTarget.stderr, /resources\/read is decided on a Resource: name it with --target NAME/);
  });
});

describe('mandate policy schema', () => {
  it("prints Mandate's schema, and a directory's additions with --policies", async () => {
    const [base, effective] = await Promise.all([runCli(['policy', 'schema', '--data', path.join(dir, 'no-data')]), runCli(['policy', 'schema', '--policies', good])]);
    assert.equal(base.code, 0, base.stderr);
    assert.match(base.stdout, /^entity Tool in \[Server\]/m);
    assert.match(base.stdout, /^type Args = \{\};$/m);
    assert.doesNotMatch(base.stdout, /^type Args = \{ path/m);
    assert.equal(effective.code, 0, effective.stderr);
    assert.match(effective.stdout, /^entity Tool in \[Server\]/m);
    assert.match(effective.stdout, /^type Args = \{ path\?: String \};$/m);
    assert.doesNotMatch(effective.stdout, /^type Args = \{\};$/m);
  });
});

describe('mandate policy reload', () => {
  it('says that no gateway serves the data directory (exit 1)', async () => {
    const data = path.join(dir, 'no-gateway');
    const result = await runCli(['policy', 'reload', '--data', data]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /no gateway is serving .*no-gateway/);
  });

  describe('with a running gateway', () => {
    let mandate: InProcessMandate;
    const live = policyDir('live', { 'main.cedar': POLICIES, 'args.cedarschema': ARGS });
    const validated = async (): Promise<string> => (JSON.parse((await runCli(['policy', 'validate', live, '--json'])).stdout) as { sha256: string }).sha256;

    before(async () => {
      // A reload applies the configuration's log level to the app's logger: silent, as it starts.
      mandate = await startInProcess({ servers: [], extra: { policies: live, log: { level: 'silent' } } });
    });
    after(async () => {
      await mandate?.stop();
    });

    it('puts the directory as it is now in force (exit 0), and refuses a broken set (exit 1) keeping the one in force', async () => {
      const first = await runCli(['policy', 'reload', '--data', mandate.dataDir]);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, /^policy set unchanged: sha256 [0-9a-f]{64} \(4 policies\)/m);

      writeFileSync(path.join(live, 'more.cedar'), '@id("everyone-lists")\npermit (principal, action == Action::"tools/list", resource);\n');
      const expected = await validated();
      const second = await runCli(['policy', 'reload', '--data', mandate.dataDir, '--json']);
      assert.equal(second.code, 0, second.stderr);
      const applied = JSON.parse(second.stdout) as { ok: boolean; sha256: string; policies: number };
      assert.equal(applied.ok, true);
      assert.equal(applied.sha256, expected);
      assert.equal(applied.policies, 5);
      assert.equal(mandate.app.policy.engine?.hash, expected);

      writeFileSync(path.join(live, 'broken.cedar'), '\n\npermit (principal, action, resource) when { context.nope };\n');
      const refused = await runCli(['policy', 'reload', '--data', mandate.dataDir]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /^policy set refused; the one in force stays \(sha256 [0-9a-f]{64}\):$/m);
      assert.match(refused.stderr, /broken\.cedar:3:\d+: .*nope/);
      assert.equal(mandate.app.policy.engine?.hash, expected);

      const json = await runCli(['policy', 'reload', '--data', mandate.dataDir, '--json']);
      assert.equal(json.code, 1);
      const outcome = JSON.parse(json.stdout) as { ok: boolean; problems: { file: string; line: number }[] };
      assert.equal(outcome.ok, false);
      assert.ok(outcome.problems.some((p) => p.file === 'broken.cedar' && p.line === 3), json.stdout);
    });

    it('`mandate reload` reports the policy outcome; a refused set leaves its exit code 0', async () => {
      writeFileSync(path.join(live, 'broken.cedar'), '// fixed\n');
      const ok = await runCli(['reload', '--data', mandate.dataDir]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /^ {2}policy set (in force|unchanged): sha256 [0-9a-f]{64} \(5 policies\)/m);

      writeFileSync(path.join(live, 'broken.cedar'), 'permit (principal, action, resource) when { context.nope };\n');
      const refused = await runCli(['reload', '--data', mandate.dataDir]);
      assert.equal(refused.code, 0, refused.stderr);
      assert.match(refused.stdout, /^configuration reloaded from /m);
      assert.match(refused.stdout, /^ {2}policy set refused; the one in force stays \(sha256 [0-9a-f]{64}\):$/m);
      assert.match(refused.stdout, /^ {4}.*broken\.cedar:1:\d+: .*nope/m);
    });
  });
});
