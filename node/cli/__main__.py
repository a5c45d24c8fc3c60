"""``python -m node.cli``: the ``skymesh`` command."""

import sys

from . import main

sys.exit(main())
