"""The docs describe what exists: every topic and event is catalogued, examples parse, AsyncAPI is current."""

import json
import re
from pathlib import Path

import pytest

from cli import asyncapi
from shared.contracts import topics
from shared.contracts.events import EVENT_TYPES, parse_event
from shared.contracts.kafka_binding import parse_kafka_event

DOCS = Path(__file__).resolve().parents[2] / "docs"
CATALOGUE = (DOCS / "events.md").read_text()


def test_the_event_catalogue_names_every_topic_and_every_event_type():
    missing_topics = [t.name for t in topics.ALL_TOPICS if f"`{t.name}`" not in CATALOGUE]
    missing_types = [kind for kind in EVENT_TYPES if f"### `{kind}`" not in CATALOGUE]
    assert (missing_topics, missing_types) == ([], [])


def test_every_example_in_the_event_catalogue_is_a_valid_event_on_its_topic():
    examples = re.findall(r"```json\n(.*?)\n```", CATALOGUE, flags=re.S)
    assert len(examples) == len(EVENT_TYPES)
    for text in examples:
        event = parse_event(text.encode())
        assert event.envelope.type in EVENT_TYPES


def test_the_binary_mode_example_is_the_build_completed_example_in_the_other_content_mode():
    [example] = re.findall(r"```text\nkey: (.*?)\nheaders:\n(.*?)\nvalue:\n  (.*?)\n```", CATALOGUE, flags=re.S)
    key, header_lines, value = example
    headers = [tuple(line.strip().split(": ", 1)) for line in header_lines.splitlines()]
    structured = next(text for text in re.findall(r"```json\n(.*?)\n```", CATALOGUE, flags=re.S)
                      if '"type": "build.completed"' in text)
    event = parse_kafka_event([(name, text.encode()) for name, text in headers], value.encode(), topics.BUILDS,
                              key=key.encode())
    assert event == parse_event(structured.encode())
    assert [name for name, _ in headers if name.startswith("ce_")] == [
        f"ce_{name}" for name in ("specversion", "id", "source", "type", "time", "subject", "correlationid")]


@pytest.mark.parametrize("service", asyncapi.SERVICE_NAMES)
def test_the_committed_asyncapi_document_matches_the_service_app(service):
    committed = (DOCS / "asyncapi" / f"{service}.json").read_text()
    assert json.loads(committed) == json.loads(asyncapi.documents()[service]), "run: promote asyncapi"


def _table_row(service: str) -> list[str]:
    """The cells of `service`'s row in architecture.md's table of what each service consumes and emits."""
    architecture = (DOCS / "architecture.md").read_text()
    [row] = [line for line in architecture.splitlines() if line.startswith(f"| {service} | ")]
    return [cell.strip() for cell in row.strip("|").split("|")]


def _documented_types(cell: str) -> set[str]:
    """`deployment.started/succeeded/failed`, `gate.passed` -> each event type it names."""
    found = set()
    for name in re.findall(r"`([a-z_.]+(?:/[a-z_]+)*)`", cell):
        kind, _, rest = name.partition(".")
        first, *others = rest.split("/")
        found |= {f"{kind}.{first}"} | {f"{kind}.{other}" for other in others}
    return found


@pytest.mark.parametrize("service", asyncapi.SERVICE_NAMES)
def test_the_architecture_table_lists_what_each_service_app_consumes_and_emits(service):
    spec = json.loads(asyncapi.documents()[service])
    channels = {name: channel["address"] for name, channel in spec["channels"].items()}
    operations = spec["operations"].values()
    consumed = {channels[op["channel"]["$ref"].rsplit("/", 1)[1]] for op in operations if op["action"] == "receive"}
    emitted = {channels[op["channel"]["$ref"].rsplit("/", 1)[1]] for op in operations if op["action"] == "send"}
    emitted_types = {name.split(":", 1)[1] for name in spec["channels"] if ":consume:" not in name}
    assert emitted <= {t.name for t in topics.ALL_TOPICS}
    _, topics_cell, _, emits_cell = _table_row(service)
    if topics_cell == "every topic but `promotion.dlq`":
        documented_topics = {t.name for t in topics.ALL_TOPICS} - {topics.DLQ}
    else:
        documented_topics = {f"promotion.{name.strip()}" for name in topics_cell.split(",")}
    assert documented_topics == consumed, "docs/architecture.md: the topics this service consumes"
    assert _documented_types(emits_cell) == emitted_types, "docs/architecture.md: the events this service emits"
