"""The trust table's ACLs set through the Kafka protocol from Python, for a broker without a JDK beside it.

devstack/KafkaAccess.java does this (and the SCRAM users) for ./dev-stack; compose.yaml's broker image has a
JRE only, which cannot run a Java source file, so the compose stack's init job uses this instead. Its users
were created when the broker's storage was formatted (--add-scram), so only the ACLs are set here, with the
same rule: the table is the whole truth, ACLs it does not list are deleted. aiokafka has the protocol
messages (CreateAcls, DescribeAcls, DeleteAcls v1) but no admin call for them.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import (CreateAclsRequest_v1, DeleteAclsRequest_v1, DescribeAclsRequest_v1)
from aiokafka.protocol.api import Request

from devstack import access

ANY, LITERAL, ALLOW = 1, 3, 3
RESOURCE_TYPES = {"TOPIC": 2, "GROUP": 3}
OPERATIONS = {"READ": 3, "WRITE": 4, "DESCRIBE": 8}

Binding = tuple[int, str, int, str, str, int, int]
"""(resource type, name, pattern type, principal, host, operation, permission), as the protocol carries it."""


class _Describe(Request[DescribeAclsRequest_v1]):
    API_KEY = 29

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(ANY, None, ANY, None, None, ANY, ANY)


class _Create(Request[CreateAclsRequest_v1]):
    API_KEY = 30

    def __init__(self, bindings: list[Binding]) -> None:
        self.bindings = bindings

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self.bindings)


class _Delete(Request[DeleteAclsRequest_v1]):
    API_KEY = 31

    def __init__(self, bindings: list[Binding]) -> None:
        self.bindings = bindings

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self.bindings)


class AclError(Exception):
    """The broker refused to list, create or delete ACLs (the message has its error code and reason)."""


def wanted() -> set[Binding]:
    """The trust table's ACLs (devstack/access.py acl_lines) as protocol bindings."""
    bindings = set()
    for line in access.acl_lines():
        _, principal, kind, name, operation = line.split("\t")
        bindings.add((RESOURCE_TYPES[kind], name, LITERAL, f"User:{principal}", "*", OPERATIONS[operation], ALLOW))
    return bindings


async def sync(admin: AIOKafkaAdminClient) -> tuple[int, int, int]:
    """Bring the broker's ACLs to the table; (wanted, added, removed)."""
    client = admin._client  # noqa: SLF001 - aiokafka has no public call for these requests
    node = client.get_random_node()
    described = await client.send(node, _Describe())
    _check(described.error_code, described.error_message, "listing ACLs")
    present = {(kind, name, pattern, principal, host, operation, permission)
               for kind, name, pattern, acls in described.resources
               for principal, host, operation, permission in acls}
    want = wanted()
    stale, missing = sorted(present - want), sorted(want - present)
    if stale:
        deleted = await client.send(node, _Delete(stale))
        for error_code, error_message, _matching in deleted.filter_responses:
            _check(error_code, error_message, "deleting ACLs")
    if missing:
        created = await client.send(node, _Create(missing))
        for error_code, error_message in created.creation_responses:
            _check(error_code, error_message, "creating ACLs")
    return len(want), len(missing), len(stale)


def _check(error_code: int, error_message: str | None, what: str) -> None:
    if error_code != 0:
        raise AclError(f"kafka: {what} failed: error {error_code} {error_message or ''}".rstrip())
