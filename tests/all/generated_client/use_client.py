"""Create, list, show and import tickets, export and verify a trail, through a client
openapi-python-client generated from itsm's /v1/openapi.json, using only its
typed models.

Usage: use_client.py BASE_URL TOKEN  (the generated package `itsm_client`
must be importable). Prints one line per check; exits non-zero on the first
that fails.
"""

import io
import sys

from itsm_client import AuthenticatedClient
from itsm_client.api.audit import export, verify
from itsm_client.api.service import me
from itsm_client.api.tickets import create, import_, list_, show
from itsm_client.models import (
    AllChains,
    AuditEvent,
    AuditExport,
    AuditKind,
    ChainCheck,
    ErrorBody,
    ImportReport,
    Me,
    NewTicket,
    Ticket,
    TicketList,
    TicketState,
    TicketSummary,
    TicketView,
    Trailer,
)
from itsm_client.types import File


def check(what, ok):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        sys.exit(1)


def main():
    base, token = sys.argv[1], sys.argv[2]
    client = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)

    who = me.sync(client=client)
    check("me is a typed Me", isinstance(who, Me))
    check("me names the token's principal", who.name == "generated-client")
    check("me lists its roles", "operator" in who.roles)

    created = []
    for subject in ["user1@example.com", "user2@example.com"]:
        t = create.sync(client=client, body=NewTicket(workflow="sandbox-offboarding", subject=subject))
        check(f"create {subject} answers a typed Ticket", isinstance(t, Ticket))
        check(f"its subject is {subject}", t.subject == subject)
        check("its id is a ticket id", t.id.startswith("T-"))
        check("its state is a TicketState", isinstance(t.state, TicketState))
        check("its workflow is sandbox-offboarding", t.workflow == "sandbox-offboarding")
        created.append(t.id)

    # A second open ticket for the same person is refused: a typed ErrorBody.
    # (The approval workflow keeps the first one open until someone decides.)
    held = create.sync(
        client=client, body=NewTicket(workflow="sandbox-approved-offboarding", subject="user3@example.com")
    )
    refused = create.sync_detailed(
        client=AuthenticatedClient(base_url=base, token=token),
        body=NewTicket(workflow="sandbox-approved-offboarding", subject="user3@example.com"),
    )
    check("a duplicate answers 409", refused.status_code == 409)
    check("with a typed ErrorBody", isinstance(refused.parsed, ErrorBody))
    check("that names the open ticket", held.id in refused.parsed.error)

    page = list_.sync(client=client, workflow="sandbox-offboarding")
    check("list answers a typed TicketList", isinstance(page, TicketList))
    check("total counts both tickets", page.total == 2)
    check("items are TicketSummary", all(isinstance(s, TicketSummary) for s in page.tickets))
    check("the list holds the created ids", sorted(s.id for s in page.tickets) == sorted(created))

    view = show.sync(client=client, id=created[0])
    check("show answers a typed TicketView", isinstance(view, TicketView))
    check("its ticket is a Ticket", isinstance(view.ticket, Ticket))
    check("it is the one asked for", view.ticket.id == created[0])
    check("its trail verifies", view.trail_verified is True)
    check("its trail has events", len(view.trail) >= 1)
    check("each a typed AuditEvent", all(isinstance(e, AuditEvent) for e in view.trail))
    check("the first is a typed `created` AuditKind", view.trail[0].kind == AuditKind.CREATED)
    check("the pinned steps are named", len(view.workflow_steps) >= 1 and all(s.name for s in view.workflow_steps))

    exported = export.sync(client=client, ticket=created[0])
    check("export answers a typed AuditExport", isinstance(exported, AuditExport))
    check("with a typed Trailer", isinstance(exported.trailer, Trailer))
    check("that counts its events", exported.trailer.events == len(exported.events) >= 1)
    check("and names the ticket", exported.trailer.ticket == created[0])
    check("its last event is the trailer's head", exported.events[-1].hash_ == exported.trailer.head)

    one = verify.sync(client=client, ticket=created[0])
    check("verify of one ticket answers a typed ChainCheck", isinstance(one, ChainCheck))
    check("that verifies", one.verified is True and one.ticket == created[0])
    every = verify.sync(client=client)
    check("verify of all answers a typed AllChains", isinstance(every, AllChains))
    check("that checked the system trail and each ticket", every.checked >= 4 and every.verified is True)

    # A file of leavers, sent as bytes: one ticket per row, a repeated row named.
    rows = b"subject\nuser4@example.com\nuser5@example.com\nuser4@example.com\n"
    report = import_.sync(
        client=client, workflow="sandbox-offboarding", body=File(payload=io.BytesIO(rows), file_name="leavers.csv")
    )
    check("import answers a typed ImportReport", isinstance(report, ImportReport))
    check("it created a ticket per good row", report.created == 2 and len(report.tickets) == 2)
    check("it names the bad row", len(report.errors) == 1 and report.errors[0].row == 3)
    check("its batch is a batch id", report.batch.startswith("B-"))

    missing = show.sync_detailed(client=AuthenticatedClient(base_url=base, token=token), id="T-nope")
    check("an unknown id answers 404", missing.status_code == 404)
    check("with a typed ErrorBody", isinstance(missing.parsed, ErrorBody))
    print("all checks passed")


if __name__ == "__main__":
    main()
