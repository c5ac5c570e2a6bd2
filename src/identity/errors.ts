/** A refusal with its OAuth error code, HTTP status and extra headers; the message is the public description. */
export class OAuthRefusal extends Error {
  override name = 'OAuthRefusal';
  readonly status: number;
  readonly error: string;
  readonly headers: Record<string, string>;
  constructor(status: number, error: string, description: string, headers: Record<string, string> = {}) {
    super(description);
    this.status = status;
    this.error = error;
    this.headers = headers;
  }
}
