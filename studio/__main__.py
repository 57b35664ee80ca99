"""``python -m studio`` opens the studio window."""

import sys

from studio.app import main

sys.exit(main())
