"""``python -m plw_plugins.cli``: the same as the ``plw-plugins`` command."""

import sys

from . import main

sys.exit(main())
