/**
 * `mandate scan`: every client format's fixture (fake secrets planted in
 * test/fixtures/scan), no finding among placeholders, exit codes, --json,
 * --sarif, the bounded directory walk, and --fix end to end on a copy of a
 * fixture with a fake secret store. No planted value may appear in any output.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { tempDir } from '../helpers/process.ts';
import { MAX_DEPTH, scan, scanArgv, type Finding, type FixTarget, type ScanDeps, type ScanFlags } from '../../src/scan/scan.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/scan/', import.meta.url));
const fixture = (...parts: string[]) => path.join(FIXTURES, ...parts);

/** Every fake secret planted in the fixtures (the PEM key by one line of its body): none may ever be printed. */
const PLANTED = {
  ghp: 'ghp_hf9khH6o3XB8bKdAdBfeEOSNJ9ZNwKhAqXnF',
  gho: 'gho_YnTXz8MZPmXEwTFXcyn5Qqu4ZIXyyj4nGAyj',
  pat: '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',
  slack: 'xoxb-824453161087-6294029069806-hfukuPUvc5nCljsuK7SzDG5z',
  akia: 'AKIAWBGZMTK5PBCEZ5CN',
  awsSecret: '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',
  openai: 'sk-proj-yHD3pAswQGqAXZmb9v6nYAselc15gK1Q1p7RfoahYher76zMT3BlbkFJYvb8ao9F7kHgDxkcw8sHa5aYtKPXV74dwRSesqKzm81LuNri',
  anthropic: 'sk-ant-api03-47Z1IMPPNZTUxc__wR065m2HCLQS0Bn6L5TF8TwlFr8TIh1SqUqZ8BAaNI6z5euMNyBhiB3TehHIalLWYKkH8qgNKlRXHAA',
  stripeLive: 'sk_live_EiHYLo39Th5100kdJhD0qjdx',
  stripeTest: 'sk_test_QoKIDmZJjDwndSUtvh5SOhjh',
  rkLive: 'rk_live_37t9Cc7U9A4Q64GcuAjl6rTl',
  google: 'AIza7Gzg_HycI0h0dMAqoKBa7vg3ltCWDEA3Fsc',
  jwt: 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzdmMtcmVwb3J0aW5nIiwiaWF0IjoxNzY3MjI1NjAwfQ.7z-ztBx8kDzStlYhXSs0PN8yo7zevwjD0vgx3cF9lEn',
  pemLine: 'weXKcS7JpU8Mkxx2wEDuZusew36IEt1LQ5/uecW+JDSezjQDKiUmLsC+YPy8yR35',
  bearer: 'SAv1JePVbi7f9psgDuzPqdCK9lJpbHZEU4Fj3p4J',
  searchKey: 'h3PlhRMqPNq4i9cBVJFHc0dUUDxmtKej',
  notesKey: '255cbcf612634f8e888971d8',
  dbPassword: 'ZNXctxL3spjqf6vINazj',
  queryKey: 'FAvTBzQBlqyMHEGo5yqWEerBtYXMTOAn',
  inputDefault: 'ghp_U6D1yiCB0PHvrJ49NUUEbJkGIg59Uvx0Ip5O',
  mandateSlack: 'xoxp-271287014132-954486635699-350526292353-747f5d6f9eac123d82680a79185aaab2',
  mandateArg: 'LEaCzCpaRlu6PCk8nFM0lxXZlJHYfVm4',
  mandateQuery: 'LjmCebIqqnpXhKG5GrWPKzrRJqGr',
  urlPassword: 'MNRFUYyBVKdo',
  adminPassword: 'Kq7dWm2Rz9Tb',
};

function assertNothingPlanted(text: string, what: string): void {
  for (const [name, value] of Object.entries(PLANTED)) assert.ok(!text.includes(value), `${what} shows the planted ${name}`);
}

const work = tempDir('mandate-scan-');
after(() => rmSync(work, { recursive: true, force: true }));
let counter = 0;
/** A fresh directory under the test's temporary one. */
function freshDir(name: string): string {
  const dir = path.join(work, `${++counter}-${name}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the command with its output captured. Only strings are captured: the
 * test runner's own reports to the parent process are binary and go through.
 */
async function capture(body: () => Promise<number>): Promise<Outcome> {
  const out = { stdout: '', stderr: '' };
  const originals = { stdout: process.stdout.write, stderr: process.stderr.write };
  const hook = (stream: 'stdout' | 'stderr') =>
    function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
      if (typeof chunk === 'string') {
        out[stream] += chunk;
        return true;
      }
      return (originals[stream] as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof process.stdout.write;
  process.stdout.write = hook('stdout');
  process.stderr.write = hook('stderr');
  try {
    const code = await body();
    return { code, ...out };
  } finally {
    process.stdout.write = originals.stdout;
    process.stderr.write = originals.stderr;
  }
}

/** The default locations are never looked at unless a test means it: an empty home and project. */
const isolated: ScanDeps = { home: path.join(work, 'no-home'), cwd: path.join(work, 'no-project'), env: {} };

async function run(paths: string[], flags: ScanFlags = {}, deps: ScanDeps = {}): Promise<Outcome> {
  const outcome = await capture(() => scan(paths, flags, { ...isolated, ...deps }));
  assertNothingPlanted(outcome.stdout, 'stdout');
  assertNothingPlanted(outcome.stderr, 'stderr');
  return outcome;
}

async function findings(paths: string[]): Promise<Finding[]> {
  const { stdout, code } = await run(paths, { json: true });
  const list = JSON.parse(stdout) as Finding[];
  assert.equal(code, list.length > 0 ? 1 : 0);
  return list;
}

type Expected = [server: string, location: string, kind: string, masked: string];
const shape = (list: Finding[]) => list.map((f): Expected => [f.server, f.location, f.kind, f.masked]);

describe('each client format: the planted secrets are found, where they are, masked', () => {
  const cases: [string, string, Expected[]][] = [
    [
      'Claude Desktop',
      'claude-desktop/claude_desktop_config.json',
      [
        ['github', 'env.GITHUB_PERSONAL_ACCESS_TOKEN', 'github-token', 'ghp_…nF'],
        ['slack', 'env.SLACK_BOT_TOKEN', 'slack-token', 'xoxb…5z'],
        ['postgres', 'args[2]', 'url-password', 'MN…'],
      ],
    ],
    [
      'Claude Code (.mcp.json)',
      'claude-code/.mcp.json',
      [
        ['openai-tools', 'env.OPENAI_API_KEY', 'openai-api-key', 'sk-p…ri'],
        ['linear', 'headers.Authorization', 'high-entropy', 'SAv1…4J'],
        ['analytics', 'url', 'url-query-secret', 'FAvT…An'],
      ],
    ],
    [
      'Claude Code (~/.claude.json, with per-project servers)',
      'claude-user/.claude.json',
      [
        ['claude-helper', 'env.ANTHROPIC_API_KEY', 'anthropic-api-key', 'sk-a…AA'],
        ['stripe', 'env.STRIPE_SECRET_KEY', 'stripe-live-key', 'sk_l…dx'],
        ['stripe-sandbox', 'args[2]', 'stripe-test-key', 'sk_t…jh'],
      ],
    ],
    [
      'VS Code (servers and inputs, with comments)',
      'vscode/.vscode/mcp.json',
      [
        ['(inputs)', 'inputs.github_token.default', 'github-token', 'ghp_…5O'],
        ['aws', 'env.AWS_ACCESS_KEY_ID', 'aws-access-key-id', 'AKIA…CN'],
        ['aws', 'env.AWS_SECRET_ACCESS_KEY', 'aws-secret-access-key', 'wHDe…lZ'],
        ['maps', 'headers.X-Goog-Api-Key', 'google-api-key', 'AIza…sc'],
      ],
    ],
    [
      'Cursor',
      'cursor/.cursor/mcp.json',
      [
        ['github', 'env.GITHUB_TOKEN', 'github-token', 'gho_…yj'],
        ['reports', 'headers.Authorization', 'jwt', 'eyJh…En'],
        ['notes', 'env.NOTES_API_KEY', 'high-entropy', '255c…d8'],
      ],
    ],
    [
      'Windsurf (serverUrl)',
      'windsurf/.codeium/windsurf/mcp_config.json',
      [
        ['signer', 'env.SIGNING_KEY', 'private-key', '----…--'],
        ['search', 'headers.X-API-Key', 'high-entropy', 'h3Pl…ej'],
        ['repo', 'args[3]', 'github-token', 'gith…Nz'],
      ],
    ],
    [
      'mandate.yaml (servers[].env, args, url)',
      'mandate/mandate.yaml',
      [
        ['slack', 'env.SLACK_BOT_TOKEN', 'slack-token', 'xoxp…b2'],
        ['search', 'args[0]', 'high-entropy', 'LEaC…m4'],
        ['billing', 'url', 'url-query-secret', 'LjmC…Gr'],
        ['payments', 'env.PAYMENTS_RK', 'stripe-live-key', 'rk_l…Tl'],
        ['payments', 'env.DB_PASSWORD', 'high-entropy', 'ZNXc…zj'],
        ['payments', 'env.ADMIN_PASSWORD', 'password', 'Kq…'],
      ],
    ],
  ];
  for (const [client, file, expected] of cases) {
    it(client, async () => {
      const list = await findings([fixture(file)]);
      assert.deepEqual(shape(list), expected);
      for (const f of list) {
        assert.equal(f.file, fixture(file));
        assert.ok(Number.isInteger(f.line) && f.line! > 0, 'each finding has its line');
        assert.ok([...f.masked.replace('…', '')].length <= 6, 'at most 6 characters are shown');
      }
    });
  }

  it('the line is the line of the value', async () => {
    const [first] = await findings([fixture('claude-desktop/claude_desktop_config.json')]);
    const lines = readFileSync(fixture('claude-desktop/claude_desktop_config.json'), 'utf8').split('\n');
    assert.match(lines[first!.line! - 1]!, /"GITHUB_PERSONAL_ACCESS_TOKEN":/);
  });

  it("~/.claude.json: a project's server names its project", async () => {
    const list = await findings([fixture('claude-user/.claude.json')]);
    assert.deepEqual(list.map((f) => f.project), [undefined, '/home/dev/shop', '/home/dev/shop']);
  });

  it('severity: a Stripe test key is low, a live one high', async () => {
    const list = await findings([fixture('claude-user/.claude.json')]);
    assert.deepEqual(list.map((f) => f.severity), ['high', 'high', 'low']);
  });

  it('a directory is searched for every known file name', async () => {
    const list = await findings([FIXTURES]);
    assert.equal(list.length, 25);
    assert.equal(new Set(list.map((f) => f.file)).size, 7);
  });
});

describe('placeholders are not findings', () => {
  it('no finding in any placeholder fixture (${VAR}, ${input:…}, <your-key>, changeme, xxxx, ***, paths, numbers…)', async () => {
    const { code, stdout } = await run([fixture('placeholders')]);
    assert.equal(code, 0);
    assert.match(stdout, /no hard-coded credentials found \(7 files scanned\)/);
  });
});

describe('exit codes and usage', () => {
  it('1 when something is found, 0 when nothing is', async () => {
    assert.equal((await run([fixture('cursor')])).code, 1);
    assert.equal((await run([fixture('placeholders')])).code, 0);
  });

  it('2 for an unknown option', async () => {
    const { code, stderr, stdout } = await capture(() => scanArgv(['--bogus', fixture('cursor')], isolated));
    assert.equal(code, 2);
    assert.match(stderr, /unknown option '--bogus'/);
    assert.equal(stdout, '');
  });

  it('2 for a path that cannot be read, naming it', async () => {
    const missing = path.join(work, 'does-not-exist.json');
    const { code, stderr } = await capture(() => scanArgv([missing], isolated));
    assert.equal(code, 2);
    assert.ok(stderr.includes(`cannot read ${missing} (ENOENT)`), stderr);
  });

  it('2 for --json with --sarif, or --fix with either', async () => {
    assert.equal((await capture(() => scanArgv(['--json', '--sarif', fixture('cursor')], isolated))).code, 2);
    assert.equal((await capture(() => scanArgv(['--fix', '--json', fixture('cursor')], isolated))).code, 2);
  });

  it('2 for --fix when no secret store is given', async () => {
    const { code, stderr } = await capture(() => scanArgv(['--fix', fixture('cursor')], isolated));
    assert.equal(code, 2);
    assert.match(stderr, /secret store/);
  });

  it('paths after -- are paths', async () => {
    assert.equal((await capture(() => scanArgv(['--json', '--', fixture('cursor')], isolated))).code, 1);
  });
});

describe('output', () => {
  it('text: one line per finding (file:line, server, location, kind, masked), then a count', async () => {
    const { stdout } = await run([fixture('cursor')]);
    const lines = stdout.trimEnd().split('\n');
    const file = fixture('cursor/.cursor/mcp.json');
    assert.deepEqual(lines, [
      `${file}:7  github  env.GITHUB_TOKEN  github-token  gho_…yj`,
      `${file}:14  reports  headers.Authorization  jwt  eyJh…En`,
      `${file}:21  notes  env.NOTES_API_KEY  high-entropy  255c…d8`,
      '3 hard-coded credentials in 1 file (1 file scanned)',
    ]);
  });

  it('--json: a list of findings with file, server, location, kind, masked', async () => {
    const list = await findings([fixture('cursor')]);
    assert.ok(Array.isArray(list));
    for (const f of list) {
      for (const key of ['file', 'server', 'location', 'kind', 'masked'] as const) assert.equal(typeof f[key], 'string', key);
    }
  });

  it('--sarif: SARIF 2.1.0, tool mandate-scan, one rule per kind, one result per finding, with file and line', async () => {
    const { code, stdout } = await run([FIXTURES], { sarif: true });
    assert.equal(code, 1);
    const log = JSON.parse(stdout) as {
      version: string;
      runs: {
        tool: { driver: { name: string; rules: { id: string; shortDescription: { text: string }; defaultConfiguration: { level: string } }[] } };
        results: { ruleId: string; ruleIndex: number; level: string; message: { text: string }; locations: { physicalLocation: { artifactLocation: { uri: string }; region?: { startLine: number } } }[] }[];
      }[];
    };
    assert.equal(log.version, '2.1.0');
    assert.equal(log.runs.length, 1);
    const [runLog] = log.runs;
    assert.equal(runLog!.tool.driver.name, 'mandate-scan');
    const ids = runLog!.tool.driver.rules.map((r) => r.id);
    assert.equal(new Set(ids).size, ids.length, 'one rule per kind');
    const json = await findings([FIXTURES]);
    assert.deepEqual([...ids].sort(), [...new Set(json.map((f) => f.kind))].sort());
    assert.equal(runLog!.results.length, json.length, 'one result per finding');
    for (const result of runLog!.results) {
      assert.equal(ids[result.ruleIndex], result.ruleId);
      assert.ok(['error', 'warning', 'note'].includes(result.level));
      assert.ok(result.message.text.length > 0);
      const location = result.locations[0]!.physicalLocation;
      assert.match(location.artifactLocation.uri, /^file:\/\/\/.+(\.json|\.yaml)$/);
      assert.ok(location.region!.startLine > 0);
    }
    assert.equal(runLog!.results.find((r) => r.ruleId === 'stripe-test-key')?.level, 'note');
  });

  it('--sarif: a file under the current directory is a relative URI', async () => {
    const { stdout } = await run(['cursor'], { sarif: true }, { cwd: FIXTURES });
    const log = JSON.parse(stdout) as { runs: { results: { locations: { physicalLocation: { artifactLocation: { uri: string } } }[] }[] }[] };
    assert.equal(log.runs[0]!.results[0]!.locations[0]!.physicalLocation.artifactLocation.uri, 'cursor/.cursor/mcp.json');
  });

  it('what a configuration names cannot drive the terminal', async () => {
    const dir = freshDir('terminal');
    writeFileSync(path.join(dir, '.mcp.json'), JSON.stringify({ mcpServers: { 'evil\u001b]0;owned\u0007\u202e': { command: 'x', env: { GITHUB_TOKEN: PLANTED.ghp } } } }));
    const { stdout } = await run([dir]);
    assert.ok(!/[\u001b\u0007\u202e]/.test(stdout), 'control and format characters are escaped');
    assert.match(stdout, /evil\\u\{1b\}\]0;owned\\u\{7\}\\u\{202e\}/);
  });
});

describe('finding the files', () => {
  it('the usual locations in the home directory and the current project, when no PATH is given', async () => {
    const home = freshDir('home');
    const project = freshDir('project');
    mkdirSync(path.join(home, '.cursor'));
    cpSync(fixture('cursor/.cursor/mcp.json'), path.join(home, '.cursor/mcp.json'));
    mkdirSync(path.join(home, '.config/Claude'), { recursive: true });
    cpSync(fixture('claude-desktop/claude_desktop_config.json'), path.join(home, '.config/Claude/claude_desktop_config.json'));
    cpSync(fixture('claude-code/.mcp.json'), path.join(project, '.mcp.json'));
    const { stdout } = await run([], { json: true }, { home, cwd: project, platform: 'linux', env: {} });
    const files = new Set((JSON.parse(stdout) as Finding[]).map((f) => f.file));
    assert.deepEqual([...files].sort(), [path.join(home, '.config/Claude/claude_desktop_config.json'), path.join(home, '.cursor/mcp.json'), path.join(project, '.mcp.json')].sort());
  });

  it('macOS and Windows: Claude Desktop is looked for where each keeps it', async () => {
    const home = freshDir('home-mac');
    mkdirSync(path.join(home, 'Library/Application Support/Claude'), { recursive: true });
    cpSync(fixture('claude-desktop/claude_desktop_config.json'), path.join(home, 'Library/Application Support/Claude/claude_desktop_config.json'));
    assert.equal((await run([], {}, { home, platform: 'darwin' })).code, 1);
    const appData = freshDir('appdata');
    mkdirSync(path.join(appData, 'Claude'));
    cpSync(fixture('claude-desktop/claude_desktop_config.json'), path.join(appData, 'Claude/claude_desktop_config.json'));
    assert.equal((await run([], {}, { home: freshDir('home-win'), platform: 'win32', env: { APPDATA: appData } })).code, 1);
  });

  it('nothing in the usual locations: says so, exit 0', async () => {
    const { code, stdout } = await run([], {}, { home: freshDir('empty-home'), cwd: freshDir('empty-project') });
    assert.equal(code, 0);
    assert.match(stdout, /no MCP client configuration found/);
  });

  it('node_modules and .git are skipped; a symlink loop is searched once and ends', async () => {
    const dir = freshDir('walk');
    for (const sub of ['node_modules/pkg', '.git/x', 'app']) {
      mkdirSync(path.join(dir, sub), { recursive: true });
      cpSync(fixture('claude-code/.mcp.json'), path.join(dir, sub, '.mcp.json'));
    }
    symlinkSync('..', path.join(dir, 'app', 'loop'));
    symlinkSync(dir, path.join(dir, 'app', 'again'));
    const list = await findings([dir]);
    assert.deepEqual([...new Set(list.map((f) => f.file))], [path.join(dir, 'app', '.mcp.json')]);
  });

  it(`the walk goes at most ${MAX_DEPTH} directories deep`, async () => {
    const dir = freshDir('deep');
    const shallow = path.join(dir, ...Array.from({ length: MAX_DEPTH }, (_, i) => `d${i}`));
    const deep = path.join(shallow, 'deeper');
    mkdirSync(deep, { recursive: true });
    cpSync(fixture('claude-code/.mcp.json'), path.join(shallow, '.mcp.json'));
    cpSync(fixture('claude-code/.mcp.json'), path.join(deep, '.mcp.json'));
    const list = await findings([dir]);
    assert.deepEqual([...new Set(list.map((f) => f.file))], [path.join(shallow, '.mcp.json')]);
  });

  it('a file over 5 MiB is skipped with a note', async () => {
    const dir = freshDir('large');
    const text = `{"mcpServers":{"a":{"command":"x","env":{"GITHUB_TOKEN":"${PLANTED.ghp}"}}},"pad":"${'x'.repeat(5 * 1024 * 1024)}"}`;
    writeFileSync(path.join(dir, '.mcp.json'), text);
    const { code, stderr } = await run([dir]);
    assert.equal(code, 0);
    assert.match(stderr, /skipped \(larger than 5 MiB\)/);
  });

  it('a file that does not parse is still searched for known tokens, and says why', async () => {
    const dir = freshDir('broken');
    writeFileSync(path.join(dir, '.mcp.json'), `{\n  "mcpServers": {\n    "a": { "env": { "GITHUB_TOKEN": "${PLANTED.ghp}" }\n`);
    const { code, stdout, stderr } = await run([dir], { json: true });
    assert.equal(code, 1);
    assert.match(stderr, /mcp\.json: expected ',' or '\}' at line 4, column 1; searched as plain text/);
    assert.deepEqual(shape(JSON.parse(stdout) as Finding[]), [['(unparsed)', 'text', 'github-token', 'ghp_…nF']]);
  });

  it('a file named on the command line is read whatever its name (told by its keys)', async () => {
    const dir = freshDir('named');
    const file = path.join(dir, 'client-settings.json');
    cpSync(fixture('cursor/.cursor/mcp.json'), file);
    assert.equal((await findings([file])).length, 3);
  });
});

describe('--fix', () => {
  const ISSUER = 'https://mandate.acme.dev';
  function fakeTarget(): FixTarget & { stored: Map<string, string> } {
    const stored = new Map<string, string>();
    return {
      stored,
      async storeSecret(name, value) {
        stored.set(name, value);
      },
      endpoint: (server) => `${ISSUER}/mcp/${server}`,
    };
  }

  it('Cursor: secrets stored with their exact value, the file rewritten to the endpoints, a backup kept, nothing left', async () => {
    const dir = freshDir('fix-cursor');
    cpSync(fixture('cursor'), dir, { recursive: true });
    const file = path.join(dir, '.cursor/mcp.json');
    const original = readFileSync(file);
    const target = fakeTarget();

    const { code, stdout } = await run([dir], { fix: true }, { fixTarget: target });
    assert.equal(code, 0, 'every finding was moved');
    assert.deepEqual(
      [...target.stored.entries()],
      [
        ['github-github-token', PLANTED.gho],
        ['reports-authorization', PLANTED.jwt],
        ['notes-notes-api-key', PLANTED.notesKey],
      ],
    );

    const text = readFileSync(file, 'utf8');
    assert.deepEqual(JSON.parse(text), {
      mcpServers: {
        github: { url: `${ISSUER}/mcp/github` },
        reports: { url: `${ISSUER}/mcp/reports` },
        notes: { url: `${ISSUER}/mcp/notes` },
      },
    });
    assert.match(text, /^\{\n {2}"mcpServers": \{\n {4}"github": \{\n {6}"url": /, 'two-space indentation kept');

    const backup = `${file}.mandate-backup`;
    assert.ok(existsSync(backup));
    assert.deepEqual(readFileSync(backup), original);
    assert.equal(statSync(backup).mode & 0o777, 0o600);

    // The entry to add to mandate.yaml is printed, and is YAML.
    const yamlStart = stdout.indexOf('servers:\n');
    assert.ok(yamlStart >= 0, stdout);
    const entries = parseYaml(stdout.slice(yamlStart).split('\n').filter((line) => /^(servers:|  )/.test(line)).join('\n')) as { servers: Record<string, unknown>[] };
    assert.deepEqual(entries.servers, [
      { name: 'github', command: 'npx', args: ['-y', '@modelcontextprotocol/server-github'], env: { GITHUB_API_URL: 'https://api.github.com' }, auth: { kind: 'secret', secret: 'github-github-token', env: 'GITHUB_TOKEN' } },
      { name: 'reports', url: 'https://reports.acme.dev/mcp', auth: { kind: 'secret', secret: 'reports-authorization', header: 'Authorization', scheme: 'Bearer' } },
      { name: 'notes', command: 'node', args: ['./notes/server.js'], env: { NOTES_DIR: '/home/dev/notes' }, auth: { kind: 'secret', secret: 'notes-notes-api-key', env: 'NOTES_API_KEY' } },
    ]);

    const again = await run([dir]);
    assert.equal(again.code, 0, 'the rewritten file has no finding');
  });

  it("each client's own remote entry: Claude Code type http, Windsurf serverUrl, Claude Desktop through mcp-remote", async () => {
    const dir = freshDir('fix-formats');
    for (const sub of ['claude-code', 'windsurf', 'claude-desktop', 'claude-user']) cpSync(fixture(sub), path.join(dir, sub), { recursive: true });
    const target = fakeTarget();
    const { code, stdout } = await run([dir], { fix: true }, { fixTarget: target });
    assert.equal(code, 1, 'some secrets (in args and URLs) cannot be moved');

    const claudeCode = JSON.parse(readFileSync(path.join(dir, 'claude-code/.mcp.json'), 'utf8')) as { mcpServers: Record<string, unknown> };
    assert.deepEqual(Object.keys(claudeCode.mcpServers), ['openai-tools', 'linear', 'analytics'], 'key order kept');
    assert.deepEqual(claudeCode.mcpServers['openai-tools'], { type: 'http', url: `${ISSUER}/mcp/openai-tools` });
    assert.deepEqual(claudeCode.mcpServers.linear, { type: 'http', url: `${ISSUER}/mcp/linear` });
    assert.equal((claudeCode.mcpServers.analytics as { type: string }).type, 'sse', 'a secret in a URL is left for the user');

    const windsurf = JSON.parse(readFileSync(path.join(dir, 'windsurf/.codeium/windsurf/mcp_config.json'), 'utf8')) as { mcpServers: Record<string, unknown> };
    assert.deepEqual(windsurf.mcpServers.search, { serverUrl: `${ISSUER}/mcp/search` });
    assert.equal((windsurf.mcpServers.signer as { command: string }).command, 'signer-mcp', 'a PEM key (line breaks) cannot go into the store');
    assert.deepEqual((windsurf.mcpServers.repo as { args: string[] }).args.slice(0, 3), ['-y', 'repo-mcp', '--token']);

    const desktop = JSON.parse(readFileSync(path.join(dir, 'claude-desktop/claude_desktop_config.json'), 'utf8')) as { mcpServers: Record<string, unknown> };
    assert.deepEqual(desktop.mcpServers.github, { command: 'npx', args: ['-y', 'mcp-remote', `${ISSUER}/mcp/github`] });

    const user = JSON.parse(readFileSync(path.join(dir, 'claude-user/.claude.json'), 'utf8')) as { numStartups: number; projects: Record<string, { mcpServers: Record<string, unknown> }> };
    assert.equal(user.numStartups, 42, 'the rest of the file is kept');
    assert.deepEqual(user.projects['/home/dev/shop']!.mcpServers.stripe, { type: 'http', url: `${ISSUER}/mcp/stripe` });

    assert.equal(target.stored.get('search-x-api-key'), PLANTED.searchKey);
    assert.equal(target.stored.get('stripe-stripe-secret-key'), PLANTED.stripeLive);

    const again = await findings([dir]);
    assert.deepEqual(again.map((f) => f.location).sort(), ['args[2]', 'args[2]', 'args[3]', 'env.SIGNING_KEY', 'url'], 'only what could not be moved is left');
    assert.match(stdout, /server signer: not changed: the value of env\.SIGNING_KEY has a line break/);
    assert.match(stdout, /server postgres: not changed: the secret in args\[2\] is not an environment variable/);
    assert.match(stdout, /server analytics: not changed: it uses the older HTTP\+SSE transport/);
  });

  it('a file with comments is not rewritten, and nothing of it is stored', async () => {
    const dir = freshDir('fix-vscode');
    cpSync(fixture('vscode'), dir, { recursive: true });
    const file = path.join(dir, '.vscode/mcp.json');
    const before = readFileSync(file, 'utf8');
    const target = fakeTarget();
    const { code, stdout } = await run([dir], { fix: true }, { fixTarget: target });
    assert.equal(code, 1);
    assert.match(stdout, /has comments, which rewriting it would lose/);
    assert.equal(readFileSync(file, 'utf8'), before);
    assert.equal(existsSync(`${file}.mandate-backup`), false);
    assert.equal(target.stored.size, 0);
  });

  it('VS Code without comments: type http', async () => {
    const dir = freshDir('fix-vscode-plain');
    mkdirSync(path.join(dir, '.vscode'));
    const file = path.join(dir, '.vscode/mcp.json');
    writeFileSync(file, `${JSON.stringify({ inputs: [], servers: { github: { type: 'stdio', command: 'npx', args: ['-y', 'gh-mcp'], env: { GITHUB_TOKEN: PLANTED.ghp } } } }, null, 2)}\n`);
    const target = fakeTarget();
    assert.equal((await run([dir], { fix: true }, { fixTarget: target })).code, 0);
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { inputs: [], servers: { github: { type: 'http', url: `${ISSUER}/mcp/github` } } });
    assert.equal(target.stored.get('github-github-token'), PLANTED.ghp);
  });

  it("an entry's other settings (disabled, autoApprove…) are kept in the new entry", async () => {
    const dir = freshDir('fix-extra');
    const file = path.join(dir, 'mcp_config.json');
    writeFileSync(file, `${JSON.stringify({ mcpServers: { notes: { command: 'notes-mcp', env: { NOTES_TOKEN: PLANTED.notesKey }, disabled: true, autoApprove: ['list'] } } }, null, 2)}\n`);
    assert.equal((await run([dir], { fix: true }, { fixTarget: fakeTarget() })).code, 0);
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { mcpServers: { notes: { serverUrl: `${ISSUER}/mcp/notes`, disabled: true, autoApprove: ['list'] } } });
  });

  it('mandate.yaml is not rewritten: its env secrets are stored and what to change is printed', async () => {
    const dir = freshDir('fix-mandate');
    cpSync(fixture('mandate/mandate.yaml'), path.join(dir, 'mandate.yaml'));
    const before = readFileSync(path.join(dir, 'mandate.yaml'), 'utf8');
    const target = fakeTarget();
    const { code, stdout } = await run([dir], { fix: true }, { fixTarget: target });
    assert.equal(code, 1);
    assert.equal(readFileSync(path.join(dir, 'mandate.yaml'), 'utf8'), before);
    assert.equal(target.stored.get('slack-slack-bot-token'), PLANTED.mandateSlack);
    assert.match(stdout, /server slack: stored secret slack-slack-bot-token; mandate.yaml is not rewritten: remove env\.SLACK_BOT_TOKEN and add\n {4}auth: \{ kind: secret, secret: slack-slack-bot-token, env: SLACK_BOT_TOKEN \}\n/);
    assert.match(stdout, /server search: not changed: the secret in args\[0\]/);
    assert.match(stdout, /server payments: not changed: it has 3 secrets \(env\.PAYMENTS_RK, env\.DB_PASSWORD, env\.ADMIN_PASSWORD\), and a server's auth in mandate.yaml carries one/);
    assert.deepEqual([...target.stored.keys()], ['slack-slack-bot-token']);
  });

  it('the same secret name for another value gets another name; a failing store changes nothing', async () => {
    const dir = freshDir('fix-store-fails');
    cpSync(fixture('cursor'), dir, { recursive: true });
    const file = path.join(dir, '.cursor/mcp.json');
    const before = readFileSync(file, 'utf8');
    const failing: FixTarget = {
      async storeSecret(_name, value) {
        throw new Error(`store refused ${value}`);
      },
      endpoint: (server) => `${ISSUER}/mcp/${server}`,
    };
    const { code, stderr } = await run([dir], { fix: true }, { fixTarget: failing });
    assert.equal(code, 1);
    assert.match(stderr, /could not store secret github-github-token: store refused \[redacted\]/);
    assert.equal(readFileSync(file, 'utf8'), before);
  });

  it('a backup that exists is kept; the new one gets the next name', async () => {
    const dir = freshDir('fix-backup');
    cpSync(fixture('cursor'), dir, { recursive: true });
    const file = path.join(dir, '.cursor/mcp.json');
    writeFileSync(`${file}.mandate-backup`, 'older');
    await run([dir], { fix: true }, { fixTarget: fakeTarget() });
    assert.equal(readFileSync(`${file}.mandate-backup`, 'utf8'), 'older');
    assert.ok(readFileSync(`${file}.mandate-backup.2`, 'utf8').includes('"mcpServers"'));
  });
});
