#!/usr/bin/env python3
"""A producer and consumer that is not this library, for the interop tests.

Each broker is reached with its usual Python client (redis-py, nats-py, pika,
boto3, confluent-kafka) and CloudEvents go through the official CloudEvents
SDK's protocol bindings, doing exactly what each backend's docs.md tells a
foreign producer or consumer to do ("Producing and consuming from other
clients").

    peer.py produce < spec.json     # publishes spec["items"] in order
    peer.py consume < spec.json     # prints the received items as JSON

spec: {"broker", "url", "topic", "group", "items": [...], "count", "timeout_s"}
item: {"case", "id", "key", "headers": {}, "payload": base64, "tombstone"}
      or {"case", "event": {"attributes": {}, "data": ...}}
"""

import asyncio
import base64
import json
import sys
import time
import uuid
from urllib.parse import parse_qs, quote, unquote, urlparse

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.bindings import rabbitmq as ce_rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

FORMAT = JSONFormat()


def b64(data):
    return base64.b64encode(data or b"").decode()


def sdk_event(spec):
    attributes = dict(spec["attributes"])
    if "time" in attributes:
        attributes["time"] = isoparse(attributes["time"])
    return CloudEvent(attributes=attributes, data=spec.get("data"))


def event_report(event):
    attributes = {}
    for name, value in event.get_attributes().items():
        attributes[name] = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return {"attributes": attributes, "data": event.get_data()}


def is_event(headers, prefix="ce-"):
    return any(name.lower() == prefix + "specversion" for name in headers)


# ---------------------------------------------------------------- Redis


def redis_client(spec):
    import redis

    return redis.Redis.from_url(spec["url"])


def redis_produce(spec):
    # A foreign entry: fields `payload` and `key` are the payload and key,
    # every other field is a header (CloudEvents attributes in the HTTP
    # binding's form), the entry id is the message id unless an `id` field
    # names one.
    r = redis_client(spec)
    for item in spec["items"]:
        fields = {}
        if "event" in item:
            msg = ce_http.to_binary(sdk_event(item["event"]), FORMAT)
            fields.update(msg.headers)
            fields["payload"] = msg.body
        else:
            fields.update(item["headers"])
            fields["payload"] = base64.b64decode(item["payload"])
            if item.get("key") is not None:
                fields["key"] = item["key"]
            if item.get("id") is not None:
                fields["id"] = item["id"]
        r.xadd(spec["topic"], fields)


def redis_consume(spec):
    r = redis_client(spec)
    deadline = time.time() + spec["timeout_s"]
    while True:
        entries = r.xrange(spec["topic"], "-", "+")
        if len(entries) >= spec["count"] or time.time() > deadline:
            break
        time.sleep(0.1)
    out = []
    for entry_id, fields in entries:
        fields = {k.decode(): v for k, v in fields.items()}
        headers = {k[2:]: v.decode() for k, v in fields.items() if k.startswith("h.")}
        payload = fields.get("payload", b"")
        item = {
            "id": fields["id"].decode() if "id" in fields else entry_id.decode(),
            "key": fields["key"].decode() if "key" in fields else None,
            "headers": headers,
            "payload": b64(payload),
        }
        if is_event(headers):
            item["event"] = event_report(ce_http.from_binary(ce_http.HTTPMessage(headers, payload), FORMAT))
        out.append(item)
    return out


# ---------------------------------------------------------------- NATS


def nats_stream(spec):
    # The library's stream for a topic: TRANSPORT_<topic> (`_` -> `__`, `.` -> `_d`).
    return "TRANSPORT_" + spec["topic"].replace("_", "__").replace(".", "_d")


def nats_event_headers(event):
    # The NATS binding: the HTTP binding's `ce-` headers and percent-encoding,
    # with the content type as `ce-datacontenttype` (the SDK has no NATS binding).
    msg = ce_http.to_binary(event, FORMAT)
    headers = dict(msg.headers)
    if "content-type" in headers:
        headers["ce-datacontenttype"] = quote(headers.pop("content-type"), safe="")
    return headers, msg.body


async def nats_produce_async(spec):
    import nats

    nc = await nats.connect(spec["url"])
    js = nc.jetstream()
    for item in spec["items"]:
        if "event" in item:
            headers, payload = nats_event_headers(sdk_event(item["event"]))
        else:
            headers = dict(item["headers"])
            payload = base64.b64decode(item["payload"])
            if item.get("key") is not None:
                headers["transport-key"] = item["key"]
            if item.get("id") is not None:
                headers["transport-id"] = item["id"]
        # The stream must exist: subscribing with the library creates it.
        await js.publish(spec["topic"], payload, headers=headers or None, stream=nats_stream(spec))
    await nc.drain()


async def nats_consume_async(spec):
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    nc = await nats.connect(spec["url"])
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        spec["topic"],
        durable="peer" + uuid.uuid4().hex[:8],
        stream=nats_stream(spec),
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    msgs = []
    deadline = time.time() + spec["timeout_s"]
    while len(msgs) < spec["count"] and time.time() < deadline:
        try:
            batch = await sub.fetch(spec["count"] - len(msgs), timeout=1)
        except nats.errors.TimeoutError:
            continue
        for m in batch:
            await m.ack()
        msgs.extend(batch)
    out = []
    for m in msgs:
        headers = dict(m.headers or {})
        item = {
            "id": headers.pop("transport-id", None),
            "key": headers.pop("transport-key", None),
            "headers": {k: v for k, v in headers.items() if k != "Nats-Msg-Id"},
            "payload": b64(m.data),
        }
        if is_event(headers):
            h = dict(item["headers"])
            if "ce-datacontenttype" in h:
                h["content-type"] = unquote(h.pop("ce-datacontenttype"))
            item["event"] = event_report(ce_http.from_binary(ce_http.HTTPMessage(h, m.data), FORMAT))
        out.append(item)
    await nc.drain()
    return out


def nats_produce(spec):
    asyncio.run(nats_produce_async(spec))


def nats_consume(spec):
    return asyncio.run(nats_consume_async(spec))


# ---------------------------------------------------------------- RabbitMQ


def rabbit_channel(spec):
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(spec["url"]))
    return conn, conn.channel()


def rabbitmq_produce(spec):
    import pika

    conn, ch = rabbit_channel(spec)
    ch.confirm_delivery()
    for item in spec["items"]:
        if "event" in item:
            msg = ce_rabbitmq.to_binary(sdk_event(item["event"]), FORMAT)
            headers, content_type, body = dict(msg.headers), msg.content_type, msg.body
            key = item["event"]["attributes"].get("partitionkey")
            message_id = None
        else:
            headers = dict(item["headers"])
            content_type = headers.pop("content-type", None)
            body = base64.b64decode(item["payload"])
            key = item.get("key")
            message_id = item.get("id")
        # Keyed by routing key: the exchange is the topic, a routing key other
        # than the topic's name is the key.
        ch.basic_publish(
            exchange=spec["topic"],
            routing_key=key if key is not None else spec["topic"],
            body=body,
            properties=pika.BasicProperties(
                headers=headers or None,
                content_type=content_type,
                message_id=message_id,
                delivery_mode=2,
            ),
            mandatory=True,
        )
    conn.close()


def rabbitmq_consume(spec):
    conn, ch = rabbit_channel(spec)
    queue = f"{spec['topic']}/{spec['group']}"
    out = []
    deadline = time.time() + spec["timeout_s"]
    while len(out) < spec["count"] and time.time() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        headers = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in (props.headers or {}).items()}
        item = {
            "id": props.message_id,
            "key": headers.pop("transport-key", None),
            "headers": dict(headers),
            "payload": b64(body),
        }
        if props.content_type is not None:
            item["headers"]["content-type"] = props.content_type
        if is_event(headers):
            msg = ce_rabbitmq.RabbitMQMessage(headers=headers, content_type=props.content_type, body=body)
            item["event"] = event_report(ce_rabbitmq.from_binary(msg, FORMAT))
        out.append(item)
    conn.close()
    return out


# ---------------------------------------------------------------- SQS + SNS


def aws(spec, service):
    import boto3

    q = {k: v[0] for k, v in parse_qs(urlparse(spec["url"]).query).items()}
    return boto3.client(
        service,
        region_name=q.get("region", "us-east-1"),
        endpoint_url=q.get("endpoint"),
        aws_access_key_id=q.get("access_key"),
        aws_secret_access_key=q.get("secret_key"),
    )


def sqs_produce(spec):
    sns = aws(spec, "sns")
    arn = sns.create_topic(Name=spec["topic"])["TopicArn"]
    for item in spec["items"]:
        attrs = {}
        if "event" in item:
            msg = ce_http.to_binary(sdk_event(item["event"]), FORMAT)
            attrs.update(msg.headers)
            body = msg.body.decode()
        else:
            attrs.update(item["headers"])
            payload = base64.b64decode(item["payload"])
            try:
                body = payload.decode()
            except UnicodeDecodeError:
                # Bodies are text: binary goes as base64, marked so.
                body = base64.b64encode(payload).decode()
                attrs["transport-encoding"] = "base64"
            if item.get("key") is not None:
                attrs["transport-key"] = item["key"]
            if item.get("id") is not None:
                attrs["transport-id"] = item["id"]
        sns.publish(
            TopicArn=arn,
            Message=body,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()},
        )


def sqs_consume(spec):
    sqs = aws(spec, "sqs")
    queue = sqs.get_queue_url(QueueName=f"{spec['topic']}_s{spec['group']}")["QueueUrl"]
    out = []
    deadline = time.time() + spec["timeout_s"]
    while len(out) < spec["count"] and time.time() < deadline:
        r = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"])
        for m in r.get("Messages", []):
            attrs = {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}
            body = m["Body"].encode()
            encoding = attrs.get("transport-encoding")
            payload = b"" if encoding == "empty" else base64.b64decode(body) if encoding == "base64" else body
            # Every header, in the HTTP binding's form, is in transport-headers;
            # the other attributes repeat as many as fit.
            headers = json.loads(attrs["transport-headers"]) if "transport-headers" in attrs else {}
            item = {"id": attrs.get("transport-id"), "key": attrs.get("transport-key"), "headers": headers, "payload": b64(payload)}
            if is_event(headers):
                item["event"] = event_report(ce_http.from_binary(ce_http.HTTPMessage(headers, payload), FORMAT))
            out.append(item)
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    return out


# ---------------------------------------------------------------- Kafka


def kafka_config(spec):
    return {"bootstrap.servers": urlparse(spec["url"]).netloc}


def kafka_produce(spec):
    from confluent_kafka import Producer

    # The library's partitioner, so that a key lands where the library puts it.
    p = Producer({**kafka_config(spec), "partitioner": "murmur2_random", "enable.idempotence": True})
    for item in spec["items"]:
        if "event" in item:
            msg = ce_kafka.to_binary(sdk_event(item["event"]), FORMAT)
            p.produce(spec["topic"], value=msg.value, key=msg.key, headers=list(msg.headers.items()))
        else:
            headers = [(k, v.encode()) for k, v in item["headers"].items()]
            if item.get("id") is not None:
                headers.append(("transport-id", item["id"].encode()))
            value = None if item.get("tombstone") else base64.b64decode(item["payload"])
            p.produce(spec["topic"], value=value, key=item.get("key"), headers=headers)
    if p.flush(30) != 0:
        raise SystemExit("kafka: messages not delivered within 30 s")


def kafka_consume(spec):
    from confluent_kafka import Consumer

    c = Consumer(
        {
            **kafka_config(spec),
            "group.id": "peer-" + uuid.uuid4().hex[:8],
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([spec["topic"]])
    out = []
    deadline = time.time() + spec["timeout_s"]
    while len(out) < spec["count"] and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        headers = {k: (v or b"").decode() for k, v in (m.headers() or [])}
        key = m.key().decode() if m.key() is not None else None
        item = {"id": headers.pop("transport-id", None), "key": key, "headers": dict(headers), "payload": b64(m.value())}
        if m.value() is None:
            item["tombstone"] = True
        if is_event(headers, "ce_"):
            raw = ce_kafka.KafkaMessage(headers={k: v.encode() for k, v in headers.items()}, key=m.key(), value=m.value())
            item["event"] = event_report(ce_kafka.from_binary(raw, FORMAT))
        out.append(item)
    c.close()
    return out


# ------------------------------------------- What only foreign clients send
#
# `produce_awkward`: values this library never writes itself, in each
# broker's own types, each message with an `x-case` header. The library
# side (interop.rs, `awkward_from_foreign_producer`) checks the text form
# each backend's docs.md promises for them.


def pika_with_doubles():
    # pika cannot encode a float header (amqplib and the Java client send
    # them as AMQP doubles, type `d`): teach it that one type, as they do.
    import struct

    import pika.data

    if getattr(pika.data, "_doubles", False):
        return
    plain = pika.data.encode_value

    def encode_value(pieces, value):
        if isinstance(value, float):
            pieces.append(struct.pack(">cd", b"d", value))
            return 9
        return plain(pieces, value)

    pika.data.encode_value = encode_value
    pika.data._doubles = True


def rabbitmq_produce_awkward(spec):
    from decimal import Decimal

    import pika

    pika_with_doubles()

    conn, ch = rabbit_channel(spec)
    ch.confirm_delivery()
    for case in ("typed-1", "typed-2"):
        # No message_id (pika's and amqplib's default) and typed header values.
        headers = {
            "x-case": case,
            "x-float": 1.5,
            "x-int": 7,
            "x-bool": True,
            "x-bytes": b"\xff\x00",
            "x-decimal": Decimal("123.45"),
            "x-array": [1, "a"],
            "x-table": {"n": 2},
        }
        ch.basic_publish(
            exchange=spec["topic"],
            routing_key=spec["topic"],
            body=b"typed",
            properties=pika.BasicProperties(headers=headers, delivery_mode=2),
            mandatory=True,
        )
    conn.close()


def redis_produce_awkward(spec):
    r = redis_client(spec)
    r.xadd(spec["topic"], {"payload": b"binary header", "x-case": "binary", "x-bin": b"\xff\x00", "key": b"\xfe"})


def kafka_produce_awkward(spec):
    from confluent_kafka import Producer

    p = Producer({**kafka_config(spec), "partitioner": "murmur2_random"})
    headers = [("x-case", b"binary"), ("x-bin", b"\xff\x00"), ("x-rep", b"a"), ("x-rep", b"b,c")]
    p.produce(spec["topic"], value=b"binary header", key=b"\xfe", headers=headers)
    if p.flush(30) != 0:
        raise SystemExit("kafka: messages not delivered within 30 s")


def sqs_produce_awkward(spec):
    # Straight into the group's queue: moto's SNS fan-out turns a Binary
    # attribute into a string and then fails every receive of that queue
    # (moto/sqs/models.py update_binary_length_and_value), which SNS itself
    # does not do.
    sqs = aws(spec, "sqs")
    queue = sqs.get_queue_url(QueueName=f"{spec['topic']}_s{spec['group']}")["QueueUrl"]
    sqs.send_message(
        QueueUrl=queue,
        MessageBody="binary header",
        MessageAttributes={
            "x-case": {"DataType": "String", "StringValue": "binary"},
            "x-bin": {"DataType": "Binary", "BinaryValue": b"\xff\x00"},
            "x-num": {"DataType": "Number", "StringValue": "12.5"},
        },
    )


def kafka_hold_group(spec):
    # A foreign member of the library's consumer group (`<topic>.<group>`),
    # offering spec["strategy"]: prints {"joined": [...]} once it has its
    # assignment, then stays in the group for spec["hold_s"] seconds.
    from confluent_kafka import Consumer

    assigned = []
    c = Consumer(
        {
            **kafka_config(spec),
            "group.id": f"{spec['topic']}.{spec['group']}",
            "partition.assignment.strategy": spec["strategy"],
            "session.timeout.ms": 6000,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([spec["topic"]], on_assign=lambda _c, parts: assigned.extend(p.partition for p in parts))
    deadline = time.time() + 60
    while not assigned and time.time() < deadline:
        c.poll(0.2)
    print(json.dumps({"joined": sorted(assigned)}), flush=True)
    end = time.time() + spec["hold_s"]
    while time.time() < end:
        c.poll(0.2)
    c.close()
    return None


def main():
    command = sys.argv[1]
    spec = json.load(sys.stdin)
    broker = spec["broker"]
    fn = globals()[f"{broker}_{command}"]
    result = fn(spec)
    if command != "hold_group":
        json.dump(result if result is not None else [], sys.stdout)


if __name__ == "__main__":
    main()
