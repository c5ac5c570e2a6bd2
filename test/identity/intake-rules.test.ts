/**
 * The pure rules of client registration intake: which redirect URIs a client
 * may register, and which client class its metadata asks for (refusing
 * mixtures and unsafe combinations with invalid_client_metadata).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classify, IntakeError, redirectUriAllowed } from '../../src/identity/intake.ts';

const ALLOWED = ['https://app.example.com', 'https://tools.example.org:8443'];

describe('redirectUriAllowed', () => {
  const allowed = [
    'http://127.0.0.1/callback',
    'http://127.0.0.1:53127/callback',
    'http://[::1]:8080/cb',
    'http://localhost:3000/cb?state=x',
    'https://127.0.0.1:9999/cb',
    'https://app.example.com/oauth/callback',
    'https://app.example.com:443/cb',
    'https://tools.example.org:8443/cb',
  ];
  for (const uri of allowed) {
    it(`allows ${uri}`, () => assert.equal(redirectUriAllowed(uri, ALLOWED), true));
  }

  const refused: [string, string][] = [
    ['https elsewhere', 'https://evil.example.net/cb'],
    ['https on a subdomain of an allowed origin', 'https://x.app.example.com/cb'],
    ['https on an allowed host but another port', 'https://tools.example.org/cb'],
    ['http on an allowed (non-loopback) origin', 'http://app.example.com/cb'],
    ['a fragment', 'http://127.0.0.1:8080/cb#frag'],
    ['a fragment on an allowed origin', 'https://app.example.com/cb#x'],
    ['userinfo', 'http://user@127.0.0.1:8080/cb'],
    ['userinfo with a password', 'https://user:pw@app.example.com/cb'],
    ['userinfo that makes the host look allowed', 'https://app.example.com@evil.example.net/cb'],
    ['a custom scheme', 'com.example.app:/callback'],
    ['a custom scheme with a host', 'myapp://127.0.0.1/cb'],
    ['javascript:', 'javascript:alert(1)'],
    ['data:', 'data:text/html,hi'],
    ['a loopback look-alike', 'http://127.0.0.1.evil.com/'],
    ['a localhost look-alike', 'http://localhost.evil.com/cb'],
    ['another private address', 'http://10.0.0.1/cb'],
    ['not a URL', 'not a url'],
    ['a relative path', '/callback'],
    ['empty', ''],
  ];
  for (const [name, uri] of refused) {
    it(`refuses ${name}: ${uri}`, () => assert.equal(redirectUriAllowed(uri, ALLOWED), false));
  }

  it('with no allowed origins only loopback passes', () => {
    assert.equal(redirectUriAllowed('https://app.example.com/cb', []), false);
    assert.equal(redirectUriAllowed('http://127.0.0.1:1/cb', []), true);
  });
});

function refusal(metadata: Record<string, unknown>, message: RegExp): void {
  assert.throws(
    () => classify(metadata),
    (error: unknown) => {
      assert.ok(error instanceof IntakeError, `expected IntakeError, got ${String(error)}`);
      assert.equal(error.status, 400);
      assert.equal(error.error, 'invalid_client_metadata');
      assert.match(error.message, message);
      return true;
    },
  );
}

describe('classify', () => {
  it('no grant types: interactive (authorization_code is the default)', () => {
    assert.equal(classify({}), 'interactive');
    assert.equal(classify({ redirect_uris: ['http://127.0.0.1/cb'] }), 'interactive');
  });

  it('authorization_code with refresh_token, public or confidential: interactive', () => {
    assert.equal(classify({ grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' }), 'interactive');
    assert.equal(classify({ grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'client_secret_post' }), 'interactive');
    assert.equal(classify({ token_endpoint_auth_method: 'private_key_jwt' }), 'interactive');
  });

  it('client_credentials alone with a confidential method: machine', () => {
    assert.equal(classify({ grant_types: ['client_credentials'] }), 'machine');
    assert.equal(classify({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post' }), 'machine');
    assert.equal(classify({ grant_types: ['client_credentials'], response_types: [] }), 'machine');
  });

  it('mixing client_credentials with interactive grants is refused', () => {
    refusal({ grant_types: ['authorization_code', 'client_credentials'] }, /client_credentials only/);
    refusal({ grant_types: ['client_credentials', 'refresh_token'] }, /client_credentials only/);
  });

  it('token exchange may come with either class, for a confidential client only', () => {
    const exchange = 'urn:ietf:params:oauth:grant-type:token-exchange';
    assert.equal(classify({ grant_types: ['client_credentials', exchange] }), 'machine');
    assert.equal(classify({ grant_types: ['authorization_code', 'refresh_token', exchange], token_endpoint_auth_method: 'client_secret_post' }), 'interactive');
    refusal({ grant_types: ['authorization_code', exchange], token_endpoint_auth_method: 'none' }, /confidential/);
    refusal({ grant_types: [exchange] }, /grant_types/);
  });

  it('client_credentials with token_endpoint_auth_method none is refused', () => {
    refusal({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'none' }, /confidential/);
  });

  it('a machine client with response_types is refused', () => {
    refusal({ grant_types: ['client_credentials'], response_types: ['code'] }, /no response_types/);
  });

  it('response_types other than exactly ["code"] are refused', () => {
    refusal({ response_types: ['token'] }, /response_types/);
    refusal({ response_types: ['code', 'token'] }, /response_types/);
    refusal({ response_types: ['code id_token'] }, /response_types/);
    refusal({ response_types: [] }, /response_types/);
  });

  it('unknown or incomplete grant types are refused', () => {
    refusal({ grant_types: ['implicit'] }, /grant_types/);
    refusal({ grant_types: ['refresh_token'] }, /grant_types/);
    refusal({ grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'] }, /grant_types/);
    refusal({ grant_types: [] }, /grant_types/);
  });

  it('an unknown token_endpoint_auth_method is refused', () => {
    refusal({ token_endpoint_auth_method: 'client_secret_jwt' }, /token_endpoint_auth_method/);
    refusal({ token_endpoint_auth_method: 'tls_client_auth' }, /token_endpoint_auth_method/);
    refusal({ token_endpoint_auth_method: 42 }, /token_endpoint_auth_method/);
    refusal({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'bogus' }, /token_endpoint_auth_method/);
  });

  it('grant_types and response_types must be arrays of strings', () => {
    refusal({ grant_types: 'authorization_code' }, /grant_types must be an array of strings/);
    refusal({ grant_types: [1] }, /grant_types must be an array of strings/);
    refusal({ response_types: 'code' }, /response_types must be an array of strings/);
  });
});
