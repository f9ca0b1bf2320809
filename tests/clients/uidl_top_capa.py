"""poplib's other commands: CAPA before and after login, UIDL (stable across
sessions), TOP with several line counts, NOOP, RSET, and a failed login
reported with the [AUTH] response code. Nothing is deleted."""

import poplib
from pop3_test_support import (
    check, connect, describe_difference, fail, joined, settings, top_of,
)

host, port, user, password, expected = settings()

pop = connect(host, port)
capabilities = pop.capa()
for name in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
    check(name in capabilities, "CAPA before login lacks %s: %r" % (name, capabilities))
check("IMPLEMENTATION" in capabilities, "CAPA lacks IMPLEMENTATION")

pop.user(user)
try:
    pop.pass_(password + "-wrong")
    fail("a wrong password was accepted")
except poplib.error_proto as e:
    check(e.args[0].startswith(b"-ERR [AUTH]"), "failed login said %r" % e.args[0])

pop.user(user)
pop.pass_(password)
check("TOP" in pop.capa(), "CAPA after login lacks TOP")


def uidls(pop):
    _, listing, _ = pop.uidl()
    result = {}
    for entry in listing:
        n, uid = entry.split()
        result[int(n)] = uid
        one = pop.uidl(int(n))
        check(one.split()[1:] == [n, uid], "UIDL %s says %r, listing %r" % (n, one, uid))
    return result


first = uidls(pop)
check(len(first) == len(expected), "UIDL lists %d messages" % len(first))
check(len(set(first.values())) == len(first), "UIDLs not unique: %r" % first)

for n in range(1, len(expected) + 1):
    for k in (0, 1, 3, 1000):
        _, lines, _ = pop.top(n, k)
        got = joined(lines)
        want = top_of(expected[n - 1], k)
        if got != want:
            fail("TOP %d %d: %s" % (n, k, describe_difference(got, want)))

check(pop.noop().startswith(b"+OK"), "NOOP")
pop.dele(1)
pop.rset()
check(pop.stat()[0] == len(expected), "RSET did not undelete")
pop.quit()

pop = connect(host, port)
pop.user(user)
pop.pass_(password)
second = uidls(pop)
check(second == first, "UIDLs changed between sessions: %r vs %r" % (first, second))
check(pop.stat()[0] == len(expected), "messages lost")
pop.quit()
print("uidl, top, capa: OK")
