/** The read-only sub-registry (answerRegistryRequest): the MCP registry's /v0.1 shape over the approved, unexpired catalog. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  answerRegistryRequest,
  DEFAULT_LIMIT,
  MAX_LIMIT,
  parseRfc3339,
  REGISTRY_META_KEY,
  type ApprovedVersion,
  type RegistryAnswer,
  type RegistryProblem,
  type RegistryServerList,
  type RegistryServerResponse,
} from '../../src/catalog/registry-api.ts';
import { GOVERNANCE_META_KEY, OFFICIAL_META_KEY, PUBLISHER_META_KEY, type EntryStatus, type JsonObject } from '../../src/catalog/types.ts';

const NOW = new Date('2026-12-03T12:00:00.000Z');
const IN_A_MONTH = '2027-01-03T12:00:00.000Z';

interface Options {
  publishedAt?: string;
  updatedAt?: string;
  isLatest?: boolean;
  status?: EntryStatus;
  expiresAt?: string | null;
  route?: string;
  meta?: JsonObject;
}

function version(name: string, ver: string, options: Options = {}): ApprovedVersion {
  const serverJson = { name, version: ver, description: `${name} at ${ver}`, ...(options.meta ? { _meta: options.meta } : {}) };
  return {
    serverJson,
    governance: {
      route: options.route ?? name.split('/')[1]?.replaceAll('.', '-') ?? name,
      owner: 'alice',
      environment: 'prod',
      risk: 'low',
      expiresAt: options.expiresAt === undefined ? IN_A_MONTH : options.expiresAt,
      status: options.status ?? 'approved',
      source: 'catalog',
    },
    publishedAt: options.publishedAt ?? '2026-11-01T00:00:00.000Z',
    updatedAt: options.updatedAt ?? options.publishedAt ?? '2026-11-01T00:00:00.000Z',
    isLatest: options.isLatest ?? false,
  };
}

function get(pathAndQuery: string, versions: readonly ApprovedVersion[], now = NOW): RegistryAnswer {
  return answerRegistryRequest('GET', pathAndQuery, versions, now);
}

function listOf(answer: RegistryAnswer): RegistryServerList {
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body as RegistryServerList;
}

function one(answer: RegistryAnswer): RegistryServerResponse {
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body as RegistryServerResponse;
}

/** `name@version` of each item, in order. */
function ids(body: RegistryServerList): string[] {
  return body.servers.map((item) => `${item.server.name}@${item.server.version}`);
}

function assertProblem(answer: RegistryAnswer, status: number, detail?: RegExp): RegistryProblem {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  assert.equal(answer.headers['content-type'], 'application/problem+json');
  assert.equal(answer.headers['cache-control'], 'no-store');
  const body = answer.body as RegistryProblem;
  assert.equal(body.status, status);
  assert.equal(typeof body.title, 'string');
  if (detail) assert.match(body.detail, detail);
  return body;
}

const WEATHER = 'io.example/weather';
const CATALOG: ApprovedVersion[] = [
  version(WEATHER, '1.2.0', { publishedAt: '2026-10-01T00:00:00.000Z' }),
  version(WEATHER, '1.10.0', { publishedAt: '2026-11-01T00:00:00.000Z', isLatest: true }),
  version('io.example/calendar', '2.0.0', { publishedAt: '2026-09-01T00:00:00.000Z', isLatest: true }),
  version('com.acme/Weather-Pro', '0.1.0', { publishedAt: '2026-08-01T00:00:00.000Z', isLatest: true }),
  version('com.acme/files', '3.0.0-rc.1', { publishedAt: '2026-07-01T00:00:00.000Z' }),
];

describe('registry API: list and pagination', () => {
  it('pages through every item exactly once, ordered by name then version', () => {
    const seen: string[] = [];
    const counts: number[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const body = listOf(get(`/v0.1/servers?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, CATALOG));
      pages++;
      seen.push(...ids(body));
      counts.push(body.metadata.count);
      assert.equal(body.metadata.count, body.servers.length, 'count is the number of items in this page');
      cursor = body.metadata.nextCursor;
      if (pages === 3) assert.equal('nextCursor' in body.metadata, false, 'the last page has no nextCursor');
    } while (cursor !== undefined && pages < 10);
    assert.equal(pages, 3);
    assert.deepEqual(counts, [2, 2, 1]);
    // Code-unit order of names; semantic order of versions (1.2.0 before 1.10.0).
    assert.deepEqual(seen, ['com.acme/Weather-Pro@0.1.0', 'com.acme/files@3.0.0-rc.1', 'io.example/calendar@2.0.0', `${WEATHER}@1.2.0`, `${WEATHER}@1.10.0`]);
    assert.equal(new Set(seen).size, seen.length);
  });

  it('answers with JSON that no one caches', () => {
    const answer = get('/v0.1/servers', CATALOG);
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.headers, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    assert.deepEqual(listOf(answer).metadata, { count: 5 });
  });

  it('an empty list is 200 with no items', () => {
    assert.deepEqual(listOf(get('/v0.1/servers', [])), { servers: [], metadata: { count: 0 } });
  });

  it('pages hold 30 items by default and at most 100', () => {
    const many = Array.from({ length: 120 }, (_, i) => version(`io.example/s${String(i).padStart(3, '0')}`, '1.0.0'));
    const first = listOf(get('/v0.1/servers', many));
    assert.equal(first.metadata.count, DEFAULT_LIMIT);
    assert.equal(typeof first.metadata.nextCursor, 'string');
    assert.equal(listOf(get(`/v0.1/servers?limit=${MAX_LIMIT}`, many)).metadata.count, MAX_LIMIT);
    assert.equal(listOf(get('/v0.1/servers?limit=', many)).metadata.count, DEFAULT_LIMIT, 'an empty parameter is as if absent');
  });

  it('a limit that is not an integer from 1 to 100 is 422 "validation failed", as the registry answers', () => {
    for (const limit of ['0', '-5', '101', '150', 'abc', '1.5', '1e2', '99999999999999999999']) {
      const body = assertProblem(get(`/v0.1/servers?limit=${limit}`, CATALOG), 422, /^validation failed$/);
      assert.equal(body.errors?.[0]?.location, 'query.limit', limit);
    }
  });

  it('a page boundary holds when the item before it is withdrawn', () => {
    const first = listOf(get('/v0.1/servers?limit=2', CATALOG));
    const cursor = first.metadata.nextCursor as string;
    // The second item of page one is suspended before page two is asked for: page two starts where it would have.
    const changed = CATALOG.map((entry) => (entry.serverJson.name === 'com.acme/files' ? { ...entry, governance: { ...entry.governance, status: 'suspended' as const } } : entry));
    assert.deepEqual(ids(listOf(get(`/v0.1/servers?limit=2&cursor=${cursor}`, changed))), ['io.example/calendar@2.0.0', `${WEATHER}@1.2.0`]);
  });

  it('a cursor that is not one of ours is 400', () => {
    const good = listOf(get('/v0.1/servers?limit=1', CATALOG)).metadata.nextCursor as string;
    const wrongShape = Buffer.from(JSON.stringify({ name: WEATHER })).toString('base64url');
    const wrongFormat = Buffer.from(JSON.stringify([2, WEATHER, '1.0.0', 0, 'weather'])).toString('base64url');
    // The same bytes spelled with other unused trailing bits: not the text this registry wrote.
    const respelled = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_']
      .map((last) => good.slice(0, -1) + last)
      .find((cursor) => cursor !== good && Buffer.from(cursor, 'base64url').equals(Buffer.from(good, 'base64url')));
    assert.ok(respelled, 'the fixture cursor has unused trailing bits');
    assert.equal(listOf(get(`/v0.1/servers?cursor=${good}`, CATALOG)).metadata.count, 4);
    for (const cursor of ['not a cursor', '!!!', 'abc', `${good}=`, respelled, wrongShape, wrongFormat, 'A'.repeat(5000)]) {
      assertProblem(get(`/v0.1/servers?cursor=${encodeURIComponent(cursor)}`, CATALOG), 400, /cursor/);
    }
  });
});

describe('registry API: filters', () => {
  it('search is a case-insensitive substring of the name', () => {
    assert.deepEqual(ids(listOf(get('/v0.1/servers?search=WEATHER', CATALOG))), ['com.acme/Weather-Pro@0.1.0', `${WEATHER}@1.2.0`, `${WEATHER}@1.10.0`]);
    assert.deepEqual(ids(listOf(get('/v0.1/servers?search=acme%2Ff', CATALOG))), ['com.acme/files@3.0.0-rc.1']);
    assert.deepEqual(ids(listOf(get('/v0.1/servers?search=nothing+like+it', CATALOG))), []);
  });

  it('search characters are taken literally, and a search longer than a name can be is 400', () => {
    assert.deepEqual(ids(listOf(get('/v0.1/servers?search=%25', CATALOG))), []);
    assert.deepEqual(ids(listOf(get('/v0.1/servers?search=.*', CATALOG))), []);
    assertProblem(get(`/v0.1/servers?search=${'a'.repeat(201)}`, CATALOG), 400, /search/);
  });

  it('updated_since keeps versions updated strictly after an RFC 3339 time', () => {
    const versions = [
      version('io.example/a', '1.0.0', { updatedAt: '2026-11-01T00:00:00.000Z' }),
      version('io.example/b', '1.0.0', { updatedAt: '2026-11-02T00:00:00.000Z' }),
      version('io.example/c', '1.0.0', { updatedAt: '2026-11-03T10:30:00.500Z' }),
    ];
    assert.deepEqual(ids(listOf(get('/v0.1/servers?updated_since=2026-11-01T00:00:00Z', versions))), ['io.example/b@1.0.0', 'io.example/c@1.0.0']);
    // The same instant with an offset (+ must be escaped in a query: a bare + is a space).
    assert.deepEqual(ids(listOf(get('/v0.1/servers?updated_since=2026-11-03T12:30:00.499%2B02:00', versions))), ['io.example/c@1.0.0']);
    assert.deepEqual(ids(listOf(get('/v0.1/servers?updated_since=2026-11-03T10:30:00.5Z', versions))), []);
    assert.deepEqual(ids(listOf(get('/v0.1/servers?updated_since=2026-11-03T10:30:00.4999999Z', versions))), ['io.example/c@1.0.0']);
  });

  it('an updated_since that is not RFC 3339 is 400', () => {
    for (const since of ['yesterday', '2026-11-01', '2026-11-01T00:00:00', '2026-11-01 00:00:00Z', '2026-13-01T00:00:00Z', '2026-04-31T00:00:00Z', '2026-02-29T00:00:00Z', '2026-11-01T24:00:00Z', '1764547200']) {
      assertProblem(get(`/v0.1/servers?updated_since=${encodeURIComponent(since)}`, CATALOG), 400, /updated_since/);
    }
  });

  it('parses RFC 3339 date-times to milliseconds', () => {
    assert.equal(parseRfc3339('2025-08-07T13:15:04.280Z'), Date.UTC(2025, 7, 7, 13, 15, 4, 280));
    assert.equal(parseRfc3339('2025-08-07t15:15:04+02:00'), Date.UTC(2025, 7, 7, 13, 15, 4));
    assert.equal(parseRfc3339('2024-02-29T00:00:00-00:30'), Date.UTC(2024, 1, 29, 0, 30));
    assert.equal(parseRfc3339('0050-01-01T00:00:00Z'), new Date('0050-01-01T00:00:00Z').getTime());
    assert.equal(parseRfc3339('2025-08-07T13:15:04+2:00'), null);
  });

  it('version=latest keeps each name\'s latest; another version is matched exactly', () => {
    assert.deepEqual(ids(listOf(get('/v0.1/servers?version=latest', CATALOG))), ['com.acme/Weather-Pro@0.1.0', 'com.acme/files@3.0.0-rc.1', 'io.example/calendar@2.0.0', `${WEATHER}@1.10.0`]);
    assert.deepEqual(ids(listOf(get('/v0.1/servers?version=1.2.0', CATALOG))), [`${WEATHER}@1.2.0`]);
    assert.deepEqual(ids(listOf(get('/v0.1/servers?version=1.2', CATALOG))), []);
  });

  it('filters combine, and page', () => {
    const body = listOf(get('/v0.1/servers?search=example&version=latest&updated_since=2026-08-15T00:00:00Z&limit=1', CATALOG));
    assert.deepEqual(ids(body), ['io.example/calendar@2.0.0']);
    const next = listOf(get(`/v0.1/servers?search=example&version=latest&updated_since=2026-08-15T00:00:00Z&limit=1&cursor=${body.metadata.nextCursor}`, CATALOG));
    assert.deepEqual(ids(next), [`${WEATHER}@1.10.0`]);
    assert.equal(next.metadata.nextCursor, undefined);
  });
});

describe('registry API: what is served', () => {
  const versions = [
    version(WEATHER, '1.0.0', { publishedAt: '2026-01-01T00:00:00.000Z' }),
    version(WEATHER, '1.1.0', { publishedAt: '2026-02-01T00:00:00.000Z', expiresAt: new Date(NOW.getTime() + 1000).toISOString() }),
    version(WEATHER, '2.0.0', { publishedAt: '2026-03-01T00:00:00.000Z', isLatest: true, expiresAt: new Date(NOW.getTime() - 1000).toISOString() }),
    version(WEATHER, '2.1.0', { publishedAt: '2026-04-01T00:00:00.000Z', status: 'suspended' }),
    version(WEATHER, '3.0.0', { publishedAt: '2026-05-01T00:00:00.000Z', status: 'pending' }),
    version(WEATHER, '0.9.0', { publishedAt: '2025-12-01T00:00:00.000Z', status: 'deprecated' }),
    version(WEATHER, '0.8.0', { publishedAt: '2025-11-01T00:00:00.000Z', status: 'retired' }),
    version(WEATHER, '0.7.0', { publishedAt: '2025-10-01T00:00:00.000Z', status: 'expired' }),
    version(WEATHER, '0.6.0', { publishedAt: '2025-09-01T00:00:00.000Z', expiresAt: 'not a date' }),
    version('io.example/config', '1.0.0', { expiresAt: null, isLatest: true }),
  ];

  it('lists only approved versions whose expiry is after now: one expired a second ago is gone', () => {
    assert.deepEqual(ids(listOf(get('/v0.1/servers', versions))), ['io.example/config@1.0.0', `${WEATHER}@1.0.0`, `${WEATHER}@1.1.0`]);
    // A second later, 1.1.0 has expired too.
    assert.deepEqual(ids(listOf(get('/v0.1/servers', versions, new Date(NOW.getTime() + 1000)))), ['io.example/config@1.0.0', `${WEATHER}@1.0.0`]);
  });

  it('hidden versions are 404 one by one', () => {
    for (const hidden of ['2.0.0', '2.1.0', '3.0.0', '0.9.0', '0.6.0']) {
      assertProblem(get(`/v0.1/servers/io.example%2Fweather/versions/${hidden}`, versions), 404, /^Server not found$/);
    }
  });

  it('when the version marked latest is not served, latest is the served version approved most recently', () => {
    const latest = one(get('/v0.1/servers/io.example%2Fweather/versions/latest', versions));
    assert.equal(latest.server.version, '1.1.0');
    assert.equal(latest._meta[REGISTRY_META_KEY].isLatest, true);
    const flags = listOf(get('/v0.1/servers/io.example%2Fweather/versions', versions)).servers.map((item) => [item.server.version, item._meta[REGISTRY_META_KEY].isLatest]);
    assert.deepEqual(flags, [['1.1.0', true], ['1.0.0', false]]);
  });

  it('a server with no servable version is 404 on both version paths', () => {
    const gone = versions.filter((entry) => entry.serverJson.name === WEATHER && entry.serverJson.version !== '1.0.0' && entry.serverJson.version !== '1.1.0');
    assertProblem(get('/v0.1/servers/io.example%2Fweather/versions', gone), 404, /^Server not found$/);
    assertProblem(get('/v0.1/servers/io.example%2Fweather/versions/latest', gone), 404);
  });
});

describe('registry API: items', () => {
  const governanceRecord = { route: 'weather', owner: 'alice', risk: 'low' };
  const submitted = version(WEATHER, '1.0.0', {
    publishedAt: '2026-10-01T00:00:00.000Z',
    updatedAt: '2026-10-05T00:00:00.000Z',
    isLatest: true,
    meta: { [PUBLISHER_META_KEY]: { tool: 'publisher-cli', build: { commit: 'abc123' } }, 'com.example': { category: ['weather'] }, [GOVERNANCE_META_KEY]: governanceRecord },
  });
  const onlyGovernance = version('io.example/bare', '1.0.0', { meta: { [GOVERNANCE_META_KEY]: governanceRecord } });
  const before = structuredClone([submitted, onlyGovernance]);

  it('the server is the server.json as submitted, less the governance _meta', () => {
    const item = one(get('/v0.1/servers/io.example%2Fweather/versions/1.0.0', [submitted]));
    assert.deepEqual(item.server, {
      name: WEATHER,
      version: '1.0.0',
      description: `${WEATHER} at 1.0.0`,
      _meta: { [PUBLISHER_META_KEY]: { tool: 'publisher-cli', build: { commit: 'abc123' } }, 'com.example': { category: ['weather'] } },
    });
    // A _meta that held only the governance record goes with it.
    assert.deepEqual(one(get('/v0.1/servers/io.example%2Fbare/versions/1.0.0', [onlyGovernance])).server, { name: 'io.example/bare', version: '1.0.0', description: 'io.example/bare at 1.0.0' });
    // The input is not changed, and the answer shares nothing with it.
    assert.deepEqual([submitted, onlyGovernance], before);
    (item.server._meta as JsonObject)['com.example'] = null;
    assert.deepEqual(submitted, before[0]);
  });

  it('the status fields travel under Mandate\'s key, with the registry\'s field names', () => {
    const item = listOf(get('/v0.1/servers', [submitted])).servers[0] as RegistryServerResponse;
    assert.deepEqual(Object.keys(item), ['server', '_meta']);
    assert.deepEqual(item._meta, {
      [REGISTRY_META_KEY]: {
        status: 'approved',
        publishedAt: '2026-10-01T00:00:00.000Z',
        updatedAt: '2026-10-05T00:00:00.000Z',
        isLatest: true,
        route: 'weather',
        environment: 'prod',
        risk: 'low',
        owner: 'alice',
        expiresAt: IN_A_MONTH,
      },
    });
    assert.equal(OFFICIAL_META_KEY in item._meta, false);
    assert.equal(REGISTRY_META_KEY, 'dev.mandate/registry');
  });
});

describe('registry API: one server\'s versions', () => {
  const versions = [
    version(WEATHER, '1.0.0', { publishedAt: '2026-01-01T00:00:00.000Z' }),
    version(WEATHER, '1.0.0+build.7', { publishedAt: '2026-01-15T00:00:00.000Z' }),
    version(WEATHER, '2.0.0', { publishedAt: '2026-03-01T00:00:00.000Z', isLatest: true }),
    version(WEATHER, '1.5.0', { publishedAt: '2026-04-01T00:00:00.000Z' }),
    version('io.example/other', '9.0.0', { isLatest: true }),
  ];

  it('lists every served version, newest approval first, with a count and no cursor', () => {
    const body = listOf(get('/v0.1/servers/io.example%2Fweather/versions', versions));
    assert.deepEqual(ids(body), [`${WEATHER}@1.5.0`, `${WEATHER}@2.0.0`, `${WEATHER}@1.0.0+build.7`, `${WEATHER}@1.0.0`]);
    assert.deepEqual(body.metadata, { count: 4 });
  });

  it('answers one version, latest, and a version with build metadata (%2B)', () => {
    assert.equal(one(get('/v0.1/servers/io.example%2Fweather/versions/1.5.0', versions)).server.version, '1.5.0');
    const latest = one(get('/v0.1/servers/io.example%2Fweather/versions/latest', versions));
    assert.equal(latest.server.version, '2.0.0', 'the one the catalog marks latest');
    assert.equal(latest._meta[REGISTRY_META_KEY].isLatest, true);
    assert.equal(one(get('/v0.1/servers/io.example%2Fweather/versions/1.0.0%2Bbuild.7', versions)).server.version, '1.0.0+build.7');
    assert.equal(one(get('/v0.1/servers/io.example%2fweather/versions/1.0.0', versions)).server.version, '1.0.0', 'lowercase escapes too');
    assert.equal(one(get('/v0.1/servers/%69o.example%2Fweather/versions/1.0.0', versions)).server.name, WEATHER, 'any character may be escaped');
  });

  it('unknown servers and versions are 404', () => {
    assertProblem(get('/v0.1/servers/io.example%2Fnothing/versions', versions), 404, /^Server not found$/);
    assertProblem(get('/v0.1/servers/io.example%2Fweather/versions/4.0.0', versions), 404, /^Server not found$/);
    assertProblem(get('/v0.1/servers/io.example%2Fweather/versions/1.0', versions), 404);
    assertProblem(get('/v0.1/servers/io.example%2FWEATHER/versions/latest', versions), 404, /^Server not found$/);
  });

  it('the same version approved under two routes is listed twice and answered once, by route', () => {
    const twice = [version(WEATHER, '1.0.0', { route: 'weather-b', isLatest: true }), version(WEATHER, '1.0.0', { route: 'weather-a', isLatest: true })];
    const routes = (body: RegistryServerList) => body.servers.map((item) => item._meta[REGISTRY_META_KEY].route);
    assert.deepEqual(routes(listOf(get('/v0.1/servers', twice))), ['weather-a', 'weather-b']);
    const first = listOf(get('/v0.1/servers?limit=1', twice));
    assert.deepEqual(routes(listOf(get(`/v0.1/servers?limit=1&cursor=${first.metadata.nextCursor}`, twice))), ['weather-b']);
    assert.equal(one(get('/v0.1/servers/io.example%2Fweather/versions/latest', twice))._meta[REGISTRY_META_KEY].route, 'weather-a');
  });

  it('versions that are not semantic versions follow the semantic ones, by approval time', () => {
    const mixed = [
      version(WEATHER, '2024.06', { publishedAt: '2026-03-01T00:00:00.000Z' }),
      version(WEATHER, 'v1', { publishedAt: '2026-01-01T00:00:00.000Z' }),
      version(WEATHER, '10.0.0', { publishedAt: '2026-02-01T00:00:00.000Z' }),
      version(WEATHER, '2.0.0', { publishedAt: '2026-04-01T00:00:00.000Z' }),
      version(WEATHER, '2.0.0-alpha.10', { publishedAt: '2026-04-01T00:00:00.000Z' }),
      version(WEATHER, '2.0.0-alpha.9', { publishedAt: '2026-04-01T00:00:00.000Z' }),
      version(WEATHER, '2.0.0-alpha', { publishedAt: '2026-04-01T00:00:00.000Z' }),
      version(WEATHER, '2.0.0-beta', { publishedAt: '2026-04-01T00:00:00.000Z' }),
      version(WEATHER, '2.0.0-10', { publishedAt: '2026-04-01T00:00:00.000Z' }),
    ];
    const expected = ['2.0.0-10', '2.0.0-alpha', '2.0.0-alpha.9', '2.0.0-alpha.10', '2.0.0-beta', '2.0.0', '10.0.0', 'v1', '2024.06'];
    assert.deepEqual(listOf(get('/v0.1/servers', mixed)).servers.map((item) => item.server.version), expected);
    // Paged one at a time, the same order: the order is total.
    const paged: string[] = [];
    let cursor = '';
    for (let page = 0; page < expected.length; page++) {
      const body = listOf(get(`/v0.1/servers?limit=1${cursor}`, mixed));
      paged.push(...body.servers.map((item) => item.server.version));
      cursor = body.metadata.nextCursor ? `&cursor=${body.metadata.nextCursor}` : '';
    }
    assert.deepEqual(paged, expected);
    assert.equal(cursor, '');
  });
});

describe('registry API: paths, encodings and methods', () => {
  it('unknown paths are 404', () => {
    for (const path of [
      '/v0.1/servers/',
      '/v0.1/server',
      '/v0.1',
      '/v0.1/',
      '/v0/servers',
      '/v0.1/publish',
      '/v0.1//servers',
      '/v0.1/servers//versions',
      '/v0.1/servers/io.example%2Fweather',
      '/v0.1/servers/io.example%2Fweather/versions/',
      '/v0.1/servers/io.example%2Fweather/versions/1.0.0/extra',
      '/v0.1/servers/io.example/weather/versions',
      '/v0.1/servers/io.example/weather/versions/1.0.0',
      'v0.1/servers',
      '',
    ]) {
      assertProblem(get(path, CATALOG), 404);
    }
  });

  it('traversal-like names find nothing', () => {
    for (const name of ['..', '.', '%2E%2E', '..%2F..%2Fetc%2Fpasswd', '%2F', 'io.example%2F..%2Fweather', '%00']) {
      assertProblem(get(`/v0.1/servers/${name}/versions`, CATALOG), 404);
      assertProblem(get(`/v0.1/servers/${name}/versions/latest`, CATALOG), 404);
    }
  });

  it('malformed percent-encoding is 400', () => {
    assertProblem(get('/v0.1/servers/io.example%2/versions', CATALOG), 400, /server name encoding/);
    assertProblem(get('/v0.1/servers/io.example%ZZweather/versions/latest', CATALOG), 400, /server name encoding/);
    assertProblem(get('/v0.1/servers/%E0%A4%A/versions', CATALOG), 400, /server name encoding/);
    assertProblem(get('/v0.1/servers/io.example%2Fweather/versions/1.0.0%', CATALOG), 400, /version encoding/);
    assertProblem(get('/v0.1/servers?search=%E0%A4', CATALOG), 400, /query string/);
    assertProblem(get('/v0.1/servers/io.example%2Fweather/versions?x=%', CATALOG), 400, /query string/);
  });

  it('names and versions longer than the registry allows are 400', () => {
    assert.equal(get(`/v0.1/servers/io.example%2F${'a'.repeat(189)}/versions`, CATALOG).status, 404, 'at the bound: looked up');
    assertProblem(get(`/v0.1/servers/io.example%2F${'a'.repeat(190)}/versions`, CATALOG), 400, /longer than 200/);
    assertProblem(get(`/v0.1/servers/io.example%2Fweather/versions/${'1'.repeat(256)}`, CATALOG), 400, /longer than 255/);
    assertProblem(get(`/v0.1/servers?version=${'1'.repeat(256)}`, CATALOG), 400, /longer than 255/);
  });

  it('repeated parameters: the first counts; unknown ones are ignored', () => {
    assert.equal(listOf(get('/v0.1/servers?limit=1&limit=3&include_deleted=true&foo=bar', CATALOG)).metadata.count, 1);
  });

  it('other methods on a served path are 405 with Allow; on an unknown path, 404', () => {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'get']) {
      for (const path of ['/v0.1/servers', '/v0.1/servers/io.example%2Fweather/versions', '/v0.1/servers/io.example%2Fweather/versions/1.2.0']) {
        const answer = answerRegistryRequest(method, path, CATALOG, NOW);
        assertProblem(answer, 405);
        assert.equal(answer.headers.allow, 'GET, HEAD');
      }
    }
    assertProblem(answerRegistryRequest('POST', '/v0.1/publish', CATALOG, NOW), 404);
  });

  it('HEAD answers as GET would, without a body', () => {
    for (const path of ['/v0.1/servers', '/v0.1/servers/io.example%2Fweather/versions/latest', '/v0.1/servers/io.example%2Fnothing/versions', '/v0.1/servers?limit=0']) {
      const got = get(path, CATALOG);
      const head = answerRegistryRequest('HEAD', path, CATALOG, NOW);
      assert.equal(head.status, got.status, path);
      assert.deepEqual(head.headers, got.headers, path);
      assert.equal(head.body, null, path);
    }
  });
});
