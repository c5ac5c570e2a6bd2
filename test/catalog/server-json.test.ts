/** server.json: what is accepted and refused, list answers, loading, the export round trip, and how an upstream is derived. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import {
  META_ADDED_FIELD,
  SERVER_JSON_LIMITS,
  ServerJsonError,
  exportServerJson,
  isVersionRange,
  loadServerJson,
  parseServerJson,
  readServerJsonDocument,
  stripGovernance,
  upstreamOf,
} from '../../src/catalog/server-json.ts';
import { GOVERNANCE_META_KEY, PUBLISHER_META_KEY, type Governance, type JsonObject, type ServerJson } from '../../src/catalog/types.ts';

const FIXTURES = path.join(import.meta.dirname, '..', 'fixtures', 'server-json');
const LIST_FIXTURE = 'registry-list.json';
const serverFixtures = readdirSync(FIXTURES).filter((f) => f.endsWith('.json') && f !== LIST_FIXTURE).sort();

function fixtureText(file: string): string {
  return readFileSync(path.join(FIXTURES, file), 'utf8');
}
function fixture(file: string): ServerJson {
  return JSON.parse(fixtureText(file)) as ServerJson;
}

const governance: Governance = {
  route: 'weather',
  owner: 'alice',
  team: 'platform',
  environment: 'prod',
  risk: 'medium',
  expiresAt: '2026-03-01T00:00:00.000Z',
  status: 'approved',
  expectedIdentity: { spkiSha256: ['n3x0q1Uo8dG2b3x5Wk6Yt4Lr0pQ9sV7mJc2Hf8Ae1Bk='] },
  source: 'catalog',
};

/** A valid server.json to break one field at a time. */
function valid(): ServerJson {
  return {
    name: 'io.example/weather',
    description: 'Weather forecasts',
    version: '1.0.0',
    remotes: [{ type: 'streamable-http', url: 'https://mcp.example.com/mcp', headers: [{ name: 'Authorization', isRequired: true, isSecret: true }] }],
    packages: [
      {
        registryType: 'npm',
        identifier: '@example/weather-mcp',
        version: '1.0.0',
        transport: { type: 'stdio' },
        packageArguments: [{ type: 'positional', value: 'serve' }],
        environmentVariables: [{ name: 'API_KEY', isRequired: true }],
      },
    ],
  };
}

type Mutable = { [key: string]: any };

/** Asserts that parsing refuses `value` with a message containing each of `expected`. */
function refused(value: unknown, ...expected: string[]): ServerJsonError {
  let caught: unknown;
  try {
    parseServerJson(value, 'weather.json');
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ServerJsonError, `expected a ServerJsonError, got ${String(caught)}`);
  for (const text of expected) assert.ok(caught.message.includes(text), `message:\n${caught.message}\nshould contain:\n${text}`);
  return caught;
}

function broken(mutate: (s: Mutable) => void): Mutable {
  const s = valid() as Mutable;
  mutate(s);
  return s;
}

describe('server.json fixtures: accepted, and exported back unchanged', () => {
  it('has at least 8 server.json fixtures, each stored in its canonical JSON form', () => {
    assert.ok(serverFixtures.length >= 8, `only ${serverFixtures.length} fixtures`);
    for (const file of serverFixtures) assert.equal(fixtureText(file), `${JSON.stringify(fixture(file), null, 2)}\n`, file);
  });

  for (const file of serverFixtures) {
    it(`${file}: parse returns the value itself, and export then strip gives back the file's text`, () => {
      const original = fixture(file);
      const parsed = parseServerJson(original, file);
      assert.deepEqual(parsed, original);
      assert.notEqual(parsed, original, 'a copy: later changes to the input do not reach the parsed value');

      const exported = exportServerJson(parsed, governance);
      const meta = exported._meta as JsonObject;
      const record = { ...(meta[GOVERNANCE_META_KEY] as JsonObject) };
      const added = record[META_ADDED_FIELD];
      delete record[META_ADDED_FIELD];
      assert.deepEqual(record, governance);
      assert.equal(added, original._meta === undefined ? true : undefined, 'metaAdded says whether export created _meta');
      assert.deepEqual(Object.keys(meta).at(-1), GOVERNANCE_META_KEY, 'the record comes last in _meta');
      if (original._meta !== undefined) {
        for (const [key, value] of Object.entries(original._meta as JsonObject)) assert.deepEqual(meta[key], value, `_meta["${key}"] survives export`);
      }

      const stripped = stripGovernance(exported);
      assert.deepEqual(stripped, original);
      assert.equal(`${JSON.stringify(stripped, null, 2)}\n`, fixtureText(file), 'same text: same keys in the same order');
      assert.deepEqual(parseServerJson(stripped, file), original, 'a stripped export imports again');
    });
  }

  it('keeps unknown fields, top-level and nested, as given', () => {
    const parsed = parseServerJson(fixture('local-http-package.json'), 'local-http-package.json');
    assert.deepEqual(parsed['x-example-tier'], { level: 'gold', since: 2024, ratio: 0.75, tags: ['internal', 'beta'] });
    assert.equal((parsed.packages as JsonObject[])[0]?.['x-notes'], 'kept as given');
  });

  it('keeps unicode text exactly, and counts the description limit in characters, not bytes or UTF-16 units', () => {
    const notes = parseServerJson(fixture('notes-npm.json'), 'notes-npm.json');
    assert.equal(notes.description, 'Notizen, メモ and notes: search, tag and link them — offline too ✓');
    // 100 characters that take 200 UTF-16 units and 400 bytes.
    parseServerJson({ ...valid(), description: '🌦'.repeat(100) }, 'weather.json');
    refused({ ...valid(), description: '🌦'.repeat(101) }, 'weather.json: description: must be at most 100 characters (it has 101)');
  });
});

describe('export and strip', () => {
  it('puts the record under dev.mandate/governance and leaves the publisher-provided _meta as it was', () => {
    const weather = parseServerJson(fixture('weather-remote.json'), 'weather-remote.json');
    const exported = exportServerJson(weather, governance);
    const meta = exported._meta as JsonObject;
    assert.deepEqual(Object.keys(meta), [PUBLISHER_META_KEY, 'com.example.ops/oncall', GOVERNANCE_META_KEY]);
    assert.deepEqual(meta[PUBLISHER_META_KEY], (fixture('weather-remote.json')._meta as JsonObject)[PUBLISHER_META_KEY]);
    assert.equal(meta[GOVERNANCE_META_KEY] && (meta[GOVERNANCE_META_KEY] as JsonObject).route, 'weather');
  });

  it('does not change its input, and without governance returns an equal copy', () => {
    const weather = parseServerJson(fixture('weather-remote.json'), 'weather-remote.json');
    const before = structuredClone(weather);
    exportServerJson(weather, governance);
    assert.deepEqual(weather, before);
    const plain = exportServerJson(weather, null);
    assert.deepEqual(plain, weather);
    assert.notEqual(plain, weather);
  });

  it('adds extra members to the record, and refuses one that would overwrite a governance field', () => {
    const minimal = fixture('minimal.json');
    const exported = exportServerJson(minimal, governance, { revision: 7, pins: [{ name: 'forecast', hash: 'ab' }] });
    const record = (exported._meta as JsonObject)[GOVERNANCE_META_KEY] as JsonObject;
    assert.equal(record.revision, 7);
    assert.deepEqual(record.pins, [{ name: 'forecast', hash: 'ab' }]);
    assert.throws(() => exportServerJson(minimal, governance, { owner: 'mallory' }), /would overwrite/);
    assert.throws(() => exportServerJson(minimal, governance, { [META_ADDED_FIELD]: false }), /would overwrite/);
    assert.throws(() => exportServerJson(minimal, null, { revision: 1 }), /need a governance record/);
  });

  it('leaves out governance fields that are undefined instead of carrying undefined', () => {
    const exported = exportServerJson(fixture('minimal.json'), { ...governance, team: undefined });
    assert.equal(Object.hasOwn((exported._meta as JsonObject)[GOVERNANCE_META_KEY] as JsonObject, 'team'), false);
  });

  it('round-trips an empty _meta that was there (even as the last member) and one that was not', () => {
    const withEmpty: ServerJson = { ...valid(), _meta: {} };
    const exported = exportServerJson(parseServerJson(withEmpty, 'x.json'), governance);
    assert.equal(((exported._meta as JsonObject)[GOVERNANCE_META_KEY] as JsonObject)[META_ADDED_FIELD], undefined);
    assert.deepEqual(stripGovernance(exported), withEmpty);
    assert.deepEqual(Object.keys(stripGovernance(exported)), Object.keys(withEmpty));

    const without = valid();
    const exported2 = exportServerJson(without, governance);
    assert.deepEqual(Object.keys(exported2).at(-1), '_meta', 'an added _meta comes last');
    assert.deepEqual(stripGovernance(exported2), without);
  });

  it('strip without a record changes nothing, and keeps _meta that export did not add', () => {
    const weather = fixture('weather-remote.json');
    assert.deepEqual(stripGovernance(weather), weather);
    const foreign: ServerJson = { ...valid(), _meta: { [GOVERNANCE_META_KEY]: { route: 'x' } } };
    assert.deepEqual(stripGovernance(foreign), { ...valid(), _meta: {} }, 'no metaAdded: the (now empty) _meta stays');
  });

  it('refuses to import a server.json that carries a governance record, and accepts it once stripped', () => {
    const exported = exportServerJson(fixture('weather-remote.json'), governance);
    const error = refused(exported, `weather.json: _meta["${GOVERNANCE_META_KEY}"]: is Mandate's governance record, which is never taken from a file`);
    assert.equal(error.issues.length, 1);
    assert.deepEqual(parseServerJson(stripGovernance(exported), 'weather.json'), fixture('weather-remote.json'));
  });

  it('refuses a governance record inside a list answer too', () => {
    const list = { servers: [{ server: exportServerJson(valid(), governance) }] };
    assert.throws(() => readServerJsonDocument(list, 'list.json'), (e: Error) => e.message.includes(`list.json: servers[0].server._meta["${GOVERNANCE_META_KEY}"]: is Mandate's governance record`));
  });
});

describe('validation: each rule refuses with the field path', () => {
  const cases: [string, (s: Mutable) => void, string][] = [
    // name
    ['name missing', (s) => delete s.name, 'weather.json: name: is required'],
    ['name not a string', (s) => (s.name = 42), 'weather.json: name: must be a string, not a number'],
    ['name without a slash', (s) => (s.name = 'weather'), 'weather.json: name: must be reverse-DNS "namespace/name"'],
    ['name with two slashes', (s) => (s.name = 'io.example/a/b'), 'name: must be reverse-DNS'],
    ['name with a space', (s) => (s.name = 'io.example/my weather'), 'name: must be reverse-DNS'],
    ['name starting with a dot', (s) => (s.name = '.example/weather'), 'name: must be reverse-DNS'],
    ['name too short', (s) => (s.name = 'a/'), 'name: must be at least 3 characters'],
    ['name too long', (s) => (s.name = `io.example/${'w'.repeat(190)}`), 'name: must be at most 200 characters (it has 201)'],
    // version
    ['version missing', (s) => delete s.version, 'weather.json: version: is required'],
    ['version not a string', (s) => (s.version = 1), 'version: must be a string, not a number'],
    ['version empty', (s) => (s.version = ''), 'version: must not be empty'],
    ['version too long', (s) => (s.version = `1.0.0-${'a'.repeat(250)}`), 'version: must be at most 255 characters'],
    ['version ^', (s) => (s.version = '^1.0'), 'version: must be one exact version, not a range ("^1.0")'],
    ['version ~', (s) => (s.version = '~1'), 'version: must be one exact version, not a range ("~1")'],
    ['version >=', (s) => (s.version = '>=1'), 'not a range (">=1")'],
    ['version *', (s) => (s.version = '*'), 'not a range ("*")'],
    ['version 1.x', (s) => (s.version = '1.x'), 'not a range ("1.x")'],
    ['version ||', (s) => (s.version = '1.2 || 1.3'), 'not a range'],
    ['version hyphen range', (s) => (s.version = '1.0.0 - 2.0.0'), 'not a range'],
    ['version latest', (s) => (s.version = 'latest'), 'version: "latest" is not a version'],
    // description, title, websiteUrl, $schema
    ['description missing', (s) => delete s.description, 'weather.json: description: is required'],
    ['description empty', (s) => (s.description = ''), 'description: must not be empty'],
    ['description too long', (s) => (s.description = 'd'.repeat(101)), 'description: must be at most 100 characters'],
    ['title empty', (s) => (s.title = ''), 'title: must not be empty'],
    ['title only whitespace', (s) => (s.title = '   '), 'title: must not be only whitespace'],
    ['title too long', (s) => (s.title = 't'.repeat(101)), 'title: must be at most 100 characters'],
    ['websiteUrl over http', (s) => (s.websiteUrl = 'http://example.com'), 'websiteUrl: must be an absolute https URL'],
    ['websiteUrl relative', (s) => (s.websiteUrl = '/docs'), 'websiteUrl: must be an absolute https URL'],
    ['$schema not a URL', (s) => (s.$schema = 'server.schema.json'), '$schema: must be an absolute https or http URL'],
    ['$schema of the snake_case era', (s) => (s.$schema = 'https://static.example.com/schemas/2025-07-09/server.schema.json'), '$schema: names schema 2025-07-09, whose snake_case field names'],
    // repository
    ['repository not an object', (s) => (s.repository = 'https://git.example.com/x'), 'repository: must be an object, not a string'],
    ['repository without url', (s) => (s.repository = { source: 'github' }), 'repository.url: is required'],
    ['repository without source', (s) => (s.repository = { url: 'https://git.example.com/x/y' }), 'repository.source: is required'],
    ['repository url not a URL', (s) => (s.repository = { url: 'git.example.com/x', source: 'github' }), 'repository.url: must be an absolute https or http URL'],
    ['repository subfolder climbing out', (s) => (s.repository = { url: 'https://git.example.com/x/y', source: 'github', subfolder: '../etc' }), 'repository.subfolder: must be a clean relative path'],
    ['repository subfolder absolute', (s) => (s.repository = { url: 'https://git.example.com/x/y', source: 'github', subfolder: '/srv' }), 'repository.subfolder: must be a clean relative path'],
    ['repository subfolder with //', (s) => (s.repository = { url: 'https://git.example.com/x/y', source: 'github', subfolder: 'a//b' }), 'repository.subfolder'],
    // icons
    ['icon over http', (s) => (s.icons = [{ src: 'http://example.com/i.png' }]), 'icons[0].src: must be an absolute https URL'],
    ['icon src too long', (s) => (s.icons = [{ src: `https://example.com/${'i'.repeat(240)}.png` }]), 'icons[0].src: must be at most 255 characters'],
    ['icon mime type', (s) => (s.icons = [{ src: 'https://example.com/i.gif', mimeType: 'image/gif' }]), 'icons[0].mimeType: must be one of "image/png"'],
    ['icon sizes', (s) => (s.icons = [{ src: 'https://example.com/i.png', sizes: ['48'] }]), 'icons[0].sizes[0]: must be WxH'],
    ['icon theme', (s) => (s.icons = [{ src: 'https://example.com/i.png', theme: 'blue' }]), 'icons[0].theme: must be one of "light", "dark"'],
    // remotes
    ['remotes not an array', (s) => (s.remotes = { type: 'sse' }), 'remotes: must be an array, not an object'],
    ['remote not an object', (s) => (s.remotes = ['https://x.example.com']), 'remotes[0]: must be an object, not a string'],
    ['remote type stdio', (s) => (s.remotes[0].type = 'stdio'), 'remotes[0].type: must be one of "streamable-http", "sse", not "stdio"'],
    ['remote type missing', (s) => delete s.remotes[0].type, 'remotes[0].type: is required'],
    ['remote url missing', (s) => delete s.remotes[0].url, 'remotes[0].url: is required'],
    ['remote url relative', (s) => (s.remotes[0].url = '/mcp'), 'weather.json: remotes[0].url: must be an absolute https or http URL'],
    ['remote url ftp', (s) => (s.remotes[0].url = 'ftp://x.example.com/mcp'), 'remotes[0].url: must be an absolute https or http URL'],
    ['remote url with a space', (s) => (s.remotes[0].url = 'https://x.example.com/m cp'), 'remotes[0].url: must be an absolute https or http URL'],
    ['remote url with an upper-case scheme', (s) => (s.remotes[0].url = 'HTTPS://x.example.com/mcp'), 'remotes[0].url: must be an absolute https or http URL'],
    ['remote url with an undefined variable', (s) => (s.remotes[0].url = 'https://{tenant}.example.com/mcp'), 'remotes[0].url: uses {tenant}, which is not defined in remotes[0].variables'],
    ['remote header without name', (s) => (s.remotes[0].headers = [{ value: 'x' }]), 'remotes[0].headers[0].name: is required'],
    ['remote header with a bad name', (s) => (s.remotes[0].headers = [{ name: 'X Api' }]), 'remotes[0].headers[0].name: must be an HTTP header name'],
    ['remote headers not an array', (s) => (s.remotes[0].headers = {}), 'remotes[0].headers: must be an array'],
    ['remote variables not an object', (s) => (s.remotes[0].variables = []), 'remotes[0].variables: must be an object, not an array'],
    ['remote variable not an input', (s) => (s.remotes[0].variables = { tenant: 'acme' }), 'remotes[0].variables.tenant: must be an object, not a string'],
    ['input isSecret not boolean', (s) => (s.remotes[0].headers[0].isSecret = 'yes'), 'remotes[0].headers[0].isSecret: must be true or false, not a string'],
    ['input format', (s) => (s.remotes[0].headers[0].format = 'date'), 'remotes[0].headers[0].format: must be one of "string", "number", "boolean", "filepath"'],
    ['input choices', (s) => (s.remotes[0].headers[0].choices = ['a', 1]), 'remotes[0].headers[0].choices[1]: must be a string, not a number'],
    // packages
    ['package registryType missing', (s) => delete s.packages[0].registryType, 'packages[0].registryType: is required'],
    ['package identifier missing', (s) => delete s.packages[0].identifier, 'packages[0].identifier: is required'],
    ['package identifier with a space', (s) => (s.packages[0].identifier = 'weather mcp'), 'packages[0].identifier: must not contain spaces'],
    ['package version latest', (s) => (s.packages[0].version = 'latest'), 'packages[0].version: "latest" is not a version'],
    ['package version range', (s) => (s.packages[0].version = '^1.2.3'), 'packages[0].version: must be one exact version, not a range ("^1.2.3")'],
    ['package version empty', (s) => (s.packages[0].version = ''), 'packages[0].version: must not be empty'],
    ['package registryBaseUrl', (s) => (s.packages[0].registryBaseUrl = 'npm.example.com'), 'packages[0].registryBaseUrl: must be an absolute https or http URL'],
    ['package fileSha256 upper case', (s) => (s.packages[0].fileSha256 = 'A'.repeat(64)), 'packages[0].fileSha256: must be 64 lowercase hex digits'],
    ['package fileSha256 short', (s) => (s.packages[0].fileSha256 = 'ab12'), 'packages[0].fileSha256: must be 64 lowercase hex digits'],
    ['mcpb without fileSha256', (s) => (s.packages[0].registryType = 'mcpb'), 'packages[0].fileSha256: is required for mcpb packages'],
    ['package transport missing', (s) => delete s.packages[0].transport, 'packages[0].transport: is required'],
    ['package transport type', (s) => (s.packages[0].transport = { type: 'websocket' }), 'packages[0].transport.type: must be one of "stdio", "streamable-http", "sse"'],
    ['stdio transport with a url', (s) => (s.packages[0].transport = { type: 'stdio', url: 'http://localhost:1/mcp' }), 'packages[0].transport.url: must be absent for the stdio transport'],
    ['http transport without url', (s) => (s.packages[0].transport = { type: 'streamable-http' }), 'packages[0].transport.url: is required'],
    ['package url with an undefined variable', (s) => (s.packages[0].transport = { type: 'sse', url: 'http://localhost:{port}/sse' }), "packages[0].transport.url: uses {port}, which is not defined in packages[0]'s arguments and environment variables"],
    ['argument type', (s) => (s.packages[0].packageArguments = [{ type: 'flag', value: 'x' }]), 'packages[0].packageArguments[0].type: must be one of "positional", "named"'],
    ['named argument without a name', (s) => (s.packages[0].packageArguments = [{ type: 'named', value: 'x' }]), 'packages[0].packageArguments[0].name: is required'],
    ['named argument with a value inside its name', (s) => (s.packages[0].runtimeArguments = [{ type: 'named', name: '--dir <path>' }]), 'packages[0].runtimeArguments[0].name: must be a flag name such as --port'],
    ['positional argument without value or hint', (s) => (s.packages[0].packageArguments = [{ type: 'positional', description: 'x' }]), 'packages[0].packageArguments[0]: a positional argument needs a value or a valueHint'],
    ['argument isRepeated', (s) => (s.packages[0].packageArguments = [{ type: 'positional', value: 'x', isRepeated: 1 }]), 'packages[0].packageArguments[0].isRepeated: must be true or false'],
    ['env without a name', (s) => (s.packages[0].environmentVariables = [{ value: 'x' }]), 'packages[0].environmentVariables[0].name: is required'],
    ['env name with =', (s) => (s.packages[0].environmentVariables = [{ name: 'A=B' }]), 'packages[0].environmentVariables[0].name: must not contain "=" or NUL'],
    ['env isRequired not boolean', (s) => (s.packages[0].environmentVariables[0].isRequired = 'true'), 'packages[0].environmentVariables[0].isRequired: must be true or false'],
    // _meta
    ['_meta not an object', (s) => (s._meta = []), 'weather.json: _meta: must be an object, not an array'],
    ['publisher-provided not an object', (s) => (s._meta = { [PUBLISHER_META_KEY]: 'x' }), `_meta["${PUBLISHER_META_KEY}"]: must be an object, not a string`],
    ['publisher-provided over 4 KiB', (s) => (s._meta = { [PUBLISHER_META_KEY]: { blob: 'x'.repeat(4096) } }), `_meta["${PUBLISHER_META_KEY}"]: is larger than 4096 bytes`],
  ];

  for (const [name, mutate, expected] of cases) {
    it(name, () => {
      refused(broken(mutate), expected);
    });
  }

  it('the valid base passes, and each case above breaks only what it names', () => {
    parseServerJson(valid(), 'weather.json');
    for (const [name, mutate] of cases) {
      const error = refused(broken(mutate));
      assert.equal(error.issues.length, 1, `${name}: ${error.message}`);
    }
  });

  it('refuses what is not an object', () => {
    refused([], 'weather.json: must be a JSON object, not an array');
    refused(null, 'weather.json: must be a JSON object, not null');
    refused('io.example/weather', 'weather.json: must be a JSON object, not a string');
  });

  it('names every bad field in one message, one line each', () => {
    const error = refused({ ...valid(), name: 'bad', version: '^2', description: '' });
    assert.deepEqual(
      error.message.split('\n').map((line) => line.split(':')[1]?.trim()),
      ['name', 'version', 'description'],
    );
    assert.deepEqual(error.source, 'weather.json');
  });

  it('spells out a bounded number of issues and counts the rest', () => {
    const packages = Array.from({ length: 30 }, () => ({ registryType: 'npm' }));
    const error = refused({ ...valid(), packages });
    const lines = error.message.split('\n');
    assert.equal(lines.length, SERVER_JSON_LIMITS.issuesShown + 1);
    assert.equal(lines.at(-1), `weather.json: … and ${60 - SERVER_JSON_LIMITS.issuesShown} more`);
  });

  it('accepts versions that only look unusual', () => {
    for (const version of ['1.0.2', '2.1.0-alpha', 'v3', '2025.12.11', '1.0.0-x.7', '0.4.0-beta.2+build.5']) {
      assert.equal(isVersionRange(version), false, version);
      parseServerJson({ ...valid(), version }, 'weather.json');
    }
  });
});

describe('bounds on hostile input', () => {
  it('refuses a server.json larger than 256 KiB', () => {
    const big = { ...valid(), 'x-blob': 'x'.repeat(SERVER_JSON_LIMITS.serverBytes) };
    refused(big, `weather.json: is larger than ${SERVER_JSON_LIMITS.serverBytes} bytes as JSON`);
  });

  it('refuses one whose size is in multi-byte characters rather than in length', () => {
    // 100 000 UTF-16 units but 300 000 bytes of UTF-8.
    refused({ ...valid(), 'x-blob': 'メ'.repeat(100_000) }, 'is larger than 262144 bytes as JSON');
  });

  it('refuses deep nesting, in _meta as anywhere', () => {
    let deep: unknown = 'bottom';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    refused({ ...valid(), _meta: { 'com.example/x': deep } }, 'nests deeper than 32 levels');
  });

  it('refuses more remotes or packages than the limit', () => {
    const remotes = Array.from({ length: SERVER_JSON_LIMITS.remotes + 1 }, () => ({ type: 'streamable-http', url: 'https://x.example.com/mcp' }));
    refused({ ...valid(), remotes }, `weather.json: remotes: has 33 items; at most ${SERVER_JSON_LIMITS.remotes} are accepted`);
  });

  it('refuses values that are not plain JSON rather than normalising them', () => {
    refused({ ...valid(), extra: undefined }, 'weather.json: extra: is undefined, not a JSON value');
    refused({ ...valid(), extra: () => 1 }, 'extra: is a function, not a JSON value');
    refused({ ...valid(), extra: 1n }, 'extra: is a bigint, not a JSON value');
    refused({ ...valid(), extra: Number.NaN }, 'extra: must be a finite number');
    refused({ ...valid(), extra: new Date(0) }, 'extra: is not a plain JSON object');
    const sparse = [1, 2, 3];
    delete sparse[1];
    refused({ ...valid(), extra: sparse }, 'extra[1]: is missing (a sparse array is not JSON)');
  });

  it('refuses a __proto__ key', () => {
    const hostile = JSON.parse('{"name":"io.example/weather","description":"d","version":"1.0.0","_meta":{"__proto__":{"polluted":true}}}') as unknown;
    refused(hostile, 'weather.json: _meta.__proto__: is not allowed as a key');
  });
});

describe('documents: one server.json, a list answer, a one-server answer', () => {
  it('unwraps a list answer into its server.json objects, dropping the registry wrapper and keeping each server _meta', () => {
    const list = fixture(LIST_FIXTURE) as unknown as { servers: { server: ServerJson }[] };
    const servers = readServerJsonDocument(list, LIST_FIXTURE);
    assert.deepEqual(servers.map((s) => s.name), ['io.example/alpha', 'io.example/beta', 'io.example/gamma']);
    assert.deepEqual(servers, list.servers.map((item) => item.server));
    for (const server of servers) assert.equal(JSON.stringify(server).includes('io.modelcontextprotocol.registry/official'), false);
    assert.deepEqual(servers[1]?._meta, { [PUBLISHER_META_KEY]: { tool: 'ci', run: 4412 } });
  });

  it('unwraps a one-server answer', () => {
    const minimal = fixture('minimal.json');
    const servers = readServerJsonDocument({ server: minimal, _meta: { 'io.modelcontextprotocol.registry/official': { status: 'active' } } }, 'one.json');
    assert.deepEqual(servers, [minimal]);
  });

  it('takes a plain server.json as a list of one, even one with an unknown "servers" field', () => {
    const minimal = fixture('minimal.json');
    assert.deepEqual(readServerJsonDocument(minimal, 'minimal.json'), [minimal]);
    const odd = { ...minimal, servers: 'not a list answer' };
    assert.deepEqual(readServerJsonDocument(odd, 'odd.json'), [odd]);
  });

  it('names the list item and field of a bad server', () => {
    const list = fixture(LIST_FIXTURE) as unknown as { servers: { server: Mutable }[] };
    list.servers[1]!.server.version = '~0.3';
    list.servers[2]!.server.remotes[0].url = 'gamma.example.com/sse';
    assert.throws(
      () => readServerJsonDocument(list, 'list.json'),
      (e: Error) =>
        e instanceof ServerJsonError &&
        e.message === 'list.json: servers[1].server.version: must be one exact version, not a range ("~0.3")\nlist.json: servers[2].server.remotes[0].url: must be an absolute https or http URL',
    );
  });

  it('refuses malformed answers', () => {
    assert.throws(() => readServerJsonDocument({ servers: {} }, 'l.json'), /l\.json: servers: must be an array, not an object/);
    assert.throws(() => readServerJsonDocument({ servers: [{ _meta: {} }] }, 'l.json'), /l\.json: servers\[0\]\.server: is required/);
    assert.throws(() => readServerJsonDocument({ servers: [42] }, 'l.json'), /l\.json: servers\[0\]: must be an object, not a number/);
    assert.throws(() => readServerJsonDocument({ servers: [], metadata: 'x' }, 'l.json'), /l\.json: metadata: must be an object/);
    assert.throws(() => readServerJsonDocument({ server: 'x' }, 'l.json'), /l\.json: server: must be a JSON object, not a string/);
    assert.throws(() => readServerJsonDocument([], 'l.json'), /l\.json: must be a JSON object, not an array/);
    const tooMany = { servers: Array.from({ length: SERVER_JSON_LIMITS.listServers + 1 }, () => ({ server: fixture('minimal.json') })) };
    assert.throws(() => readServerJsonDocument(tooMany, 'l.json'), /l\.json: servers: has 1001 items; at most 1000 are accepted/);
  });
});

describe('loadServerJson', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mandate-server-json-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, content: string | Buffer): string => {
    const file = path.join(dir, name);
    writeFileSync(file, content);
    return file;
  };

  it('reads a file, relative to cwd, with its SHA-256 and absolute source', async () => {
    const loaded = await loadServerJson('weather-remote.json', { cwd: FIXTURES });
    assert.equal(loaded.source, path.join(FIXTURES, 'weather-remote.json'));
    assert.deepEqual(loaded.servers, [fixture('weather-remote.json')]);
    assert.equal(loaded.sha256, createHash('sha256').update(readFileSync(path.join(FIXTURES, 'weather-remote.json'))).digest('hex'));
  });

  it('reads a list answer from a file', async () => {
    const loaded = await loadServerJson(path.join(FIXTURES, LIST_FIXTURE));
    assert.equal(loaded.servers.length, 3);
  });

  it('drops a leading byte-order mark, but hashes the bytes as read', async () => {
    const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(fixtureText('minimal.json'))]);
    const loaded = await loadServerJson(write('bom.json', bytes));
    assert.deepEqual(loaded.servers, [fixture('minimal.json')]);
    assert.equal(loaded.sha256, createHash('sha256').update(bytes).digest('hex'));
  });

  it('names the file when it is not JSON, not UTF-8, missing, a directory or too large', async () => {
    const bad = write('bad.json', '{"name": "io.example/x",');
    await assert.rejects(loadServerJson(bad), (e: Error) => e instanceof ServerJsonError && e.message.startsWith(`${bad}: is not valid JSON (`));
    const latin1 = write('latin1.json', Buffer.from([0x7b, 0x22, 0xe9, 0x22, 0x7d]));
    await assert.rejects(loadServerJson(latin1), { message: `${latin1}: is not UTF-8 text` });
    await assert.rejects(loadServerJson(path.join(dir, 'absent.json')), { message: `${path.join(dir, 'absent.json')}: cannot be read (ENOENT)` });
    await assert.rejects(loadServerJson(dir), { message: `${dir}: is not a regular file` });
    const file = path.join(FIXTURES, 'weather-remote.json');
    await assert.rejects(loadServerJson(file, { maxBytes: 100 }), (e: Error) => e.message.startsWith(`${file}: is `) && e.message.endsWith('bytes; at most 100 are read'));
  });

  it('names the file and field of an invalid server.json', async () => {
    const file = write('weather.json', JSON.stringify({ ...valid(), remotes: [{ type: 'streamable-http', url: 'mcp.example.com' }] }));
    await assert.rejects(loadServerJson(file), { message: `${file}: remotes[0].url: must be an absolute https or http URL` });
  });

  it('refuses a URL when no fetch is given', async () => {
    await assert.rejects(loadServerJson('https://servers.example.com/weather.json'), {
      message: "https://servers.example.com/weather.json: reading a URL needs the gateway's guarded fetch, and none was given",
    });
  });

  it('refuses other schemes and URLs with credentials, without fetching', async () => {
    const fetch = () => assert.fail('no fetch expected');
    await assert.rejects(loadServerJson('file:///etc/passwd', { fetch }), { message: 'file:///etc/passwd: only https and http URLs (or file paths) are read' });
    await assert.rejects(loadServerJson('ftp://servers.example.com/x.json', { fetch }), /only https and http URLs/);
    await assert.rejects(loadServerJson('https://user:pw@servers.example.com/x.json', { fetch }), /must not carry a user name or password/);
  });

  it('reads a URL through the given fetch', async () => {
    const asked: string[] = [];
    const text = fixtureText(LIST_FIXTURE);
    const fetch = async (url: string) => {
      asked.push(url);
      return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
    };
    const url = 'https://servers.example.com/v0.1/servers?limit=3';
    const loaded = await loadServerJson(url, { fetch });
    assert.deepEqual(asked, [url]);
    assert.equal(loaded.source, url);
    assert.deepEqual(loaded.servers.map((s) => s.name), ['io.example/alpha', 'io.example/beta', 'io.example/gamma']);
    assert.equal(loaded.sha256, createHash('sha256').update(text).digest('hex'));
  });

  it('refuses an answer that is not 200, not JSON, too large or that fails', async () => {
    const url = 'https://servers.example.com/weather.json';
    await assert.rejects(loadServerJson(url, { fetch: async () => new Response('gone', { status: 404 }) }), { message: `${url}: answered HTTP 404, not 200` });
    await assert.rejects(loadServerJson(url, { fetch: async () => new Response(null, { status: 204 }) }), { message: `${url}: answered HTTP 204, not 200` });
    // The guarded fetch does not follow redirects: a redirect is an answer that is not 200.
    await assert.rejects(loadServerJson(url, { fetch: async () => new Response(null, { status: 302, headers: { location: 'http://127.0.0.1/' } }) }), { message: `${url}: answered HTTP 302, not 200` });
    await assert.rejects(loadServerJson(url, { fetch: async () => new Response('<html>hi</html>', { status: 200 }) }), (e: Error) => e.message.startsWith(`${url}: is not valid JSON (`));
    await assert.rejects(
      loadServerJson(url, { maxBytes: 10, fetch: async () => new Response('x'.repeat(100), { status: 200, headers: { 'content-length': '100' } }) }),
      { message: `${url}: answer is larger than 10 bytes` },
    );
    // No content-length: counted while streaming.
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled += 1;
        controller.enqueue(new Uint8Array(1024));
      },
    });
    await assert.rejects(loadServerJson(url, { maxBytes: 4096, fetch: async () => new Response(endless, { status: 200 }) }), { message: `${url}: answer is larger than 4096 bytes` });
    assert.ok(pulled < 10, 'stops reading past the limit');
    await assert.rejects(loadServerJson(url, { fetch: async () => Promise.reject(new Error('refused: non-public address')) }), { message: `${url}: fetch failed: refused: non-public address` });
  });
});

describe('upstreamOf', () => {
  it('a streamable-http remote: its URL, fixed headers and the required ones left to the broker', () => {
    assert.deepEqual(upstreamOf(fixture('weather-remote.json')), {
      transport: 'http',
      url: 'https://mcp.weather.example.com/mcp',
      headers: { 'X-Units': 'metric', 'X-Client': 'mcp-gateway' },
      requiredHeaders: ['Authorization'],
    });
  });

  it('an npm package: npx -y NAME@VERSION and the fixed package arguments; required env without a value listed, none invented', () => {
    assert.deepEqual(upstreamOf(fixture('calendar-npm.json')), {
      transport: 'stdio',
      command: 'npx',
      args: ['-y', '@example/calendar-mcp@1.8.0', 'mcp', '--read-only', 'true'],
      env: { CALENDAR_LOG: 'warn' },
      requiredEnv: ['CALENDAR_API_KEY'],
      package: { registryType: 'npm', identifier: '@example/calendar-mcp', version: '1.8.0', fileSha256: '4e0f5e4d3b2c1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b3a2910' },
    });
  });

  it('a pypi package: uvx NAME==VERSION; a value built from variables needs input', () => {
    assert.deepEqual(upstreamOf(fixture('forecast-pypi.json')), {
      transport: 'stdio',
      command: 'uvx',
      args: ['example-forecast-mcp==0.9.2', '--transport', 'stdio'],
      env: { FORECAST_ENDPOINT: 'https://api.forecast.example.com/v2', FORECAST_UNITS: 'si' },
      requiredEnv: ['FORECAST_KEY', 'FORECAST_AUTH'],
      package: { registryType: 'pypi', identifier: 'example-forecast-mcp', version: '0.9.2' },
      registryBaseUrl: 'https://pypi.example.com',
    });
  });

  it('by default skips what cannot be used: an sse remote and a templated one, then takes the package', () => {
    const upstream = upstreamOf(fixture('hybrid.json'));
    assert.equal(upstream.transport, 'stdio');
    assert.deepEqual(upstream.transport === 'stdio' && upstream.args, ['-y', '@example/hybrid-mcp@1.5.0'], 'an optional argument with only a default is left out');
  });

  it('prefers a usable remote over a package', () => {
    const both = { ...fixture('calendar-npm.json'), remotes: [{ type: 'streamable-http', url: 'http://127.0.0.1:8931/mcp' }] } as ServerJson;
    assert.deepEqual(upstreamOf(both), { transport: 'http', url: 'http://127.0.0.1:8931/mcp', headers: {}, requiredHeaders: [] });
    assert.equal(upstreamOf(both, { package: 0 }).transport, 'stdio');
  });

  it('refuses an sse remote and a templated remote when chosen', () => {
    const hybrid = fixture('hybrid.json');
    assert.throws(() => upstreamOf(hybrid, { remote: 0 }), { message: 'io.example.cloud/hybrid: remotes[0]: the sse transport is not supported (only streamable-http)' });
    assert.throws(() => upstreamOf(hybrid, { remote: 1 }), {
      message: 'io.example.cloud/hybrid: remotes[1].url: is a template ({tenant}) that needs values; templated remotes are not supported',
    });
    assert.equal(upstreamOf(hybrid, { package: 0 }).transport, 'stdio');
  });

  it('refuses an sse-only server, naming the reason', () => {
    const [, , gamma] = readServerJsonDocument(fixture(LIST_FIXTURE), LIST_FIXTURE);
    assert.throws(() => upstreamOf(gamma!), { message: 'io.example/gamma: remotes[0]: the sse transport is not supported (only streamable-http)' });
  });

  it('refuses package kinds that are not supported yet', () => {
    assert.throws(() => upstreamOf(fixture('files-oci.json')), { message: 'io.example/files: packages[0].registryType: "oci" packages are not supported yet (npm and pypi are)' });
    assert.throws(() => upstreamOf(fixture('dotnet-nuget.json')), /"nuget" packages are not supported yet/);
    assert.throws(() => upstreamOf(fixture('bundle-mcpb.json')), /"mcpb" packages are not supported yet/);
    assert.throws(() => upstreamOf(fixture('local-http-package.json')), {
      message: 'io.example/local-http: packages[0].transport: a package reached over "streamable-http" is not supported yet (only stdio packages are started)',
    });
  });

  it('refuses runtime arguments, which reach npx or uvx themselves', () => {
    assert.throws(() => upstreamOf(fixture('notes-npm.json')), { message: 'io.example.tools/notes: packages[0].runtimeArguments: are not supported yet: they go to the runtime and can change what it fetches' });
  });

  it('refuses a required argument without a fixed value, and one built from variables', () => {
    const pkg = (args: JsonObject[]) => ({ ...fixture('minimal.json'), packages: [{ registryType: 'npm', identifier: 'x-mcp', version: '1.0.0', transport: { type: 'stdio' }, packageArguments: args }] }) as ServerJson;
    assert.throws(() => upstreamOf(pkg([{ type: 'positional', valueHint: 'target_dir', isRequired: true, default: '/tmp' }])), {
      message: 'io.example/minimal: packages[0].packageArguments[0]: needs a value ("target_dir") that Mandate cannot supply yet',
    });
    assert.throws(() => upstreamOf(pkg([{ type: 'named', name: '--db', value: 'db={name}', isRequired: true, variables: { name: { isRequired: true } } }])), /packageArguments\[0\]: needs a value \("--db"\)/);
    // A brace that names no variable is literal text.
    assert.deepEqual((upstreamOf(pkg([{ type: 'positional', value: '{literal}' }])) as { args: string[] }).args, ['-y', 'x-mcp@1.0.0', '{literal}']);
  });

  it('refuses a package it cannot pin or that is not a plain package name', () => {
    const npm = (fields: JsonObject) => ({ ...fixture('minimal.json'), packages: [{ registryType: 'npm', identifier: 'x-mcp', version: '1.0.0', transport: { type: 'stdio' }, ...fields }] }) as unknown as ServerJson;
    assert.throws(() => upstreamOf(npm({ version: undefined as unknown as string })), /packages\[0\]\.version: is required to start a package/);
    assert.throws(() => upstreamOf(npm({ version: '1.0' })), /packages\[0\]\.version: is not one exact npm version/);
    for (const identifier of ['git+https://git.example.com/x.git', './local', '--yes', 'https://x.example.com/p.tgz', 'a/b/c']) {
      assert.throws(() => upstreamOf(npm({ identifier })), /packages\[0\]\.identifier: is not a npm package name/, identifier);
    }
    const pypi = { ...fixture('minimal.json'), packages: [{ registryType: 'pypi', identifier: 'x-mcp', version: '>=1', transport: { type: 'stdio' } }] } as ServerJson;
    assert.throws(() => upstreamOf(pypi), /is not one exact pypi version/);
  });

  it('refuses a NUL in an argument or environment value', () => {
    const npm = { ...fixture('minimal.json'), packages: [{ registryType: 'npm', identifier: 'x-mcp', version: '1.0.0', transport: { type: 'stdio' }, environmentVariables: [{ name: 'A', value: 'a\u0000b' }] }] } as ServerJson;
    assert.throws(() => upstreamOf(npm), /packages\[0\]\.environmentVariables\[0\]: contains a NUL character/);
  });

  it('lists every reason when nothing can be used, and refuses a server with nothing to reach', () => {
    const hybrid = { ...fixture('hybrid.json'), packages: [] } as ServerJson;
    assert.throws(() => upstreamOf(hybrid), {
      message: [
        'io.example.cloud/hybrid: remotes[0]: the sse transport is not supported (only streamable-http)',
        'io.example.cloud/hybrid: remotes[1].url: is a template ({tenant}) that needs values; templated remotes are not supported',
      ].join('\n'),
    });
    assert.throws(() => upstreamOf(fixture('minimal.json')), { message: 'io.example/minimal: has no remotes and no packages: there is nothing to reach' });
  });

  it('refuses a choice that does not exist, or two at once', () => {
    const weather = fixture('weather-remote.json');
    assert.throws(() => upstreamOf(weather, { remote: 5 }), { message: 'io.example/weather: remotes[5]: there is no such remote (the server.json has 2)' });
    assert.throws(() => upstreamOf(weather, { package: 0 }), { message: 'io.example/weather: packages[0]: there is no such package (the server.json has 0)' });
    assert.throws(() => upstreamOf(weather, { remote: 0, package: 0 }), /choose a remote or a package, not both/);
  });
});
