// tus-js-client under Node resumes an upload at UPLOAD_URL (on a daemon
// other than the one that began it) with its default retryDelays, and
// prints what it met (`tus_resume.mjs`).
// Usage: node tus_js_resume.mjs UPLOAD_URL FILE CHUNK_BYTES
import { readFileSync } from 'node:fs';
import { resume } from './tus_resume.mjs';

const [uploadUrl, path, chunkArg] = process.argv.slice(2);
const met = await resume(uploadUrl, readFileSync(path), Number(chunkArg));
console.log(JSON.stringify({ url: uploadUrl, ...met }));
