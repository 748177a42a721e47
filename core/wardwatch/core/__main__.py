"""``python -m wardwatch.core`` runs the ``wardwatch`` command."""

import sys

from wardwatch.core.cli import main

sys.exit(main())
