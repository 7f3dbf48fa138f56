"""``python -m corral`` is the ``corral`` command.

``python -m corral serve`` (how the CLI starts a background server) goes straight to the
server, skipping the command line's modules (prompt_toolkit, rich, typer): a faster cold
start. Anything else, ``serve --help`` included, goes through the full command line."""

import sys

if sys.argv[1:] == ["serve"]:
    from corral.server.serve import main as serve_main

    serve_main()
else:
    from corral.cli.main import main

    main()
