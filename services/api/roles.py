"""Who may do what, pure: roles per environment, from bindings such as `approver:prod` or `viewer:*`.

Roles rank viewer < promoter < approver < admin; a binding grants its role and every lower one in
its environment (`*`: all of them). Reading needs any binding; a rollback, or a canary's pause, resume
or abort, needs promoter in the environment, an approval, a rejection or a canary's promote-now approver there, and applying a pipeline, resubmitting a
dead letter or managing tokens admin everywhere (`admin:*`).
"""

from dataclasses import dataclass

RANKS = {"viewer": 0, "promoter": 1, "approver": 2, "admin": 3}
ANY_ENV = "*"


class BindingError(ValueError):
    """A role binding that is not `ROLE:ENV` with a known role."""


@dataclass(frozen=True)
class Binding:
    """A role in one environment (or in every one, `*`)."""

    role: str
    env: str

    @classmethod
    def parse(cls, text: str) -> "Binding":
        """`approver:prod` -> Binding("approver", "prod"); a bare role means every environment."""
        role, _, env = text.partition(":")
        if role not in RANKS:
            raise BindingError(f"role binding {text!r}: the role must be one of {', '.join(RANKS)}")
        env = env or ANY_ENV
        if env != ANY_ENV and not env.replace("-", "").isalnum():
            raise BindingError(f"role binding {text!r}: the environment must be a name or *")
        return cls(role, env)

    def __str__(self) -> str:
        return f"{self.role}:{self.env}"


def has_role(bindings: frozenset[Binding], role: str, env: str = ANY_ENV) -> bool:
    """Whether `bindings` grant `role` (or a higher one) in `env` (ANY_ENV: in every environment)."""
    wanted = RANKS[role]
    return any(RANKS[b.role] >= wanted and (b.env == ANY_ENV or b.env == env) for b in bindings)


def refusal(bindings: frozenset[Binding], role: str, env: str = ANY_ENV) -> str | None:
    """Why `bindings` may not act as `role` in `env`, in one line; None when they may."""
    if has_role(bindings, role, env):
        return None
    where = "in every environment" if env == ANY_ENV else f"in {env}"
    held = ", ".join(sorted(map(str, bindings))) or "none"
    return f"this needs the {role} role {where} (your roles: {held})"
