"""The ``kit`` command: parses arguments, calls the library and prints; turns errors into one line and an exit
status (``app``); ``run_kit`` for notebooks (``notebook``); and ``kit demo`` (``demo``), which runs the whole loop on the built-in demo competition.

May import: everything in kit; nothing imports it.
"""

from kit.cli.app import main
from kit.cli.notebook import isic2024_run, run_kit

__all__ = ["isic2024_run", "main", "run_kit"]
