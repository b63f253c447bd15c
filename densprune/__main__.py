"""``python -m densprune ...``: the same as the ``densprune`` command."""

from densprune.cli.main import main

raise SystemExit(main())
