/**
 * Tokens Mandate signs for upstreams (the `jwt` kind) and for their
 * authorization servers (the subject and actor tokens of `token-exchange`):
 * signed with the authorization server's active key, the one published at
 * /oauth/jwks, so whoever receives one verifies it there.
 */
import { randomUUID } from 'node:crypto';
import { importJWK, SignJWT, type JWK, type JWTPayload } from 'jose';
import { SIGNING_ALG } from '../identity/keys.ts';

/** What minted tokens are signed with: the authorization server's active key, and its issuer. */
export interface Minter {
  issuer: string;
  key(): JWK;
}

export interface Minted {
  token: string;
  jti: string;
  /** Epoch seconds. */
  exp: number;
}

/** Imports each signing key once. */
export class Signer {
  private readonly minter: Minter;
  private readonly keys = new Map<string, Awaited<ReturnType<typeof importJWK>>>();

  constructor(minter: Minter) {
    this.minter = minter;
  }

  get issuer(): string {
    return this.minter.issuer;
  }

  /** A JWT with `iss`, `sub`, `aud`, `jti`, `iat` and `exp` (now + ttlSeconds) besides `claims`. */
  async mint(claims: JWTPayload, options: { sub: string; aud: string; ttlSeconds: number; now: number; typ?: string }): Promise<Minted> {
    const jwk = this.minter.key();
    let key = this.keys.get(jwk.kid ?? '');
    if (key === undefined) {
      key = await importJWK(jwk, SIGNING_ALG);
      this.keys.set(jwk.kid ?? '', key);
    }
    const iat = Math.floor(options.now / 1000);
    const jti = randomUUID();
    const exp = iat + options.ttlSeconds;
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: SIGNING_ALG, kid: jwk.kid, typ: options.typ ?? 'JWT' })
      .setIssuer(this.minter.issuer)
      .setSubject(options.sub)
      .setAudience(options.aud)
      .setJti(jti)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(key);
    return { token, jti, exp };
  }
}
