// Holds the database's write lock from outside latch, the way a long transaction of another
// client (or a stalled disk under a commit) would: SQLite through the sqlite3 shell
// (BEGIN IMMEDIATE), PostgreSQL through psql (LOCK TABLE ... IN SHARE MODE, which blocks every
// write to the table and no read).
//
//   const lock = await holdWriteLock(stack);   // resolves once the lock is held
//   ...
//   await lock.release();                      // commits and waits for the client to exit
import { spawn } from 'node:child_process';
import path from 'node:path';

export async function holdWriteLock(stack, table = 'connections') {
  const child = stack.pg
    ? spawn('psql', ['-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', stack.pg.url], { stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn('sqlite3', [path.join(stack.dir, 'latch.db')], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((r) => child.once('exit', r));
  child.stdin.write(stack.pg
    ? `BEGIN; LOCK TABLE ${table} IN SHARE MODE; SELECT 'locked';\n`
    : ".timeout 5000\nBEGIN IMMEDIATE;\nSELECT 'locked';\n");
  const deadline = Date.now() + 10000;
  while (!out.includes('locked')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill();
      throw new Error(`could not take the database write lock: ${err || out}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return {
    async release() {
      child.stdin.end(stack.pg ? 'COMMIT;\n' : 'COMMIT;\n.quit\n');
      await exited;
      if (child.exitCode !== 0) throw new Error(`lock holder exited with ${child.exitCode}: ${err}`);
    },
  };
}
