"""``python -m notifier.cli``: the ``notifier`` command."""

import sys

from notifier.cli import main

sys.exit(main())
