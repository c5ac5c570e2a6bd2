/**
 * The `identity` configuration section through loadConfig: safe defaults,
 * a warning for each relaxation, and a ConfigError naming the field for a
 * bad value.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { configFiles } from '../helpers/config-files.ts';
import { ConfigError, loadConfig, type Config } from '../../src/config/load.ts';

const { dir, dataDir, file } = configFiles('mandate-identity-config-');

const BASE = 'issuer: http://localhost:8080\nservers:\n  - name: files\n    url: http://127.0.0.1:1/mcp\n';

function load(yaml: string): Config {
  return loadConfig({ config: file(BASE + yaml), data: dataDir }, {}, dir);
}

function refused(yaml: string, field: RegExp): ConfigError {
  let caught: unknown;
  try {
    load(yaml);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected ConfigError, got ${caught === undefined ? 'a loaded config' : String(caught)}`);
  assert.match(caught.message, field);
  assert.match(caught.message, /config-\d+\.yaml: invalid configuration/, 'the message names the file');
  return caught;
}

describe('identity configuration', () => {
  it('defaults are the safe choice, and warn about nothing', () => {
    const config = load('');
    const identity = config.identity;
    assert.equal(identity.requireToken, true);
    assert.equal(identity.accessTokenTtl, 600);
    assert.equal(identity.refreshTokenTtl, 14 * 86_400);
    assert.equal(identity.registration.mode, 'approval');
    assert.deepEqual(identity.registration.allowedRedirectOrigins, []);
    assert.deepEqual(identity.registration.allowedClasses, ['interactive', 'machine']);
    assert.equal(identity.cimd.enabled, true);
    assert.deepEqual(identity.cimd.allowedDomains, []);
    assert.deepEqual(identity.cimd.allowPrivateAddresses, []);
    assert.deepEqual(config.warnings, []);
  });

  it('an empty identity section gets the same defaults as none', () => {
    const none = load('').identity;
    assert.deepEqual(load('identity: {}\n').identity, none);
    assert.deepEqual(load('identity:\n  registration: {}\n  cimd: {}\n').identity, none);
  });

  it('upstream sign-in and trusted proxies: good values are taken, with their defaults', () => {
    const config = load('listen:\n  trustedProxies: [10.0.0.2, "::1"]\nidentity:\n  login:\n    local: false\n    oidc:\n      issuer: https://idp.example.com\n      clientId: mandate\n');
    assert.deepEqual(config.listen.trustedProxies, ['10.0.0.2', '::1']);
    assert.equal(config.identity.login.local, false);
    assert.deepEqual(config.identity.login.oidc, {
      issuer: 'https://idp.example.com',
      clientId: 'mandate',
      clientSecretEnv: 'MANDATE_OIDC_CLIENT_SECRET',
      scopes: ['openid', 'profile', 'email'],
      usernameClaim: 'preferred_username',
      groupsClaim: 'groups',
      displayName: 'single sign-on',
    });
    assert.equal(load('identity:\n  login:\n    oidc:\n      issuer: http://127.0.0.1:9000\n      clientId: m\n').identity.login.oidc?.issuer, 'http://127.0.0.1:9000', 'http on loopback, for development');
  });

  it('partial sections keep the other defaults', () => {
    const identity = load('identity:\n  registration:\n    maxPerAddressPerHour: 5\n  cimd:\n    timeoutMs: 1000\n').identity;
    assert.equal(identity.registration.maxPerAddressPerHour, 5);
    assert.equal(identity.registration.mode, 'approval');
    assert.equal(identity.cimd.timeoutMs, 1000);
    assert.equal(identity.cimd.enabled, true);
    assert.equal(identity.requireToken, true);
  });

  it('good values are taken', () => {
    const identity = load(
      'identity:\n  accessTokenTtl: 30\n  registration:\n    mode: closed\n    allowedRedirectOrigins: [https://app.example.com, "https://tools.example.org:8443"]\n' +
        '  cimd:\n    enabled: false\n    allowedDomains: [example.com, "*.example.org", "[::1]"]\n',
    ).identity;
    assert.equal(identity.accessTokenTtl, 30);
    assert.equal(identity.registration.mode, 'closed');
    assert.deepEqual(identity.registration.allowedRedirectOrigins, ['https://app.example.com', 'https://tools.example.org:8443']);
    assert.equal(identity.cimd.enabled, false);
    assert.deepEqual(identity.cimd.allowedDomains, ['example.com', '*.example.org', '[::1]']);
  });

  it('registration.mode open warns', () => {
    const config = load('identity:\n  registration:\n    mode: open\n');
    assert.equal(config.identity.registration.mode, 'open');
    assert.equal(config.warnings.length, 1);
    assert.match(config.warnings[0]!, /identity\.registration\.mode is "open"/);
  });

  it('requireToken false warns', () => {
    const config = load('identity:\n  requireToken: false\n');
    assert.equal(config.identity.requireToken, false);
    assert.equal(config.warnings.length, 1);
    assert.match(config.warnings[0]!, /identity\.requireToken is false/);
  });

  it('delegation: nobody by default, chains of 2; rules are taken, and one for anyone warns', () => {
    assert.deepEqual(load('').identity.delegation, { maxChainDepth: 2, allow: [] });
    const config = load('identity:\n  delegation:\n    maxChainDepth: 3\n    allow:\n      - actor: mc_abc123\n        for: [user:alice, group:eng]\n      - actor: https://agent.example.com/client.json\n        for: ["*"]\n');
    assert.equal(config.identity.delegation.maxChainDepth, 3);
    assert.deepEqual(config.identity.delegation.allow[0], { actor: 'mc_abc123', for: ['user:alice', 'group:eng'] });
    assert.deepEqual(config.warnings, ['identity.delegation.allow: client https://agent.example.com/client.json may act for any user (token exchange)']);
  });

  it('both relaxations: both warnings', () => {
    const config = load('identity:\n  requireToken: false\n  registration:\n    mode: open\n');
    assert.equal(config.warnings.length, 2);
    assert.ok(config.warnings.some((w) => /requireToken/.test(w)));
    assert.ok(config.warnings.some((w) => /registration\.mode/.test(w)));
  });

  describe('bad values stop loading with a ConfigError naming the field', () => {
    const cases: { name: string; yaml: string; field: RegExp }[] = [
      { name: 'registration.mode free', yaml: 'identity:\n  registration:\n    mode: free\n', field: /identity\.registration\.mode:/ },
      { name: 'accessTokenTtl 5', yaml: 'identity:\n  accessTokenTtl: 5\n', field: /identity\.accessTokenTtl:/ },
      { name: 'accessTokenTtl over a day', yaml: 'identity:\n  accessTokenTtl: 86401\n', field: /identity\.accessTokenTtl:/ },
      { name: 'accessTokenTtl not whole', yaml: 'identity:\n  accessTokenTtl: 60.5\n', field: /identity\.accessTokenTtl:/ },
      { name: 'accessTokenTtl as a string', yaml: 'identity:\n  accessTokenTtl: "600"\n', field: /identity\.accessTokenTtl:/ },
      {
        name: 'an http redirect origin',
        yaml: 'identity:\n  registration:\n    allowedRedirectOrigins: [http://x.com]\n',
        field: /identity\.registration\.allowedRedirectOrigins\[0\]: must be an https origin/,
      },
      {
        name: 'a redirect origin with a path',
        yaml: 'identity:\n  registration:\n    allowedRedirectOrigins: [https://ok.example.com, https://x.com/cb]\n',
        field: /identity\.registration\.allowedRedirectOrigins\[1\]: must be an https origin/,
      },
      {
        name: 'a CIMD domain with a space',
        yaml: 'identity:\n  cimd:\n    allowedDomains: [Bad Domain]\n',
        field: /identity\.cimd\.allowedDomains\[0\]: must be a lowercase host name/,
      },
      { name: 'a CIMD domain in capitals', yaml: 'identity:\n  cimd:\n    allowedDomains: [Example.com]\n', field: /identity\.cimd\.allowedDomains\[0\]/ },
      { name: 'a CIMD wildcard in the middle', yaml: 'identity:\n  cimd:\n    allowedDomains: ["a.*.example.com"]\n', field: /identity\.cimd\.allowedDomains\[0\]/ },
      { name: 'a private-address host with a scheme', yaml: 'identity:\n  cimd:\n    allowPrivateAddresses: ["http://localhost"]\n', field: /identity\.cimd\.allowPrivateAddresses\[0\]/ },
      { name: 'no client class allowed', yaml: 'identity:\n  registration:\n    allowedClasses: []\n', field: /identity\.registration\.allowedClasses:/ },
      { name: 'an unknown client class', yaml: 'identity:\n  registration:\n    allowedClasses: [robot]\n', field: /identity\.registration\.allowedClasses\[0\]/ },
      { name: 'requireToken as a string', yaml: 'identity:\n  requireToken: "no"\n', field: /identity\.requireToken:/ },
      { name: 'a delegation chain of 6', yaml: 'identity:\n  delegation:\n    maxChainDepth: 6\n', field: /identity\.delegation\.maxChainDepth:/ },
      { name: 'a delegation chain of 0', yaml: 'identity:\n  delegation:\n    maxChainDepth: 0\n', field: /identity\.delegation\.maxChainDepth:/ },
      { name: 'a delegation rule for a bare name', yaml: 'identity:\n  delegation:\n    allow:\n      - actor: mc_a\n        for: [alice]\n', field: /identity\.delegation\.allow\[0\]\.for\[0\]: must be user:NAME, group:NAME or "\*"/ },
      { name: 'a delegation rule for nobody', yaml: 'identity:\n  delegation:\n    allow:\n      - actor: mc_a\n        for: []\n', field: /identity\.delegation\.allow\[0\]\.for:/ },
      { name: 'a delegation rule without an actor', yaml: 'identity:\n  delegation:\n    allow:\n      - for: ["*"]\n', field: /identity\.delegation\.allow\[0\]\.actor:/ },
      { name: 'an unknown key under identity', yaml: 'identity:\n  requireTokens: false\n', field: /identity: Unrecognized key.*"requireTokens"/ },
      { name: 'an unknown key under registration', yaml: 'identity:\n  registration:\n    mod: open\n', field: /identity\.registration: Unrecognized key.*"mod"/ },
      { name: 'an unknown key under cimd', yaml: 'identity:\n  cimd:\n    enable: false\n', field: /identity\.cimd: Unrecognized key.*"enable"/ },
      { name: 'nobody can sign in', yaml: 'identity:\n  login:\n    local: false\n', field: /identity\.login: enable local users or configure oidc/ },
      { name: 'an upstream issuer over plain http on a public host', yaml: 'identity:\n  login:\n    oidc:\n      issuer: http://idp.example.com\n      clientId: mandate\n', field: /identity\.login\.oidc\.issuer: must be an https URL/ },
      { name: 'an upstream provider without a client id', yaml: 'identity:\n  login:\n    oidc:\n      issuer: https://idp.example.com\n', field: /identity\.login\.oidc\.clientId:/ },
      { name: 'a client secret variable name that is not one', yaml: 'identity:\n  login:\n    oidc:\n      issuer: https://idp.example.com\n      clientId: m\n      clientSecretEnv: "my secret"\n', field: /identity\.login\.oidc\.clientSecretEnv:/ },
      {
        name: 'a software statement publisher given a private key',
        yaml: 'identity:\n  registration:\n    softwareStatementIssuers:\n      - issuer: https://pub.example\n        jwks: { keys: [{ kty: EC, crv: P-256, x: a, y: b, d: c }] }\n',
        field: /identity\.registration\.softwareStatementIssuers\[0\]\.jwks\.keys: public keys only/,
      },
      { name: 'a software statement publisher without keys', yaml: 'identity:\n  registration:\n    softwareStatementIssuers:\n      - issuer: https://pub.example\n        jwks: { keys: [] }\n', field: /identity\.registration\.softwareStatementIssuers\[0\]\.jwks\.keys:/ },
      { name: 'a trusted proxy that is not an IP address', yaml: 'listen:\n  trustedProxies: [proxy.internal]\n', field: /listen\.trustedProxies\[0\]:/ },
    ];
    for (const { name, yaml, field } of cases) {
      it(name, () => {
        refused(yaml, field);
      });
    }
  });
});
