/**
 * CPU time per process, read from /proc (Linux), so that the bench can say
 * how much CPU each process spent per request: on a machine where the load
 * generator, the upstream and the proxy share the cores, throughput follows
 * the sum of the three, and a ratio alone does not say which one moved.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;

/** The kernel's clock ticks per second for /proc times (USER_HZ; 100 where getconf is missing). */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
      ticksPerSecond = Number.isInteger(value) && value > 0 ? value : 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/**
 * User plus system ticks from the text of /proc/PID/stat. The command name
 * (field 2) is in parentheses and may hold spaces or parentheses itself, so
 * the fields are counted from the last ')'.
 */
export function statTicks(stat: string): number {
  const end = stat.lastIndexOf(')');
  if (end < 0) throw new Error('not a /proc stat line');
  // After ')': state is field 3, utime field 14, stime field 15.
  const fields = stat.slice(end + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error('not a /proc stat line');
  return utime + stime;
}

/** CPU time the process has used so far (every thread), ms; null where /proc cannot tell (another system, or the process is gone). */
export function cpuMs(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    return (statTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')) * 1000) / clockTicks();
  } catch {
    return null;
  }
}

/** µs per request from two readings, or null when either is missing or no request completed. */
export function usPerRequest(before: number | null, after: number | null, requests: number): number | null {
  if (before === null || after === null || requests <= 0) return null;
  return Math.round(((after - before) * 1000) / requests);
}
