"""``python -m cca.profiling.report``: the former home of the efficiency report, kept as a command.

The measurements live in :mod:`cca.profiling.efficiency`, the rendering in :mod:`cca.reports.efficiency`;
this module only forwards to :func:`cca.reports.efficiency.main` (same options).
"""

from __future__ import annotations

import sys

from cca.reports.efficiency import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
