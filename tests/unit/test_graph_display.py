"""The pipeline's graph as status and audit show it: PipelineDefinition.graph (what the ledger keeps) and its
one-line rendering (cli/render.graph_text), for a line, a fan-out and its join, and branches that go on alone."""

import json

import pytest

from cli.render import graph_text
from services.ledger.projection import statements
from shared.contracts.events import PipelineApplied, new_event
from shared.contracts.pipeline import parse_pipeline

LINE = parse_pipeline("service: s\nenvironments: [{name: dev}, {name: test}, {name: staging}, {name: prod}]\n")
FANNED = parse_pipeline("""\
service: s
environments:
  - {name: staging}
  - {name: prod-eu, after: [staging]}
  - {name: prod-us, after: [staging]}
  - {name: eu-late, after: [prod-eu]}
  - {name: us-late, after: [prod-us]}
  - {name: global, after: [eu-late, us-late], require: any}
""")


def test_a_line_is_each_environment_after_the_one_before():
    assert LINE.graph() == [{"name": "dev", "after": [], "require": "all"},
                            {"name": "test", "after": ["dev"], "require": "all"},
                            {"name": "staging", "after": ["test"], "require": "all"},
                            {"name": "prod", "after": ["staging"], "require": "all"}]
    assert graph_text(LINE.graph()) == "dev → test → staging → prod"


@pytest.mark.parametrize(("marks", "shown"), [
    pytest.param(None, "staging → prod-eu | prod-us → eu-late (after prod-eu) | us-late (after prod-us) → "
                 "global (after any of eu-late, us-late)", id="branches say whom they follow, the join whether all"),
    pytest.param({"staging": " ✓", "prod-eu": " ✓"}, "staging ✓ → prod-eu ✓ | prod-us → eu-late (after prod-eu) | "
                 "us-late (after prod-us) → global (after any of eu-late, us-late)", id="marks follow the names"),
])
def test_a_fan_out_shows_its_sides_side_by_side(marks, shown):
    assert graph_text(FANNED.graph(), marks) == shown


def test_the_ledger_keeps_the_graph_a_pipeline_was_applied_with():
    definition = json.loads(FANNED.model_dump_json())
    data = PipelineApplied(service="s", pipeline_version="sha256:" + "b" * 64, definition=definition,
                           applied_by="ops")
    [(table, sql, arguments)] = statements(new_event(data, source="/promote/cli"))
    assert table == "pipelines" and "graph" in sql
    assert json.loads(arguments[3]) == FANNED.graph()
    assert json.loads(arguments[2]) == [environment["name"] for environment in FANNED.graph()]
