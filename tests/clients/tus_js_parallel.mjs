// tus-js-client with `parallelUploads` against vidcache: the file is cut
// into PARALLEL partial uploads sent at once, then a final upload
// concatenates them (tus `concatenation`).
// Usage: node tus_js_parallel.mjs ENDPOINT FILE PARALLEL
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import * as tus from 'tus-js-client';

const [endpoint, path, parallelArg] = process.argv.slice(2);
const file = readFileSync(path);
const url = await new Promise((resolve, reject) => {
  const upload = new tus.Upload(file, {
    endpoint,
    parallelUploads: Number(parallelArg),
    retryDelays: [0, 500, 1000],
    metadata: { filename: basename(path), filetype: 'video/mp4' },
    onError: reject,
    onSuccess: () => resolve(upload.url),
  });
  upload.start();
});
console.log(JSON.stringify({ url, size: file.length }));
