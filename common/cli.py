"""The one command-line wrapper of every entry point (``train.py``, ``scripts.*``, ``benchmarks``,
``datasets.prepare.*``, ``datasets.synthetic``, ``clip_models.standins``, the demo model's recipe)
and the project's flag vocabulary.

Exit codes (docs/ERRORS.md): 0 success; 2 bad input (``InputError``, ``CheckpointError`` included):
one line ``error: ...`` on stdout, no traceback; 1 an internal error (the traceback, then
``error: internal error (...)``) or an interruption (Ctrl-C, or SIGTERM, which is handled like
Ctrl-C). argparse's own usage errors keep argparse's form (``PROG: error: ...`` on stderr, exit 2).

Flags: ``--root`` is the data root, ``--output-dir`` the output folder, and config overrides are
trailing ``KEY VALUE`` pairs (after ``--`` where an option taking several values comes last). The
spellings documented before (``--data``, ``--data-root``; ``--out``, ``--output``; ``--set KEY=VALUE``,
``--set KEY VALUE``) stay as aliases, shown in ``--help`` beside the canonical name only.
"""
import argparse
import signal
import sys
import threading

from common.errors import InputError

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
RESUME_HINT = "run the same command again to resume from the last checkpoint"

ROOT_ALIASES = ("--data", "--data-root")
OUTPUT_DIR_ALIASES = ("--out", "--output")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option by its canonical spelling only (the aliases are named in its help)."""

    def _format_action_invocation(self, action):
        if len(action.option_strings) > 1 and getattr(action, "aliases", False):
            shown = argparse.Action(option_strings=action.option_strings[:1], dest=action.dest,
                                    nargs=action.nargs, metavar=action.metavar, help=action.help)
            return super()._format_action_invocation(shown)
        return super()._format_action_invocation(action)


def parser(prog, description):
    """An ``ArgumentParser`` whose help shows each aliased option once (``description`` kept as written)."""
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


def _with_aliases(action, aliases):
    action.aliases = True
    if aliases:
        action.help = f"{action.help or ''} (aliases: {', '.join(aliases)})".strip()
    return action


def add_root(p, help="the datasets root (DATASET.ROOT)", aliases=ROOT_ALIASES, dest="root", **kwargs):
    """``--root DIR``, the data root, with its older spellings as aliases (``args.root``)."""
    kwargs.setdefault("default", "")
    return _with_aliases(p.add_argument("--root", *aliases, dest=dest, help=help, **kwargs), aliases)


def add_output_dir(p, help="output folder (OUTPUT_DIR)", aliases=OUTPUT_DIR_ALIASES, dest="output_dir", **kwargs):
    """``--output-dir DIR``, where the command writes, with its older spellings as aliases (``args.output_dir``)."""
    kwargs.setdefault("default", "")
    return _with_aliases(p.add_argument("--output-dir", *aliases, dest=dest, help=help, **kwargs), aliases)


class _SetOverrides(argparse.Action):
    """``--set KEY=VALUE ...`` or ``--set KEY VALUE ...`` (mixed, repeatable), collected as KEY, VALUE."""

    def __call__(self, parser, namespace, values, option_string=None):
        pairs, tokens = [], list(values)
        while tokens:
            token = tokens.pop(0)
            if "=" in token:
                pairs += token.split("=", 1)
            elif tokens:
                pairs += [token, tokens.pop(0)]
            else:
                parser.error(f"{option_string} {token}: give KEY VALUE or KEY=VALUE")
        setattr(namespace, self.dest, (getattr(namespace, self.dest) or []) + pairs)


def add_overrides(p, help="config overrides as KEY VALUE pairs"):
    """Trailing ``KEY VALUE`` overrides, and ``--set`` (either form) as an alias; read them with
    ``overrides(args)``."""
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help=help)
    p.add_argument("--set", dest="set_opts", nargs="+", action=_SetOverrides, default=[], metavar="KEY=VALUE",
                   help="alias of the trailing KEY VALUE overrides (KEY=VALUE or KEY VALUE, repeatable)")


def overrides(args):
    """The overrides of a command line built by ``add_overrides``: ``--set`` pairs first, then the
    trailing ones, as one flat ``[KEY, VALUE, ...]`` list (an odd list is refused by its reader)."""
    trailing = list(getattr(args, "opts", None) or [])
    if trailing[:1] == ["--"]:
        trailing = trailing[1:]
    return list(getattr(args, "set_opts", None) or []) + trailing


def one_line(error):
    """The message of a bad-input error as one line. An error raised in a DataLoader worker comes back
    re-raised by torch with the worker's traceback in its message; its own message is the last line."""
    lines = str(error).strip().splitlines()
    if len(lines) < 2:
        return str(error)
    prefix = f"{type(error).__module__}.{type(error).__name__}: "
    return lines[-1][len(prefix):] if lines[-1].startswith(prefix) else lines[-1]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(main, argv=None, interrupted=RESUME_HINT):
    """Call ``main(argv)`` with the project's exit codes and return the code (``main``'s own int
    return value, else 0). SIGTERM (a scheduler's stop) is handled like Ctrl-C; ``interrupted`` ends
    the message printed then."""
    in_main_thread = threading.current_thread() is threading.main_thread()  # where handlers can be set
    previous_handler = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        code = main(argv)
    except InputError as e:
        sys.stderr.flush()
        print(f"error: {one_line(e)}", flush=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:
        sys.stderr.flush()
        print(f"error: interrupted ({e.args[0] if e.args else 'SIGINT'}); {interrupted}", flush=True)
        return EXIT_INTERNAL
    except Exception as e:  # an internal error: keep the traceback for the bug report
        import traceback

        traceback.print_exc(file=sys.stdout)
        sys.stderr.flush()
        print(f"error: internal error ({type(e).__name__}: {one_line(e)}); please report it with the log",
              flush=True)
        return EXIT_INTERNAL
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous_handler is None else previous_handler)
    return code if isinstance(code, int) else EXIT_OK


def command(main, interrupted=RESUME_HINT):
    """The console command of ``main`` (``setup.py``'s entry points): ``run(argv=None)`` returning the
    project's exit code (``run``)."""
    def run_command(argv=None):
        return run(main, argv, interrupted)

    run_command.__doc__ = f"``{main.__module__}.main`` with the project's exit codes (``common.cli``)."
    return run_command


def exit_with(main, interrupted=RESUME_HINT):
    """``if __name__ == "__main__": cli.exit_with(main)``: run ``main`` on ``sys.argv`` and exit with its code."""
    sys.stdout.reconfigure(line_buffering=True)  # a killed run's console log (e.g. a cluster's) keeps its end
    sys.exit(run(main, None, interrupted))
