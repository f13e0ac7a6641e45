"""``python -m recipe.evaluate``: see ``recipe.evaluate.cli``."""

import sys

from recipe.evaluate.cli import main

sys.exit(main())
