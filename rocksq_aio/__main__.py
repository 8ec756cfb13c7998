"""``python -m rocksq_aio``: the command-line tool (see ``rocksq_aio.cli``)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
