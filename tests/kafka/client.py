#!/usr/bin/env python3
"""An outside Kafka client for the tests (confluent-kafka, which bundles a
current librdkafka; Debian's kcat cannot talk to tansu).

  client.py produce BROKERS TOPIC KEY JSON
  client.py consume BROKERS TOPIC FIELD=VALUE [--timeout S]
      prints the first message whose JSON has FIELD equal to VALUE
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer


def produce(brokers, topic, key, value):
    producer = Producer({"bootstrap.servers": brokers})
    errors = []
    producer.produce(topic, key=key.encode(), value=value.encode(),
                     on_delivery=lambda err, msg: err and errors.append(err))
    producer.flush(30)
    if errors:
        sys.exit(f"delivery failed: {errors[0]}")


def consume(brokers, topic, match, timeout):
    field, _, want = match.partition("=")
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"test-client-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([topic])
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            try:
                body = json.loads(msg.value())
            except ValueError:
                continue
            if str(body.get(field)) == want:
                print(json.dumps(body))
                return
        sys.exit(f"no message with {match} on {topic} within {timeout} s")
    finally:
        consumer.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "produce":
        produce(*args[1:5])
    elif args[0] == "consume":
        timeout = float(args[args.index("--timeout") + 1]) if "--timeout" in args else 60
        consume(args[1], args[2], args[3], timeout)
    else:
        sys.exit(__doc__)
