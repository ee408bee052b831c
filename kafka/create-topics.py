#!/usr/bin/env python3
"""Creates vidcache's Kafka topics from topics.json (partitions, retention).

  python3 kafka/create-topics.py --brokers HOST:PORT [--prefix vidcache.] [--replication 1]

Topics that exist already are left as they are. vidcache itself creates
missing topics at start-up when `kafka.create_topics` is on (the default),
from the same file; this script is for operators who turn that off.
Needs confluent-kafka (pip install confluent-kafka).
"""
import argparse
import json
import pathlib
import sys

from confluent_kafka.admin import AdminClient, NewTopic


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--prefix", default="vidcache.")
    parser.add_argument("--replication", type=int, default=1)
    args = parser.parse_args()
    definitions = json.loads((pathlib.Path(__file__).parent / "topics.json").read_text())
    admin = AdminClient({"bootstrap.servers": args.brokers})
    topics = [
        NewTopic(args.prefix + d["name"], num_partitions=d["partitions"],
                 replication_factor=args.replication, config=d.get("config", {}))
        for d in definitions
    ]
    failed = False
    for name, future in admin.create_topics(topics, operation_timeout=10).items():
        try:
            future.result()
            print(f"created {name}")
        except Exception as e:  # noqa: BLE001 - reported per topic
            if "TOPIC_ALREADY_EXISTS" in str(e):
                print(f"exists  {name}")
            else:
                print(f"failed  {name}: {e}", file=sys.stderr)
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
