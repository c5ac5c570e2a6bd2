/** Operational log (JSON lines on stderr). Never a secret or a whole token in it. */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'mandate' } }, pino.destination({ fd: 2, sync: false }));
}
