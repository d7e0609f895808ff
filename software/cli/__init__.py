"""The command-line client: ``python -m software COMMAND`` (see :mod:`software.cli.main`).

One module per command (``ls``, ``info``, ``stats``, ``export``, ``plot``), each defining
``HELP``, ``configure(parser)`` and ``run(args) -> int``; :data:`software.cli.main.COMMANDS`
lists them. Only this package prints.
"""
