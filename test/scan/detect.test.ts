/** The detection rules of `mandate scan`: known token formats, URLs, names with random values, and what is not a secret. */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { describe, it } from 'node:test';
import { argFields, detect, detectField, isPlaceholder, isSecretName, knownTokens, mask, shannonEntropy, type Field } from '../../src/scan/detect.ts';

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** Random characters, without the letter runs a placeholder check looks for (the tests must not depend on luck). */
function random(length: number, alphabet = ALNUM): string {
  for (;;) {
    const text = Array.from({ length }, () => alphabet[randomInt(alphabet.length)]).join('');
    if (!/xxxx|your|here|example|change|replace|placeholder|dummy|redacted|insert|todo|fixme/i.test(text)) return text;
  }
}

const env = (name: string, value: string): Field => ({ location: `env.${name}`, role: 'env', name, value });
const kinds = (fields: Field[]) => detect(fields).map((d) => d.kind);

describe('mask', () => {
  it('shows at most the first 4 and the last 2 characters', () => {
    assert.equal(mask('ghp_abcdefghijklmnopqrstuvwxyz0123456789'), 'ghp_…89');
    assert.equal(mask('0123456789abcdef'), '0123…ef');
  });

  it('shows less of a short secret, and nothing of a very short one', () => {
    assert.equal(mask('hunter2hunter'), 'hu…');
    assert.equal(mask('abc'), '…');
    assert.equal(mask(''), '…');
  });

  it('counts characters, not UTF-16 units', () => {
    assert.equal(mask('🔑🔑🔑🔑secretsecret🔒🔒'), '🔑🔑🔑🔑…🔒🔒');
  });
});

describe('placeholders are not secrets', () => {
  for (const value of ['${GITHUB_TOKEN}', '${env:GITHUB_TOKEN}', '${input:token}', '${API_KEY:-}', '$GITHUB_TOKEN', '$env:TOKEN', '%TOKEN%', '{{token}}', '<your-key>', '<YOUR_API_KEY>', 'Bearer <token>', 'your-api-key-here', 'sk-your-openai-key', 'xxxxxxxxxxxxxxxx', 'XXXX-XXXX', 'changeme', 'CHANGE_ME', 'REPLACE_ME', '', '   ', '***', '********', '...', 'secret', 'password', 'token']) {
    it(JSON.stringify(value), () => {
      assert.equal(isPlaceholder(value), true);
      assert.deepEqual(kinds([env('API_TOKEN', value)]), []);
    });
  }

  it('a random value is not a placeholder', () => {
    assert.equal(isPlaceholder(random(32)), false);
  });

  it('known formats filled with a template are not tokens', () => {
    assert.deepEqual(knownTokens('ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX'), []);
    assert.deepEqual(knownTokens('AKIAIOSFODNN7EXAMPLE'), []);
    assert.deepEqual(knownTokens('sk_test_xxxxxxxxxxxxxxxxxxxxxxxx'), []);
    assert.deepEqual(knownTokens('ghp_000000000000000000000000000000000000'), []);
    assert.deepEqual(knownTokens('-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----'), []);
  });
});

describe('known token formats', () => {
  const pem = `-----BEGIN RSA PRIVATE KEY-----\n${Array.from({ length: 4 }, () => random(64, `${ALNUM}+/`)).join('\n')}\n-----END RSA PRIVATE KEY-----`;
  const jwt = `${Buffer.from('{"alg":"RS256","typ":"JWT"}').toString('base64url')}.${Buffer.from('{"sub":"svc","exp":1999999999}').toString('base64url')}.${random(43)}`;
  const cases: [string, string][] = [
    [`ghp_${random(36)}`, 'github-token'],
    [`gho_${random(36)}`, 'github-token'],
    [`ghu_${random(36)}`, 'github-token'],
    [`ghs_${random(36)}`, 'github-token'],
    [`ghr_${random(36)}`, 'github-token'],
    [`github_pat_${random(22)}_${random(59)}`, 'github-token'],
    [`xoxb-${random(12, '0123456789')}-${random(13, '0123456789')}-${random(24)}`, 'slack-token'],
    [`xoxp-${random(12, '0123456789')}-${random(12, '0123456789')}-${random(32, '0123456789abcdef')}`, 'slack-token'],
    [`AKIA${random(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')}`, 'aws-access-key-id'],
    [`ASIA${random(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')}`, 'aws-access-key-id'],
    [`sk-proj-${random(64)}`, 'openai-api-key'],
    [`sk-${random(48)}`, 'openai-api-key'],
    [`sk-ant-api03-${random(90)}AA`, 'anthropic-api-key'],
    [`sk_live_${random(24)}`, 'stripe-live-key'],
    [`rk_live_${random(24)}`, 'stripe-live-key'],
    [`sk_test_${random(24)}`, 'stripe-test-key'],
    [`AIza${random(35)}`, 'google-api-key'],
    [jwt, 'jwt'],
    [pem, 'private-key'],
  ];
  for (const [value, kind] of cases) {
    it(`${kind}: ${value.slice(0, 12)}…`, () => {
      const found = detect([{ location: 'args[0]', role: 'arg', value }]);
      assert.deepEqual(found.map((d) => d.kind), [kind]);
      assert.equal(found[0]!.secret, value);
      assert.equal(found[0]!.masked, mask(value));
    });
  }

  it('a token inside a longer value is found, with only the token as the secret', () => {
    const token = `ghp_${random(36)}`;
    const [found] = detect([{ location: 'headers.Authorization', role: 'header', name: 'Authorization', value: `token ${token}` }]);
    assert.equal(found?.kind, 'github-token');
    assert.equal(found?.secret, token);
  });

  it('Stripe test keys are less severe than live ones', () => {
    assert.equal(detectField(env('STRIPE_KEY', `sk_test_${random(24)}`))[0]?.severity, 'low');
    assert.equal(detectField(env('STRIPE_KEY', `sk_live_${random(24)}`))[0]?.severity, 'high');
  });

  it('something that only resembles a JWT (its header is not JSON with alg) is not one', () => {
    assert.deepEqual(knownTokens(`eyJ${random(10)}.eyJ${random(10)}.${random(20)}`), []);
  });
});

describe('AWS secret access keys', () => {
  const keyId = `AKIA${random(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')}`;
  const secret = random(40, `${ALNUM}/+`);

  it('next to an access key ID, 40 characters of base64 are a secret access key, whatever their name', () => {
    assert.deepEqual(kinds([env('AWS_ACCESS_KEY_ID', keyId), env('CREDS_B', secret)]), ['aws-access-key-id', 'aws-secret-access-key']);
  });

  it('named like one, it is found on its own', () => {
    assert.deepEqual(kinds([env('AWS_SECRET_ACCESS_KEY', secret)]), ['aws-secret-access-key']);
  });

  it('without an access key ID or the name, 40 characters of base64 are not called an AWS key', () => {
    assert.deepEqual(kinds([env('CREDS_B', secret)]), []);
  });
});

describe('values named like secrets', () => {
  it('a long random value under a secret name is high-entropy', () => {
    for (const name of ['LINEAR_API_KEY', 'NOTION_TOKEN', 'CLIENT_SECRET', 'DB_PASSWORD', 'apiKey', 'X-API-Key']) {
      assert.deepEqual(kinds([env(name, random(32))]), ['high-entropy'], name);
    }
  });

  it('Authorization: Bearer <literal> is found, its scheme left out of the secret', () => {
    const token = random(40);
    const [found] = detect([{ location: 'headers.Authorization', role: 'header', name: 'Authorization', value: `Bearer ${token}` }]);
    assert.equal(found?.kind, 'high-entropy');
    assert.equal(found?.secret, token);
  });

  it('Basic credentials are found when they decode to user:password', () => {
    const basic = Buffer.from(`deploy:${random(20)}`).toString('base64');
    assert.deepEqual(kinds([{ location: 'headers.Authorization', role: 'header', name: 'Authorization', value: `Basic ${basic}` }]), ['basic-auth']);
  });

  it('a shorter literal password is a password', () => {
    assert.deepEqual(kinds([env('ADMIN_PASSWORD', 'Tr0ub4dor&3x')]), ['password']);
  });

  it('the same random value under a name that says nothing is not a finding', () => {
    assert.deepEqual(kinds([env('BUILD_ID', random(32)), env('SESSION_LABEL', random(32))]), []);
  });

  it('paths, URLs without credentials, numbers, booleans and low-entropy text are not secrets', () => {
    for (const value of ['/home/dev/.ssh/id_ed25519_deploy_key', '~/.config/tool/credentials.json', './secrets/api-key.txt', 'C:\\Users\\dev\\key.pem', 'https://api.acme.dev/v1/tokens', '123456789012345678', 'true', 'aaaaaaaaaaaaaaaaaaaa', 'correcthorsebatterystaple']) {
      assert.deepEqual(kinds([env('SERVICE_API_KEY', value)]), [], value);
    }
  });

  it('public keys and key ids are not secrets', () => {
    assert.equal(isSecretName('SSH_PUBLIC_KEY'), false);
    assert.equal(isSecretName('STRIPE_PUBLISHABLE_KEY'), false);
    assert.equal(isSecretName('SIGNING_KEY_ID'), false);
    assert.equal(isSecretName('GITHUB_TOKEN'), true);
    assert.equal(isSecretName('dbPassword'), true);
  });

  it('entropy is measured per character', () => {
    assert.equal(shannonEntropy('aaaa'), 0);
    assert.equal(shannonEntropy('abcd'), 2);
  });
});

describe('URLs', () => {
  it('a password in the userinfo is url-password; the secret is the password alone', () => {
    const password = random(14);
    const [found] = detect([{ location: 'args[2]', role: 'arg', value: `postgresql://app:${password}@db.internal:5432/app` }]);
    assert.equal(found?.kind, 'url-password');
    assert.equal(found?.secret, password);
  });

  it('a credential in a query parameter is url-query-secret', () => {
    const key = random(32);
    for (const param of ['api_key', 'apiKey', 'token', 'access_token', 'key']) {
      const [found] = detect([{ location: 'url', role: 'url', value: `https://mcp.acme.dev/sse?region=eu&${param}=${key}` }]);
      assert.equal(found?.kind, 'url-query-secret', param);
      assert.equal(found?.secret, key);
    }
  });

  it('a URL with placeholders or without credentials is not a finding', () => {
    for (const value of ['https://mcp.acme.dev/sse?api_key=${KEY}', 'https://user:${PASSWORD}@db.acme.dev', 'postgresql://localhost:5432/db', 'https://mcp.acme.dev/mcp?page=2&limit=100', 'https://mcp.acme.dev/?token=']) {
      assert.deepEqual(kinds([{ location: 'url', role: 'url', value }]), [], value);
    }
  });
});

describe('arguments', () => {
  it('take their name from --option=value, --option value, NAME=value and Name: value', () => {
    const fields = argFields(['--api-key=abc', '--token', 'def', '-e', 'GITHUB_TOKEN=ghi', '--header', 'Authorization: Bearer jkl', 'plain'].map((value) => ({ value })));
    assert.deepEqual(
      fields.map((f) => [f.location, f.name, f.value]),
      [
        ['args[0]', 'api-key', 'abc'],
        ['args[1]', undefined, '--token'],
        ['args[2]', 'token', 'def'],
        ['args[3]', undefined, '-e'],
        ['args[4]', 'GITHUB_TOKEN', 'ghi'],
        ['args[5]', undefined, '--header'],
        ['args[6]', 'Authorization', 'Bearer jkl'],
        ['args[7]', undefined, 'plain'],
      ],
    );
  });

  it('a random value after --token is found', () => {
    const value = random(32);
    const found = detect(argFields(['server.js', '--token', value].map((v) => ({ value: v }))));
    assert.deepEqual(found.map((d) => [d.kind, d.field.location]), [['high-entropy', 'args[2]']]);
  });
});
