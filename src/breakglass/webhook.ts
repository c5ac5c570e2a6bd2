/**
 * The break-glass webhook (`breakglass.webhook`, docs/breakglass.md): one
 * JSON POST when a grant opens, with a 5 s bound, best effort. The answer is
 * `sent` (a 2xx), or `failed: CODE` where CODE is the HTTP status, a network
 * error code (ECONNREFUSED, ENOTFOUND…) or TIMEOUT: never the receiver's
 * words. Redirects are not followed. The notice carries no secret.
 */
import type { BreakglassRecord } from '../store/breakglass.ts';

/** The grant as the webhook is told of it: its fields, times in ISO 8601. */
export type WebhookNotice = Pick<BreakglassRecord, 'id' | 'user' | 'openedBy' | 'server' | 'tools' | 'ticket' | 'reason'> & {
  type: 'breakglass.opened';
  openedAt: string;
  expiresAt: string;
};

export const WEBHOOK_TIMEOUT_MS = 5000;

/** A failure as a code only: an error code if there is one, else a generic word. */
function codeOf(error: unknown): string {
  if (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError')) return 'TIMEOUT';
  const cause = error instanceof Error ? (error.cause as { code?: unknown; message?: unknown } | undefined) : undefined;
  // The fetch standard's blocked ports (such as 1, 9, 25) fail before any connection, with no code.
  if (cause?.message === 'bad port') return 'BAD_PORT';
  const code = cause?.code ?? (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z][A-Z0-9_]{1,40}$/.test(code) ? code : 'ERROR';
}

/** Posts the notice; `sent` or `failed: CODE`, never a throw. */
export async function sendNotice(url: string, notice: WebhookNotice, timeoutMs = WEBHOOK_TIMEOUT_MS): Promise<string> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(notice),
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.body?.cancel();
    return response.ok ? 'sent' : `failed: ${response.status}`;
  } catch (error) {
    return `failed: ${codeOf(error)}`;
  }
}
