"""tuspy against vidcache: upload part of a file, stop (as if the client went
away), then a second uploader resumes from the offset the server reports.
Usage: tuspy_client.py ENDPOINT FILE [CHUNK_BYTES]. Prints a JSON summary."""

import json
import os
import sys

import requests
from tusclient import client

endpoint, path = sys.argv[1], sys.argv[2]
chunk = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 20
size = os.path.getsize(path)
tus = client.TusClient(endpoint)

first = tus.uploader(path, chunk_size=chunk, metadata={"filename": os.path.basename(path)})
first.upload(stop_at=min(3 * chunk, size // 2))
interrupted_at = first.offset
url = first.url

head = requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=30)
resumed_from = int(head.headers["Upload-Offset"])
second = tus.uploader(path, chunk_size=chunk, url=url)
assert second.offset == resumed_from, (second.offset, resumed_from)
second.upload()
print(json.dumps({"url": url, "interrupted_at": interrupted_at, "resumed_from": resumed_from, "size": size}))
