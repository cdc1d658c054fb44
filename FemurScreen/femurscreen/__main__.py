"""Allow ``python -m femurscreen``."""

import sys

from femurscreen.cli import main

sys.exit(main())
