"""``python -m corral`` (and the ``corral`` command's entry point) is the ``corral`` command.

``corral serve`` (how the CLI starts a background server) goes straight to the server,
skipping the command line's modules (prompt_toolkit, rich, typer): a faster cold start.
Anything else, ``serve --help`` included, goes through the full command line; a ``corral
run`` that will need a background server starts it before those modules load
(``corral.cli.background``).
"""

import sys


def main() -> None:
    if sys.argv[1:] == ["serve"]:
        from corral.server.serve import main as serve_main

        serve_main()
        return
    from corral.cli.background import start_early

    start_early(sys.argv[1:])
    from corral.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
