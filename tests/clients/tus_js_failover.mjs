// tus-js-client under Node against two vidcache daemons that share uploads
// (S3 backend): the upload starts on A; once `killAt` bytes are sent, in
// the middle of a PATCH, A is SIGKILLed (pid given); the upload fails there,
// and a new Upload resumes it on B, at the offset B reports, with
// tus-js-client's default retryDelays (0, 1, 3, 5 s): A's claim on the
// upload is still running, so B answers 423 Locked (with Retry-After) until
// it runs out (`upload.claim_secs`), and a retry goes through. The summary
// counts the 423s and gives their Retry-After.
// Usage: node tus_js_failover.mjs ENDPOINT_A ENDPOINT_B FILE CHUNK_BYTES KILL_AT PID_A
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import * as tus from 'tus-js-client';
import { resume } from './tus_resume.mjs';

const [endpointA, endpointB, path, chunkArg, killArg, pidArg] = process.argv.slice(2);
const chunkSize = Number(chunkArg);
const killAt = Number(killArg);
const file = readFileSync(path);

let killedAt = null;
const first = await new Promise((resolve) => {
  const upload = new tus.Upload(file, {
    endpoint: endpointA,
    chunkSize,
    retryDelays: [],
    metadata: { filename: basename(path), filetype: 'video/mp4' },
    onProgress: (sent) => {
      if (killedAt === null && sent >= killAt) {
        killedAt = sent;
        process.kill(Number(pidArg), 'SIGKILL');
      }
    },
    onError: (error) => resolve({ url: upload.url, error: String(error) }),
    onSuccess: () => resolve({ url: upload.url, error: null }),
  });
  upload.start();
});
if (first.error === null) throw new Error('the upload finished on A before A was killed');

const onB = new URL(new URL(first.url).pathname, endpointB).toString();
const head = await fetch(onB, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
const resumedFrom = Number(head.headers.get('upload-offset'));
const met = await resume(onB, file, chunkSize);
console.log(JSON.stringify({ url: onB, killed_at: killedAt, resumed_from: resumedFrom, size: file.length, ...met }));
