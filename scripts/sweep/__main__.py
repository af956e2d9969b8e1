from common import cli
from scripts.sweep.command import INTERRUPTED, main

cli.exit_with(main, interrupted=INTERRUPTED)
