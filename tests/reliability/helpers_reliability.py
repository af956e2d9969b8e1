"""Shared by the reliability tests: paths, and the environment of a process without network."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
NETGUARD = os.path.join(HERE, "netguard")


def guarded_env(net_log, drop=(), **changes):
    """This test process's environment, minus ``drop``, plus ``changes``, with the network guard of
    ``netguard/sitecustomize.py`` on: every connection attempt fails and is appended to ``net_log``."""
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(changes, BAPLE_NET_LOG=str(net_log))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (NETGUARD, REPO, os.environ.get("PYTHONPATH")) if p)
    return env
