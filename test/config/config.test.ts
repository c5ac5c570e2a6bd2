/**
 * The configuration contract, through the real CLI: a bad file stops
 * `mandate up` (exit 2) with a message naming the field; `mandate config`
 * prints what a good one resolves to; flags beat environment beats file.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { configFiles } from '../helpers/config-files.ts';
import { freePort, startProcess, waitFor, MANDATE, NODE } from '../helpers/process.ts';
import { mandate } from '../cli/run.ts';

const { dir, dataDir, file } = configFiles('mandate-config-');

describe('mandate up refuses a bad configuration, naming the field', { timeout: 120_000, concurrency: 3 }, () => {
  const cases: { name: string; yaml: string; message: RegExp }[] = [
    { name: 'unknown top-level key', yaml: 'servrs: []\n', message: /Unrecognized key.*"servrs"/ },
    { name: 'unknown key under gateway', yaml: 'gateway:\n  maxBody: 4096\n', message: /gateway: Unrecognized key.*"maxBody"/ },
    { name: 'unknown key on a server', yaml: 'servers:\n  - name: files\n    command: x\n    comand: y\n', message: /servers\[0\].*"comand"/ },
    { name: 'server name with capitals (Files)', yaml: 'servers:\n  - name: Files\n    command: x\n', message: /servers\[0\]\.name: must be lowercase/ },
    { name: 'server name with a leading hyphen', yaml: 'servers:\n  - name: "-files"\n    command: x\n', message: /servers\[0\]\.name/ },
    { name: 'server name of 64 characters', yaml: `servers:\n  - name: ${'a'.repeat(64)}\n    command: x\n`, message: /servers\[0\]\.name/ },
    { name: 'server name with a slash', yaml: 'servers:\n  - name: a/b\n    command: x\n', message: /servers\[0\]\.name/ },
    { name: 'both url and command', yaml: 'servers:\n  - name: files\n    command: x\n    url: http://127.0.0.1:1/mcp\n', message: /servers\[0\]: set exactly one of `url`.*`command`/ },
    { name: 'neither url nor command', yaml: 'servers:\n  - name: files\n', message: /servers\[0\]: set exactly one of/ },
    { name: 'duplicate server names', yaml: 'servers:\n  - name: files\n    command: x\n  - name: web\n    url: http://127.0.0.1:1/mcp\n  - name: files\n    command: y\n', message: /servers\[2\]\.name: duplicate server name "files"/ },
    { name: 'a url with credentials', yaml: 'servers:\n  - name: web\n    url: https://user:secret@example.com/mcp\n', message: /servers\[0\]\.url: must be an absolute http\(s\) URL without credentials/ },
    { name: 'a url that is not http(s)', yaml: 'servers:\n  - name: web\n    url: ftp://example.com/mcp\n', message: /servers\[0\]\.url/ },
    { name: 'args on an HTTP server', yaml: 'servers:\n  - name: web\n    url: http://127.0.0.1:1/mcp\n    args: [x]\n', message: /servers\[0\]: `args`, `env` and `cwd` apply only to a stdio server/ },
    { name: 'a server timeout under 100 ms', yaml: 'servers:\n  - name: files\n    command: x\n    timeoutMs: 50\n', message: /servers\[0\]\.timeoutMs/ },
    { name: 'maxBodyBytes under 1024', yaml: 'gateway:\n  maxBodyBytes: 10\n', message: /gateway\.maxBodyBytes/ },
    { name: 'a port as a string', yaml: 'listen:\n  port: "8080"\n', message: /listen\.port/ },
    { name: 'a log level that does not exist', yaml: 'log:\n  level: loud\n', message: /log\.level/ },
    { name: 'an approvals ttl under 60 seconds', yaml: 'approvals:\n  ttlSeconds: 59\n', message: /approvals\.ttlSeconds/ },
    { name: 'an approvals ttl over a day', yaml: 'approvals:\n  ttlSeconds: 86401\n', message: /approvals\.ttlSeconds/ },
    { name: 'an unknown key under approvals', yaml: 'approvals:\n  ttl: 900\n', message: /approvals: Unrecognized key.*"ttl"/ },
    { name: 'a tasks maximum under 60 seconds', yaml: 'tasks:\n  maxTtlSeconds: 59\n  defaultTtlSeconds: 59\n', message: /tasks\.maxTtlSeconds/ },
    { name: 'a tasks maximum over a week', yaml: 'tasks:\n  maxTtlSeconds: 604801\n', message: /tasks\.maxTtlSeconds/ },
    { name: 'a tasks default over the maximum', yaml: 'tasks:\n  maxTtlSeconds: 600\n', message: /tasks\.defaultTtlSeconds: tasks\.defaultTtlSeconds must not exceed tasks\.maxTtlSeconds/ },
    { name: 'an audit durability that does not exist', yaml: 'audit:\n  durability: eventually\n', message: /audit\.durability/ },
    { name: 'a journal sync that does not exist', yaml: 'audit:\n  journalSync: later\n', message: /audit\.journalSync/ },
    { name: 'an allowed origin with a path', yaml: 'gateway:\n  allowedOrigins: [https://app.example.com/path]\n', message: /gateway\.allowedOrigins: "https:\/\/app\.example\.com\/path" is not an origin/ },
    { name: 'an issuer with a query', yaml: 'issuer: https://gw.example.com/?tenant=1\n', message: /issuer: must not have a query/ },
    { name: 'invalid YAML', yaml: 'servers: [\n  name: x\n', message: /not valid YAML/ },
    { name: 'a duplicate YAML key', yaml: 'issuer: http://localhost:1\nissuer: http://localhost:2\n', message: /not valid YAML[\s\S]*unique/ },
    { name: 'a list at the top level', yaml: '- name: files\n  command: x\n', message: /top level must be a mapping/ },
    { name: 'servers as a mapping', yaml: 'servers:\n  files:\n    command: x\n', message: /servers/ },
  ];

  for (const { name, yaml, message } of cases) {
    it(name, async () => {
      const config = file(yaml);
      const out = await mandate(['up', '--config', config, '--port', '0', '--data', dataDir], { timeoutMs: 15_000 });
      assert.equal(out.killed, false, `mandate up started serving with a bad config:\n${out.stdout}`);
      assert.equal(out.code, 2, `exit ${out.code}\n${out.stderr}`);
      assert.match(out.stderr, message);
      assert.ok(out.stderr.includes(config), 'the message names the file');
      assert.doesNotMatch(out.stderr, /\n\s+at /, 'a stack trace was printed');
      assert.equal(out.stdout, '', 'nothing claims the gateway is listening');
      // The secret in a URL with credentials is not echoed back.
      assert.doesNotMatch(out.stderr, /user:secret/);
    });
  }

  it('a missing --config file: exit 2 naming the file', async () => {
    const missing = path.join(dir, 'does-not-exist.yaml');
    const out = await mandate(['up', '--config', missing, '--port', '0', '--data', dataDir], { timeoutMs: 15_000 });
    assert.equal(out.killed, false);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /does-not-exist\.yaml: cannot read configuration file \(ENOENT\)/);
  });

  it('a missing MANDATE_CONFIG file: exit 2 too (no silent fallback to ./mandate.yaml)', async () => {
    const out = await mandate(['up', '--port', '0', '--data', dataDir], { env: { MANDATE_CONFIG: path.join(dir, 'nope.yaml') }, timeoutMs: 15_000 });
    assert.equal(out.killed, false);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /nope\.yaml: cannot read configuration file/);
  });

  it('the same checks apply to `mandate config`', async () => {
    const out = await mandate(['config', '--config', file('servers:\n  - name: Files\n    command: x\n')]);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /servers\[0\]\.name/);
  });
});

describe('mandate config prints what a configuration resolves to', { timeout: 60_000, concurrency: 3 }, () => {
  const yaml = [
    'issuer: https://gw.example.com/base/',
    'servers:',
    '  - name: files',
    '    command: node',
    '    args: [server.js, --root, /srv]',
    '    cwd: tools',
    '    env:',
    '      API_KEY: s3cr3t-value',
    '  - name: web',
    '    url: https://mcp.example.com/mcp',
    '    timeoutMs: 1500',
    '',
  ].join('\n');

  it('text: validity, issuer, one line per server with its endpoint and target', async () => {
    const config = file(yaml, 'resolve.yaml');
    const out = await mandate(['config', '--config', config]);
    assert.equal(out.code, 0, out.stderr);
    const lines = out.stdout.trim().split('\n');
    assert.equal(lines[0], `${config}: valid`);
    assert.equal(lines[1], 'issuer https://gw.example.com/base');
    assert.ok(lines.includes('  files: https://gw.example.com/base/mcp/files -> node server.js --root /srv'), out.stdout);
    assert.ok(lines.includes('  web: https://gw.example.com/base/mcp/web -> https://mcp.example.com/mcp'), out.stdout);
    assert.doesNotMatch(out.stdout, /s3cr3t-value/, 'a server env value was printed');
  });

  it('--json: resolved servers, defaults filled in, env names without values, cwd relative to the file', async () => {
    const config = file(yaml, 'resolve-json.yaml');
    const out = await mandate(['config', '--config', config, '--json']);
    assert.equal(out.code, 0, out.stderr);
    assert.doesNotMatch(out.stdout, /s3cr3t-value/);
    const resolved = JSON.parse(out.stdout) as {
      issuer: string;
      configPath: string;
      servers: { name: string; endpoint: string; transport: string; env: unknown; cwd?: string; timeoutMs?: number }[];
      gateway: { maxBodyBytes: number; allowedOrigins: string[] };
      listen: { host: string; port: number };
      audit: { durability: string; journalSync: string };
    };
    assert.equal(resolved.issuer, 'https://gw.example.com/base');
    assert.equal(resolved.audit.durability, 'power', 'evidence survives power loss unless configured otherwise');
    assert.equal(resolved.audit.journalSync, 'while-forwarding');
    assert.equal(resolved.configPath, config);
    assert.deepEqual(resolved.servers.map((s) => [s.name, s.endpoint, s.transport]), [
      ['files', 'https://gw.example.com/base/mcp/files', 'stdio'],
      ['web', 'https://gw.example.com/base/mcp/web', 'http'],
    ]);
    assert.deepEqual(resolved.servers[0]?.env, ['API_KEY']);
    assert.equal(resolved.servers[0]?.cwd, path.join(dir, 'tools'));
    assert.equal(resolved.servers[1]?.timeoutMs, 1500);
    assert.equal(resolved.gateway.maxBodyBytes, 1024 * 1024);
    assert.deepEqual(resolved.gateway.allowedOrigins, ['https://gw.example.com']);
    assert.deepEqual(resolved.listen, { host: '127.0.0.1', port: 8080, trustedProxies: [] });
  });

  it('--json never prints a database password from MANDATE_DATABASE_URL', async () => {
    const config = file(yaml, 'resolve-db.yaml');
    const out = await mandate(['config', '--config', config, '--json'], { env: { MANDATE_DATABASE_URL: 'postgres://mandate:hunter2@db.example.com:5432/mandate' } });
    assert.equal(out.code, 0, out.stderr);
    // The database URL is shown as host:port/database only.
    assert.doesNotMatch(out.stdout, /hunter2/, 'the database password was printed');
  });

  it('warnings: "*" in allowedOrigins and plain http on a public issuer', async () => {
    const out = await mandate(['config', '--config', file('issuer: http://gw.example.com\ngateway:\n  allowedOrigins: ["*"]\n')]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /warning: gateway\.allowedOrigins contains "\*"/);
    assert.match(out.stdout, /warning: issuer http:\/\/gw\.example\.com is plain http on a non-loopback host/);
  });

  it('an empty file is a valid configuration with no servers', async () => {
    const out = await mandate(['config', '--config', file('')]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /: valid\nissuer http:\/\/localhost:8080\n$/);
  });

  it('MANDATE_CONFIG is honoured, and --config beats it', async () => {
    const viaEnv = file('servers:\n  - name: from-env\n    command: x\n', 'env.yaml');
    const viaFlag = file('servers:\n  - name: from-flag\n    command: x\n', 'flag.yaml');
    const env = await mandate(['config'], { env: { MANDATE_CONFIG: viaEnv } });
    assert.equal(env.code, 0, env.stderr);
    assert.match(env.stdout, /from-env/);
    const both = await mandate(['config', '--config', viaFlag], { env: { MANDATE_CONFIG: viaEnv } });
    assert.equal(both.code, 0, both.stderr);
    assert.match(both.stdout, /from-flag/);
    assert.doesNotMatch(both.stdout, /from-env/);
  });

  it('without --config or MANDATE_CONFIG, ./mandate.yaml in the working directory is used; a relative --config is relative to it', async () => {
    const cwd = path.join(dir, 'project');
    mkdirSync(cwd, { recursive: true });
    writeFileSync(path.join(cwd, 'mandate.yaml'), 'servers:\n  - name: local-file\n    command: x\n');
    writeFileSync(path.join(cwd, 'other.yaml'), 'servers:\n  - name: relative\n    command: x\n');
    const local = await mandate(['config'], { cwd });
    assert.equal(local.code, 0, local.stderr);
    assert.match(local.stdout, /local-file/);
    const relative = await mandate(['config', '--config', 'other.yaml'], { cwd });
    assert.equal(relative.code, 0, relative.stderr);
    assert.ok(relative.stdout.startsWith(`${path.join(cwd, 'other.yaml')}: valid`), relative.stdout);
    const none = await mandate(['config'], { cwd: path.join(dir) });
    assert.equal(none.code, 0);
    assert.match(none.stdout, /\(no file\): valid/);
    assert.match(none.stdout, /warning: no configuration file/);
  });
});

describe('mandate up: port and configuration from flags and environment', { timeout: 120_000, concurrency: 4 }, () => {
  const twoServers = () => file('servers:\n  - name: one\n    command: x\n  - name: two\n    url: http://127.0.0.1:1/mcp\nlog:\n  level: warn\n');

  async function upAndProbe(args: string[], env: Record<string, string>, port: number): Promise<{ servers: unknown; output: string }> {
    const proc = startProcess(NODE, [MANDATE, 'up', '--data', path.join(dataDir, `up-${port}`), ...args], { env });
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, `mandate on port ${port}: ${proc.output()}`, 15_000);
      // Signal handlers are in place once the banner is printed (see the SIGTERM test in test/cli).
      await waitFor(async () => proc.output().includes('Mandate is listening'), 'the start banner', 15_000);
      const body = (await (await fetch(`http://127.0.0.1:${port}/readyz`)).json()) as { servers: unknown };
      return { servers: body.servers, output: proc.output() };
    } finally {
      assert.equal(await proc.stop('SIGTERM'), 0, 'a clean stop exits 0');
    }
  }

  it('MANDATE_PORT is honoured', async () => {
    const port = await freePort();
    const { servers, output } = await upAndProbe(['--config', twoServers()], { MANDATE_PORT: String(port) }, port);
    assert.equal(servers, 2);
    assert.match(output, new RegExp(`listening on http://127\\.0\\.0\\.1:${port}`));
  });

  it('--port beats MANDATE_PORT', async () => {
    const port = await freePort();
    const { servers } = await upAndProbe(['--config', twoServers(), '--port', String(port)], { MANDATE_PORT: 'not-a-port' }, port);
    assert.equal(servers, 2);
  });

  it('MANDATE_CONFIG is honoured by up (not ./mandate.yaml)', async () => {
    const port = await freePort();
    const { servers } = await upAndProbe(['--port', String(port)], { MANDATE_CONFIG: twoServers() }, port);
    // The repository's own mandate.yaml (the working directory) has one server; the MANDATE_CONFIG file has two.
    assert.equal(servers, 2);
  });

  it('MANDATE_PORT=abc → exit 2 naming MANDATE_PORT', async () => {
    const out = await mandate(['up', '--config', twoServers(), '--data', dataDir], { env: { MANDATE_PORT: 'abc' }, timeoutMs: 15_000 });
    assert.equal(out.killed, false);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /MANDATE_PORT: port must be a whole number from 0 to 65535 \(got "abc"\)/);
  });
});
