/**
 * The authorization server's own pages: sign-in, consent and errors. Plain
 * server-rendered HTML: no script, no external asset, one fixed stylesheet
 * allowed by its hash, every value escaped. The headers (pageHeaders) forbid
 * framing, caching, cross-origin referrers and sniffing; a form's CSP also names the
 * client's redirect origin, because Chromium applies form-action to the
 * redirects that follow a form POST.
 */
import { createHash } from 'node:crypto';
import { ADMIN_SCOPE } from './scopes.ts';

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

/** Text safe in an element body and in a double- or single-quoted attribute. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"'`]/g, (char) => ESCAPES[char]!);
}

const STYLE = `
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1c1e21;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:34rem;margin:3rem auto;padding:2rem;background:#fff;border:1px solid #d8dbe0;border-radius:8px}
h1{margin:0 0 1rem;font-size:1.4rem}
p{margin:.4rem 0}
.label{margin-top:1.2rem;color:#5b616b;font-size:.8rem;text-transform:uppercase;letter-spacing:.04em}
.primary{font-size:1.15rem;font-weight:600;overflow-wrap:anywhere}
.mono,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;overflow-wrap:anywhere}
.muted{color:#5b616b}
.error{padding:.6rem .8rem;background:#fdecea;border:1px solid #f5c2c0;border-radius:6px;color:#8a1c14}
.warning{padding:.6rem .8rem;background:#fff6e0;border:1px solid #f0d48a;border-radius:6px}
ul{margin:.4rem 0;padding-left:1.2rem}
li{margin:.3rem 0}
label{display:block;margin-top:1rem;font-weight:600}
input[type=text],input[type=password]{display:block;width:100%;margin-top:.3rem;padding:.55rem;font:inherit;border:1px solid #b8bdc6;border-radius:6px}
.actions{display:flex;gap:.75rem;justify-content:flex-end;margin-top:1.6rem}
button{padding:.55rem 1.3rem;font:inherit;font-weight:600;border-radius:6px;border:1px solid #b8bdc6;background:#fff;color:#1c1e21;cursor:pointer}
button.primary-button{background:#1d5fd1;border-color:#1d5fd1;color:#fff}
button.link{padding:0;border:0;background:none;color:#1d5fd1;font-weight:400;text-decoration:underline}
form.secondary{margin-top:1rem;text-align:right}
`;

/** CSP source allowing the one inline stylesheet. */
export const STYLE_SOURCE = `'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`;

/**
 * The CSP source expression that lets a form's redirect reach `uri`: its
 * origin for http(s), its scheme for a private-use scheme (native apps), or
 * null if it cannot be expressed safely (nothing is added then).
 */
export function formActionSource(uri: string): string | null {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return null;
  }
  if (url.protocol === 'http:' || url.protocol === 'https:') {
    const origin = url.origin;
    return /^https?:\/\/[A-Za-z0-9.\-]+(:\d+)?$|^https?:\/\/\[[0-9A-Fa-f:.]+\](:\d+)?$/.test(origin) ? origin : null;
  }
  return /^[a-z][a-z0-9+.-]*:$/.test(url.protocol) && !['javascript:', 'data:', 'blob:', 'filesystem:'].includes(url.protocol) ? url.protocol : null;
}

/**
 * Headers for one of these pages. `formTargets` are URIs a form's response may
 * redirect to (the client's redirect_uri); 'self' is always allowed, and no
 * form-action is allowed at all for a page without forms.
 */
export function pageHeaders(formTargets: readonly string[] | null = []): Record<string, string> {
  let formAction = "'none'";
  if (formTargets !== null) {
    const sources = new Set(["'self'"]);
    for (const target of formTargets) {
      const source = formActionSource(target);
      if (source) sources.add(source);
    }
    formAction = [...sources].join(' ');
  }
  return {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Security-Policy': `default-src 'none'; style-src ${STYLE_SOURCE}; img-src 'none'; form-action ${formAction}; frame-ancestors 'none'; base-uri 'none'`,
    'X-Frame-Options': 'DENY',
    'Cache-Control': 'no-store',
    Pragma: 'no-cache',
    // Not no-referrer: with it, browsers send `Origin: null` on the form POSTs, and the
    // Origin check could not tell our own forms from a sandboxed frame's. same-origin
    // sends nothing to any other origin (the client's redirect_uri included).
    'Referrer-Policy': 'same-origin',
    'X-Content-Type-Options': 'nosniff',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Resource-Policy': 'same-origin',
  };
}

/** Headers for an error page (no form). */
export const errorPageHeaders = (): Record<string, string> => pageHeaders(null);

export function layout(title: string, body: string, meta = ''): string {
  return (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">' +
    '<meta name="referrer" content="same-origin">' +
    meta +
    `<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>` +
    `<body><main>${body}</main></body></html>\n`
  );
}

export const hidden = (name: string, value: string): string => `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`;

/**
 * An error page: `error` and `error_description`, nothing else. It carries its
 * own CSP in a meta element too, since oidc-provider's renderError may send it
 * without pageHeaders.
 */
export function renderErrorPage(out: Record<string, string>): string {
  const error = typeof out.error === 'string' && out.error ? out.error : 'server_error';
  const description = typeof out.error_description === 'string' && out.error_description ? out.error_description : 'the request could not be completed';
  const meta = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src ${STYLE_SOURCE}; form-action 'none'; base-uri 'none'">`;
  return layout(
    'Something went wrong',
    `<h1>Something went wrong</h1>` +
      `<p class="error"><span class="mono">${escapeHtml(error)}</span>: ${escapeHtml(description)}</p>` +
      `<p class="muted">Return to the application and start again.</p>`,
    meta,
  );
}

/** How a client is shown. */
export interface ClientView {
  /** client_id. */
  id: string;
  /** client_name from its metadata, if any (self-asserted). */
  name: string | null;
  /** For a Client ID Metadata Document client (https client_id): the host that was verified by fetching the document. */
  verifiedHost: string | null;
}

function clientTitle(client: ClientView): string {
  return client.verifiedHost ?? client.name ?? client.id;
}

function clientBlock(client: ClientView): string {
  const lines: string[] = [`<p class="label">Application</p>`, `<p class="primary" data-client>${escapeHtml(clientTitle(client))}</p>`];
  if (client.verifiedHost) {
    if (client.name) lines.push(`<p>It calls itself “${escapeHtml(client.name)}”.</p>`);
    lines.push(`<p class="muted">Verified from its metadata document at <span class="mono">${escapeHtml(client.id)}</span></p>`);
  } else {
    lines.push(`<p class="muted">Client ID <span class="mono">${escapeHtml(client.id)}</span></p>`);
  }
  return lines.join('');
}

export interface LoginView {
  /** Where the form posts (path). */
  action: string;
  csrf: string;
  /** Where the cancel form posts (path). */
  abortAction: string;
  abortCsrf: string;
  client: ClientView;
  /** The name to prefill (the last attempt, or login_hint). */
  username?: string | undefined;
  /** A message shown above the form (wrong name or password, throttled). */
  message?: string | undefined;
  /** Show the user name and password form (identity.login.local); default true. */
  password?: boolean | undefined;
  /** Sign-in at an upstream OpenID provider: a button posting to `action`. */
  upstream?: { action: string; csrf: string; displayName: string } | undefined;
}

export function renderLogin(view: LoginView): string {
  const message = view.message ? `<p class="error" role="alert">${escapeHtml(view.message)}</p>` : '';
  const password = view.password !== false;
  const upstream = view.upstream
    ? `<form method="post" action="${escapeHtml(view.upstream.action)}" data-upstream>` +
      hidden('csrf', view.upstream.csrf) +
      `<div class="actions"><button type="submit"${password ? '' : ' class="primary-button" autofocus'}>Sign in with ${escapeHtml(view.upstream.displayName)}</button></div>` +
      `</form>`
    : '';
  const local = password
    ? `<form method="post" action="${escapeHtml(view.action)}">` +
      hidden('csrf', view.csrf) +
      `<label for="username">User name</label>` +
      `<input type="text" id="username" name="username" value="${escapeHtml(view.username ?? '')}" autocomplete="username" autocapitalize="none" spellcheck="false" maxlength="64" required autofocus>` +
      `<label for="password">Password</label>` +
      `<input type="password" id="password" name="password" autocomplete="current-password" maxlength="1024" required>` +
      `<div class="actions"><button type="submit" class="primary-button">Sign in</button></div>` +
      `</form>`
    : '';
  const body =
    `<h1>Sign in</h1>` +
    `<p>to continue to <b>${escapeHtml(clientTitle(view.client))}</b></p>` +
    message +
    upstream +
    (upstream && local ? `<p class="label">or with a local account</p>` : '') +
    local +
    `<form method="post" action="${escapeHtml(view.abortAction)}" class="secondary">` +
    hidden('csrf', view.abortCsrf) +
    `<button type="submit" class="link">Cancel</button></form>`;
  return layout('Sign in', body);
}

/** One MCP server the client asks for, with the scopes it asks for there. */
export interface ServerView {
  name: string;
  /** Canonical resource URI, {issuer}/mcp/NAME. */
  resource: string;
  scopes: string[];
}

/** What a scope lets the client do, in plain words. */
export function describeScope(scope: string): string {
  const tool = /^mcp:([^:]+):tool:(.+)$/.exec(scope);
  if (tool) return `call the tool ${tool[2]} on ${tool[1]}`;
  const server = /^mcp:([^:]+)$/.exec(scope);
  if (server) return `use every tool, resource and prompt of ${server[1]}`;
  if (scope === ADMIN_SCOPE) return 'administer the server catalog as you: propose, approve, suspend and retire MCP servers, as far as your roles allow';
  if (scope === 'openid') return 'learn your user name';
  if (scope === 'offline_access') return 'keep access while you are away';
  return `the permission “${scope}”`;
}

export interface ConsentView {
  action: string;
  csrf: string;
  /** The signed-in user. */
  user: string;
  client: ClientView;
  redirectUri: string;
  servers: ServerView[];
  /** The admin API ({issuer}/admin/v1), when asked for. */
  admin?: { resource: string; scopes: string[] } | null;
  /** openid, offline_access, when asked for. */
  oidcScopes: string[];
  /** A caution shown above the buttons (e.g. the redirect goes to another host). */
  warning?: string | undefined;
  /** The task the request opens (a mandate:task authorization detail): its tokens are bound to it. */
  task?: { purpose: string; ticket: string | null; server: string; tools: string[]; lifetime: string } | null;
}

const scopeItem = (scope: string): string => `<li>${escapeHtml(describeScope(scope))} <code class="muted">${escapeHtml(scope)}</code></li>`;

export function renderConsent(view: ConsentView): string {
  const servers = view.servers
    .map(
      (server) =>
        `<p class="label">MCP server</p>` +
        `<p class="primary" data-server>${escapeHtml(server.name)}</p>` +
        `<p class="mono muted">${escapeHtml(server.resource)}</p>` +
        `<p>It will be able to:</p><ul>${server.scopes.map(scopeItem).join('')}</ul>`,
    )
    .join('');
  const admin = view.admin
    ? `<p class="label">Mandate administration</p>` +
      `<p class="primary" data-admin>the server catalog</p>` +
      `<p class="mono muted">${escapeHtml(view.admin.resource)}</p>` +
      `<p>It will be able to:</p><ul>${view.admin.scopes.map(scopeItem).join('')}</ul>`
    : '';
  const oidc = view.oidcScopes.length > 0 ? `<p class="label">Your account</p><ul>${view.oidcScopes.map(scopeItem).join('')}</ul>` : '';
  const task = view.task
    ? `<p class="label">For this task</p>` +
      `<p class="primary" data-task>for this task: ${escapeHtml(view.task.purpose)}</p>` +
      (view.task.ticket !== null ? `<p>Ticket: <b data-ticket>${escapeHtml(view.task.ticket)}</b></p>` : '') +
      `<p>On ${escapeHtml(view.task.server)}: ${view.task.tools.length > 0 ? `only ${view.task.tools.map((tool) => `<code>${escapeHtml(tool)}</code>`).join(', ')}` : 'every tool'}; ` +
      `it lasts ${escapeHtml(view.task.lifetime)}, and what is allowed here ends with it.</p>`
    : '';
  const warning = view.warning ? `<p class="warning" role="note">${escapeHtml(view.warning)}</p>` : '';
  const body =
    `<h1>Allow access?</h1>` +
    `<p class="muted">Signed in as <b>${escapeHtml(view.user)}</b></p>` +
    clientBlock(view.client) +
    `<p class="label">Answers go to</p><p class="mono" data-redirect-uri>${escapeHtml(view.redirectUri)}</p>` +
    task +
    servers +
    admin +
    oidc +
    warning +
    `<form method="post" action="${escapeHtml(view.action)}">` +
    hidden('csrf', view.csrf) +
    `<div class="actions">` +
    `<button type="submit" name="decision" value="deny">Deny</button>` +
    `<button type="submit" name="decision" value="allow" class="primary-button">Allow</button>` +
    `</div></form>`;
  return layout('Allow access?', body);
}
