"""Read projections for `promote status/history/audit`, updated from each event (rebuildable by replay)."""

import json

import asyncpg

from shared.contracts.events import (ArtifactRegistered, ArtifactTagMoved, DriftDetected, DriftResolved,
                                     EnvironmentPruned, Event, GateFailed, GatePassed, GatePending, PipelineApplied)
from shared.contracts.pipeline import PipelineDefinition
from shared.contracts.states import environment_state

Statement = tuple[str, str, tuple]
"""(table, SQL, arguments): one change to one projection table."""


def statements(event: Event) -> list[Statement]:
    """The projection changes one event makes, in order (pure: the live ledger executes them one by one,
    a rebuild batches runs of one statement per table)."""
    data = event.data
    out: list[Statement] = []
    match data:
        case PipelineApplied():
            names = [environment["name"] for environment in data.definition.get("environments", [])]
            out.append(("pipelines",
                        "insert into pipelines (service, pipeline_version, environments, graph) "
                        "values ($1, $2, $3::jsonb, $4::jsonb) "
                        "on conflict (service) do update set pipeline_version = excluded.pipeline_version, "
                        "environments = excluded.environments, graph = excluded.graph",
                        (data.service, data.pipeline_version, json.dumps(names),
                         json.dumps(PipelineDefinition.model_validate(data.definition).graph()))))
        case ArtifactRegistered():
            out.append(("artifacts",
                        "insert into artifacts (service, version, digest, author, tag) values ($1, $2, $3, $4, $5) "
                        "on conflict do nothing",
                        (data.service, data.version, data.digest, data.author, data.tag)))
        case ArtifactTagMoved():
            out.append(("artifacts", "update artifacts set tag_moved_to = $3 where service = $1 and version = $2",
                        (data.service, data.version, data.moved_to)))
        case GatePending() | GateFailed():
            outcome = "pending" if isinstance(data, GatePending) else "failed"
            out.append(("waiting",
                        "insert into waiting (service, env, version, digest, outcome, reasons) "
                        "values ($1, $2, $3, $4, $5, $6::jsonb) on conflict (service, env, version) "
                        "do update set outcome = excluded.outcome, reasons = excluded.reasons",
                        (data.service, data.env, data.version, data.digest, outcome, json.dumps(data.reasons))))
        case GatePassed():
            out.append(("waiting", "delete from waiting where service = $1 and env = $2 and version = $3",
                        (data.service, data.env, data.version)))
        case EnvironmentPruned():  # the environment is gone: status no longer lists it. (Its `waiting` rows stay:
            # that table is fed by promotion.gates only, which is what keeps a rebuild equal to the live state.)
            out.append(("environments", "delete from environments where service = $1 and env = $2",
                        (data.service, data.env)))
        case DriftDetected():  # status shows it drifted, with what differs, until drift.resolved
            drift = {"differences": data.differences, "detected_at": event.envelope.time.isoformat(),
                     "drift_id": event.id, "slot": data.slot, "on_drift": data.on_drift}
            out.append(("environments", "update environments set state = 'drifted', drift = $3::jsonb "
                                        "where service = $1 and env = $2", (data.service, data.env, json.dumps(drift))))
        case DriftResolved():  # a deployment that resolved it has set the state already
            out.append(("environments", "update environments set drift = null, state = case when state = 'drifted' "
                                        "then 'verified' else state end where service = $1 and env = $2",
                        (data.service, data.env)))
    state = environment_state(data)  # "deploying", "canary 2/4 at 25%", "verified", … (shared.contracts.states)
    if state is not None:
        out.append(("environments",
                    "insert into environments (service, env, version, digest, config_version, state, updated_at) "
                    "values ($1, $2, $3, $4, $5, $6, $7) on conflict (service, env) do update set "
                    "version = excluded.version, digest = excluded.digest, "
                    "config_version = excluded.config_version, state = excluded.state, "
                    "updated_at = excluded.updated_at",
                    (data.service, data.env, data.version, data.digest, data.config_version, state,
                     event.envelope.time)))
    return out


async def apply(conn: asyncpg.Connection, event: Event) -> None:
    """Fold one event into the projections."""
    for _table, sql, args in statements(event):
        await conn.execute(sql, *args)
