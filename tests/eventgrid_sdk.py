"""Cross-check of streamfold's notifications with the official Azure SDK for Python.

Usage: python eventgrid_sdk.py EVENTS.json

EVENTS.json is {"eventGridEvents": [...], "cloudEvents": [...]}: events exactly as streamfold
published them. Each Event Grid schema event is parsed with azure.eventgrid.EventGridEvent
(and validated by the SDK's own model rules); each CloudEvent with azure.core.messaging.CloudEvent,
the class azure-eventgrid uses for CloudEvents 1.0. Then the parsed objects are checked against
what streamfold promises (types, timestamps, data fields). Exits 1 with a message on the first
mismatch, else prints one summary line.
"""

import datetime as dt
import json
import sys

from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

DATA_FIELDS = {
    "notificationKind": str,
    "domain": str,
    "entity": str,
    "instance": str,
    "instanceKey": str,
    "sequenceNumber": int,
    "eventType": str,
    "eventId": str,
    "timestamp": str,
}
OPTIONAL_STRING_FIELDS = ("correlationId", "causationId")


def fail(message):
    print(f"eventgrid_sdk.py: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def check_time(value, what):
    check(isinstance(value, dt.datetime), f"{what}: SDK did not parse a datetime: {value!r}")
    check(value.tzinfo is not None, f"{what}: datetime has no time zone: {value!r}")


def check_data(data, event_type, subject, what):
    check(isinstance(data, dict), f"{what}: data is not an object: {data!r}")
    for field, kind in DATA_FIELDS.items():
        check(isinstance(data.get(field), kind), f"{what}: data.{field} is not {kind.__name__}")
    for field in OPTIONAL_STRING_FIELDS:
        check(field in data, f"{what}: data.{field} is missing")
        check(data[field] is None or isinstance(data[field], str), f"{what}: data.{field} type")
    check(data["instance"] == data["instanceKey"], f"{what}: instance != instanceKey")
    check(
        subject == f"eventsourcing/{data['domain']}/{data['entity']}/{data['instance']}",
        f"{what}: subject {subject!r} does not match the data",
    )
    prefix = f"{data['domain']}.{data['entity']}."
    check(event_type.startswith(prefix), f"{what}: event type {event_type!r} lacks {prefix!r}")
    kind = data["notificationKind"]
    check(kind in ("NewEntity", "NewEvent"), f"{what}: notificationKind {kind!r}")
    if kind == "NewEntity":
        check(event_type == prefix + "NewEntity", f"{what}: NewEntity event type {event_type!r}")
    else:
        check(event_type == prefix + data["eventType"], f"{what}: event type {event_type!r}")
    if data.get("payloadTooLarge"):
        check("payload" not in data, f"{what}: payloadTooLarge with a payload")
        check(
            data.get("payloadRef", "").startswith("/api/streams/"),
            f"{what}: payloadRef {data.get('payloadRef')!r}",
        )
    else:
        check("payload" in data, f"{what}: no payload and no payloadTooLarge")


def check_event_grid_event(raw, index):
    what = f"EventGridEvent {index} ({raw.get('id')})"
    event = EventGridEvent.from_dict(raw)
    # The SDK model's own rules: every attribute it marks required is present.
    for attribute, rules in EventGridEvent._validation.items():  # pylint: disable=protected-access
        if rules.get("required"):
            check(getattr(event, attribute, None) is not None, f"{what}: {attribute} missing")
    extra = getattr(event, "additional_properties", None)
    check(not extra, f"{what}: attributes the SDK does not know: {extra!r}")
    # And the SDK serializes it back to the same envelope.
    again = event.serialize()
    for key in ("id", "subject", "eventType", "dataVersion", "data"):
        check(again.get(key) == raw[key], f"{what}: {key} changed in the SDK round trip")
    check(event.id == raw["id"], f"{what}: id")
    for stamped in ("topic", "metadataVersion"):
        check(stamped not in raw, f"{what}: {stamped} must be left for Event Grid to stamp")
    check(event.data_version == "1.0", f"{what}: dataVersion {event.data_version!r}")
    check_time(event.event_time, what)
    check_data(event.data, event.event_type, event.subject, what)


def check_cloud_event(raw, index):
    what = f"CloudEvent {index} ({raw.get('id')})"
    event = CloudEvent.from_dict(raw)
    check(event.specversion == "1.0", f"{what}: specversion {event.specversion!r}")
    check(event.id == raw["id"], f"{what}: id")
    check(event.source.startswith("/streamfold/"), f"{what}: source {event.source!r}")
    check(event.datacontenttype == "application/json", f"{what}: datacontenttype")
    check(not event.extensions, f"{what}: unexpected extension attributes {event.extensions!r}")
    check_time(event.time, what)
    check_data(event.data, event.type, event.subject, what)
    # The SDK must tell the two schemas apart: this event is not an EventGridEvent.
    try:
        CloudEvent.from_dict({k: v for k, v in raw.items() if k != "source"})
    except ValueError:
        pass
    else:
        fail(f"{what}: SDK accepted a CloudEvent without source")


def main():
    if len(sys.argv) != 2:
        fail("usage: eventgrid_sdk.py EVENTS.json")
    with open(sys.argv[1], encoding="utf-8") as f:
        events = json.load(f)
    eg = events.get("eventGridEvents", [])
    ce = events.get("cloudEvents", [])
    check(eg and ce, "expected events of both schemas")
    for i, raw in enumerate(eg):
        check_event_grid_event(raw, i)
    for i, raw in enumerate(ce):
        check_cloud_event(raw, i)
    print(f"checked {len(eg)} EventGridEvents and {len(ce)} CloudEvents")


if __name__ == "__main__":
    main()
