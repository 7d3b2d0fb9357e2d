"""The `approvalctl` console script: the agent hook on a path of its own, then the CLI.

`approvalctl hook AGENT` runs before every tool call a coding agent makes, so it must not
pay for loading the Typer application (Typer, click, rich and every command module): argv
is looked at first, and only the other commands import `approvalctl.cli`.
"""

from __future__ import annotations

import os
import sys
from contextlib import suppress


def main() -> None:
    argv = sys.argv[1:]
    if len(argv) >= 2 and argv[0] == "hook" and not argv[1].startswith("-") \
            and argv[1] != "install":
        code = 2  # fail closed if even the hook module cannot run
        try:
            from . import hook

            code = hook.main(argv)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with suppress(BaseException):  # exit with the status anyway
                    stream.flush()
            # No interpreter teardown: nothing is left to clean up, and it is a large part
            # of a short process's life.
            os._exit(code)
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # pragma: no cover
    main()
