"""The `diskspec` command's first code (console script and `python -m diskspec.runtime`).

Importing it makes Ctrl-C end the process at once, as it does any C program, instead of
printing a traceback from inside an import: the console script imports this module first,
then does some work of its own, then calls run(), which imports the command line's modules.
Once they are loaded, Ctrl-C raises KeyboardInterrupt again, so that a command can undo what
it started (convert removes its partial target) and exit with 130. Nothing else imports it.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)


def run() -> None:
    from .main import run as run_command

    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_command()
