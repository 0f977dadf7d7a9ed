// A throwaway PostgreSQL server for integration tests (tests/pg/start-pg, stop-pg).
//
//   import { startPg } from './lib/pg.mjs';
//   const pg = await startPg();        // { dir, url, stop(), start(), destroy(), query(sql) }
//   startStack({ env: { LATCH_DATABASE_URL: pg.url } });
//
// The server listens only on a Unix socket in a fresh /tmp directory (short path: socket paths
// are limited to 107 bytes). As root it runs as the "postgres" user. Missing PostgreSQL makes
// startPg throw (the test fails, it is never skipped).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { SRC } from './stack.mjs';

const run = promisify(execFile);
const START = path.join(SRC, 'tests/pg/start-pg');
const STOP = path.join(SRC, 'tests/pg/stop-pg');

export async function startPg() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latch-pg-'));
  const start = async () => {
    try {
      const { stdout } = await run(START, [dir], { timeout: 120000 });
      return stdout.trim().split('\n').pop();
    } catch (e) {
      throw new Error(`tests/pg/start-pg failed (is the 'postgresql' package installed?): ${e.stderr || e.message}`);
    }
  };
  const url = await start();
  return {
    dir,
    url,
    /** Restarts a stopped server (same data, same URL). */
    async start() { await start(); },
    /** Stops the server the way an operator would: pg_ctl stop -m fast. */
    async stop() { await run(STOP, [dir], { timeout: 120000 }); },
    async destroy() { await run(STOP, [dir, '--rm'], { timeout: 120000 }); },
    /** Runs SQL with psql; resolves stdout (unaligned, tuples only). */
    async query(sql) {
      const { stdout } = await run('psql', ['-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', sql], { timeout: 30000 });
      return stdout.trim();
    },
  };
}
