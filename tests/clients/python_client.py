"""Drives the published Python client (PyPI dwilson-vidcache-client 1.3.0)
unchanged against a daemon, with credentials only in the base URL
(http://ID:SECRET@host:port), and prints what it saw as one JSON line.

usage: python_client.py BASE_URL FILE SOURCE_URL
"""

import json
import sys

import httpx
from vidcache_client import VidCacheClient


def main() -> None:
    base, path, source = sys.argv[1:4]
    seen = {}
    with VidCacheClient(base) as client:
        try:
            init = client.upload_init(source, bucket="videos")
        except httpx.HTTPStatusError as e:
            seen["refused"] = e.response.status_code
            seen["error"] = e.response.json()
            print(json.dumps(seen))
            return
        with open(path, "rb") as f:
            result = client.upload_stream(init["upload_id"], f)
        seen["result"] = result
        seen["resolved"] = client.resolve(source)
        seen["meta_hash"] = client.get_meta(result["hash"])["hash"]
        seen["head"] = client.get_bytes(result["hash"], byte_range=(0, 15)).hex()
        streamed = bytearray()
        with client.stream_video(result["hash"]) as chunks:
            for chunk in chunks:
                streamed.extend(chunk)
        seen["streamed_bytes"] = len(streamed)
        client.delete(result["hash"])
        seen["after_delete"] = client.get_meta(result["hash"])
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
