"""A download-and-delete client, the way most POP3 users work: poplib logs
in, checks STAT and LIST, RETRs every message and compares it byte for byte
with what was stored, DELEs it, QUITs, and checks the maildrop is empty on
the next login. poplib sends one command at a time (no pipelining)."""

import poplib
from pop3_test_support import (
    check, connect, describe_difference, fail, joined, settings, wire_form,
)

host, port, user, password, expected = settings()

pop = connect(host, port)
check(pop.getwelcome().startswith(b"+OK"), "greeting %r" % pop.getwelcome())
pop.user(user)
pop.pass_(password)

count, octets = pop.stat()
check(count == len(expected), "STAT count %d, expected %d" % (count, len(expected)))
total = sum(len(wire_form(m)) for m in expected)
check(octets == total, "STAT octets %d, expected %d" % (octets, total))

_, listing, _ = pop.list()
sizes = {}
for entry in listing:
    n, size = entry.split()
    sizes[int(n)] = int(size)
check(sorted(sizes) == list(range(1, count + 1)), "LIST numbers %r" % sorted(sizes))

for n in range(1, count + 1):
    want = wire_form(expected[n - 1])
    _, lines, size = pop.retr(n)
    got = joined(lines)
    if got != want:
        fail("RETR %d: %s" % (n, describe_difference(got, want)))
    # poplib's octet count: the un-stuffed lines plus CRLF each.
    check(size == sizes[n], "RETR %d delivered %d octets, LIST said %d" % (n, size, sizes[n]))
    pop.dele(n)
    print("message %d: %d octets match" % (n, size))

bye = pop.quit()
check(bye.startswith(b"+OK"), "QUIT got %r" % bye)

pop = connect(host, port)
pop.user(user)
pop.pass_(password)
count, octets = pop.stat()
check((count, octets) == (0, 0), "after DELE and QUIT, STAT says %d %d" % (count, octets))
pop.quit()
print("download and delete: OK")
