"""What both ends of the local socket share: the run file and who is at the other end."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from proxy.config.runinfo import peer_uid, uid_from_peercred, uid_from_xucred

# struct xucred as macOS (sys/ucred.h: 16 groups) and FreeBSD 13+ (a pid after them)
# lay it out: u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]
APPLE_XUCRED = "@IIh16I"
FREEBSD_XUCRED = "@IIh16IP"


def xucred(uid: int, *, version: int = 0, groups: tuple[int, ...] = (20, 12, 61)) -> bytes:
    padded = (*groups, *(0,) * (16 - len(groups)))
    return struct.pack(APPLE_XUCRED, version, uid, len(groups), *padded)


def test_the_peer_of_a_unix_socket_is_this_user() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_uid(left) == os.getuid()
        assert peer_uid(right) == os.getuid()


def test_the_uid_in_an_xucred_is_read_as_macos_and_freebsd_lay_it_out() -> None:
    assert struct.calcsize(APPLE_XUCRED) == 76  # what macOS's getsockopt gives back
    assert uid_from_xucred(xucred(501)) == 501
    assert uid_from_xucred(xucred(2**32 - 2)) == 2**32 - 2  # uid_t is unsigned
    freebsd = struct.pack(FREEBSD_XUCRED, 0, 1001, 1, 1001, *(0,) * 15, 4242)
    assert uid_from_xucred(freebsd) == 1001


@pytest.mark.parametrize(
    "creds",
    [
        xucred(501, version=1),  # a layout this does not know
        xucred(501)[:40],  # cut short
        b"",
        struct.pack(APPLE_XUCRED, 0, 501, 17, *(0,) * 16),  # more groups than there is room for
        struct.pack(APPLE_XUCRED, 0, 501, -1, *(0,) * 16),
    ],
    ids=["other-version", "short", "empty", "17-groups", "negative-groups"],
)
def test_an_xucred_this_cannot_read_says_nothing_rather_than_a_wrong_uid(creds: bytes) -> None:
    assert uid_from_xucred(creds) is None


def test_so_peercred_is_read_as_linux_and_openbsd_lay_it_out() -> None:
    assert uid_from_peercred(struct.pack("@iII", 4242, 1000, 100), "linux") == 1000
    # OpenBSD's struct sockpeercred puts the uid first: uid, gid, pid
    assert uid_from_peercred(struct.pack("@IIi", 1000, 100, 4242), "openbsd7") == 1000
