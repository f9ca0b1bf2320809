"""Shared helpers for the Python poplib client scripts.

The Rust test (tests/e2e_clients.rs) starts pop3d and runs a script with:

    POP3_HOST, POP3_PORT    where the server listens
    POP3_USER               the user to log in as
    POP3_PASSWORD           its password (in the environment, never on the
                            command line, so no test output shows it)
    POP3_EXPECT_DIR         a directory holding files named 1, 2, 3, ...:
                            the raw bytes of each stored message, in
                            message-number order

A script prints what it checked and exits 0, or prints the first mismatch
to stderr and exits 1.
"""

import os
import poplib
import sys

# poplib refuses lines longer than 2048 octets by default; RFC 1939 sets no
# limit on message lines, and the fixtures include longer ones on purpose.
poplib._MAXLINE = 1 << 20


def settings():
    """Connection settings and expected messages from the environment."""
    expect_dir = os.environ["POP3_EXPECT_DIR"]
    names = sorted(os.listdir(expect_dir), key=int)
    expected = []
    for name in names:
        with open(os.path.join(expect_dir, name), "rb") as f:
            expected.append(f.read())
    return (
        os.environ["POP3_HOST"],
        int(os.environ["POP3_PORT"]),
        os.environ["POP3_USER"],
        os.environ["POP3_PASSWORD"],
        expected,
    )


def wire_form(raw):
    """The message as the server must transmit it, before dot-stuffing:
    bare LF becomes CRLF, and a CRLF ends a last line that had none."""
    out = bytearray()
    previous = b""
    for i in range(len(raw)):
        b = raw[i:i + 1]
        if b == b"\n" and previous != b"\r":
            out += b"\r"
        out += b
        previous = b
    if raw and not raw.endswith(b"\n"):
        out += b"\r\n"
    return bytes(out)


def top_of(raw, k):
    """What TOP n k must deliver (wire form): headers, blank line, k lines."""
    wire = wire_form(raw)
    if wire.startswith(b"\r\n"):
        header_end = 2
    else:
        i = wire.find(b"\r\n\r\n")
        if i < 0:
            return wire
        header_end = i + 4
    body_lines = wire[header_end:].split(b"\r\n")[:-1]
    return wire[:header_end] + b"".join(l + b"\r\n" for l in body_lines[:k])


def joined(lines):
    """poplib's list of lines (CRLF removed, un-stuffed) back into bytes."""
    return b"".join(line + b"\r\n" for line in lines)


def connect(host, port):
    return poplib.POP3(host, port, timeout=30)


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def describe_difference(got, expected):
    at = next(
        (i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
        min(len(got), len(expected)),
    )
    return "lengths got %d expected %d, first difference at %d: got %r expected %r" % (
        len(got),
        len(expected),
        at,
        got[max(0, at - 30):at + 30],
        expected[max(0, at - 30):at + 30],
    )
