"""Test-only: a Python started with this folder on PYTHONPATH can open no network connection.

Python imports ``sitecustomize`` at start-up, before any project or library code, so every later
attempt is caught: resolving a name (``getaddrinfo``), connecting an internet socket (TCP or UDP) or
sending to an address. Each attempt is appended to the file named by ``$BAPLE_NET_LOG`` and fails with
``OSError(ENETUNREACH)``, as on a machine without a network; the log shows attempts a library may have
swallowed. Local (Unix-domain) sockets stay allowed: they are inter-process plumbing, not network.
"""
import errno
import os
import socket
import traceback

LOG = os.environ.get("BAPLE_NET_LOG", "")
INTERNET = (socket.AF_INET, socket.AF_INET6)


def _refuse(what, detail):
    if LOG:
        caller = "".join(traceback.format_stack(limit=8)[:-2])
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(f"{what} {detail!r} from\n{caller}\n")
    raise OSError(errno.ENETUNREACH, f"network disabled by the test ({what} {detail!r})")


def _guard_method(name):
    original = getattr(socket.socket, name)

    def guarded(self, *args, **kwargs):
        if self.family in INTERNET:
            _refuse(f"socket.{name}", args[-1] if args else kwargs)
        return original(self, *args, **kwargs)

    setattr(socket.socket, name, guarded)


def _guard_function(name):
    def guarded(address, *args, **kwargs):
        _refuse(name, address)

    setattr(socket, name, guarded)


for _name in ("connect", "connect_ex", "sendto"):
    _guard_method(_name)
for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"):
    _guard_function(_name)
