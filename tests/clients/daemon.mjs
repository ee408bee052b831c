// The vidcache daemon as the page tests run it: the built binary on a given
// port, root and database, with small chunks and a quick two-rung ladder.
import { spawn } from 'node:child_process';

export const CHUNK = 256 * 1024;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it answers something truthy; fails after `timeout` ms. */
export async function until(what, check, { timeout = 60000, every = 100 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}

export class Daemon {
  constructor({ binary, root, database, port, ladder = '360:800,240:300', preset = 'ultrafast', env = {} }) {
    this.options = { binary, root, database, port, ladder, preset, env };
    this.base = `http://127.0.0.1:${port}`;
    this.child = null;
  }

  async start() {
    const { binary, root, database, port, ladder, preset, env } = this.options;
    this.child = spawn(binary, ['serve'], {
      env: {
        ...process.env,
        VIDCACHE__SERVER__BIND: `127.0.0.1:${port}`,
        VIDCACHE__STORAGE__ROOT: root,
        VIDCACHE__DATABASE__URL: database,
        VIDCACHE__UPLOAD__DEFAULT_CHUNK_BYTES: String(CHUNK),
        VIDCACHE__TRANSCODE__WORKERS: '1',
        VIDCACHE__TRANSCODE__PRESET: preset,
        VIDCACHE__TRANSCODE__LADDER: ladder,
        VIDCACHE__LOG__FILTER: 'warn',
        ...env,
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    for (let i = 0; i < 600; i++) {
      try {
        if ((await fetch(`${this.base}/readyz`)).ok) return;
      } catch (_) { /* not up yet */ }
      await sleep(50);
    }
    throw new Error('the daemon did not come up');
  }

  /** SIGKILL, not a request to stop. */
  kill() {
    const child = this.child;
    if (!child || child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once('exit', resolve);
      child.kill('SIGKILL');
    });
  }
}
