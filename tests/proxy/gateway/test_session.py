"""A session's scrub: no secret value an upstream of the session was started with reaches
its client or the log, however often it appears."""

from __future__ import annotations

from proxy.config.servers import StdioServer
from proxy.gateway.session import Session


def test_scrub_replaces_every_secret_of_the_session() -> None:
    session = Session(
        id="s",
        server="gh",
        client="agent",
        connection=None,  # type: ignore[arg-type]  # scrub needs no connection
        spec=StdioServer("gh", "server-gh"),
    )
    session.secrets |= {"ghp_1", "", "tok-2"}
    assert session.scrub("ghp_1 then tok-2 and ghp_1 again") == (
        "[secret] then [secret] and [secret] again"
    )
    assert session.scrub("nothing secret") == "nothing secret"
