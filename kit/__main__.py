"""``python -m kit`` is the ``kit`` command."""

from kit.cli.app import main

raise SystemExit(main())
