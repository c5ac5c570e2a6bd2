/** What the benchmark's servers share: listen on 127.0.0.1, announce the port, stop on a signal. */
import type { Server } from 'node:http';

export function serve(server: Server, port: number, onStop: () => void = () => undefined): void {
  server.keepAliveTimeout = 30_000;
  server.listen(port, '127.0.0.1', () => {
    const address = server.address();
    const actual = typeof address === 'object' && address !== null ? address.port : port;
    process.stdout.write(`${JSON.stringify({ listening: actual })}\n`);
  });
  const shutdown = () => {
    server.close();
    server.closeAllConnections();
    onStop();
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}
