/** The authorization server's paths, and how a request path is matched to them. */
import { issuerPath, type Config } from '../config/load.ts';

export const ROUTES = {
  authorization: '/oauth/authorize',
  token: '/oauth/token',
  registration: '/oauth/register',
  revocation: '/oauth/revoke',
  introspection: '/oauth/introspect',
  jwks: '/oauth/jwks',
  end_session: '/oauth/logout',
  userinfo: '/oauth/userinfo',
  pushed_authorization_request: '/oauth/par',
} as const;

export const INTERACTION_PREFIX = '/interaction/';

/** The path of one interaction's pages (login, consent) under the issuer. */
export function interactionPath(config: Config, uid: string): string {
  return `${issuerPath(config.issuer)}${INTERACTION_PREFIX}${uid}`;
}

/** The same pages as an absolute URL on the configured issuer (where the browser is redirected). */
export function interactionUrl(config: Config, uid: string): string {
  return new URL(interactionPath(config, uid), config.issuer).href;
}

/**
 * The route a request path reaches, compared the way the library's router
 * matches (case-insensitive, trailing slashes ignored), so that no spelling of
 * a path reaches an endpoint around Mandate's steps.
 */
export function routeKey(path: string): string {
  return path.replace(/\/+$/, '').toLowerCase();
}

export function isRoute(path: string, route: string): boolean {
  return routeKey(path) === route.toLowerCase();
}
