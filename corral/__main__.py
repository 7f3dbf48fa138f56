"""``python -m corral`` is the ``corral`` command.

``python -m corral serve`` (how the CLI starts a background server) goes straight to the
server, skipping the command line's modules (prompt_toolkit, rich, typer): a faster cold
start. Anything else, ``serve --help`` included, goes through the full command line;
``run`` first starts a background server where none answers (``cli.background``)."""

import sys

if sys.argv[1:] == ["serve"]:
    from corral.server.serve import main as serve_main

    serve_main()
else:
    if sys.argv[1:2] == ["run"] and not {"-h", "--help"} & set(sys.argv):
        # a cold start: the server starts while the command line's modules import
        from corral.cli.background import spawn_early

        spawn_early()
    from corral.cli.main import main

    main()
