"""The desktop bundle's entry script (PyInstaller runs it as ``__main__``): the same
``lora-studio`` command a pip install gets (``studio.launch``)."""

import sys

from studio.launch import main

sys.exit(main())
