"""What an environment's state is after a deployment event: one rule for the ledger's projection (what
`promote status` and the console's grid read) and the API's live feed (what the console's cells change to)."""

from shared.contracts.events import (DeploymentFailed, DeploymentProgressed, DeploymentStarted, DeploymentSucceeded,
                                     EventData, VerificationFailed, VerificationPassed)

DEPLOYMENT_STATES = {
    DeploymentStarted: "deploying",
    DeploymentProgressed: "canary",
    DeploymentSucceeded: "deployed",
    DeploymentFailed: "failed",
    VerificationPassed: "verified",
    VerificationFailed: "failed",
}


def environment_state(data: EventData) -> str | None:
    """The state a deployment event leaves its environment in ("deploying", "rolling-back", "restoring",
    "canary 2/4 at 25%", "canary paused at 25%", "deployed", "verified", "failed"); None for other events."""
    state = DEPLOYMENT_STATES.get(type(data))
    if state is None:
        return None
    if state == "deploying" and data.purpose in ("rollback", "restore"):
        return "rolling-back" if data.purpose == "rollback" else "restoring"
    if isinstance(data, DeploymentProgressed):
        return f"canary paused at {data.share}%" if data.state == "paused" else \
            f"canary {data.step}/{data.steps} at {data.share}%"
    return state
