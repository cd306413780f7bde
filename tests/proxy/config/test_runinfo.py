"""What both ends of the local socket share: the run file and who is at the other end."""

from __future__ import annotations

import os
import socket

from proxy.config.runinfo import peer_uid


def test_the_peer_of_a_unix_socket_is_this_user() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_uid(left) == os.getuid()
        assert peer_uid(right) == os.getuid()
