"""``python -m studio.qt_probe``: open Qt the way the studio does, without a window, and exit.

``engine.display`` runs it in a child process to learn whether Qt's platform plugin loads here
(the engine itself never imports Qt); its exit status and Qt's own messages on stderr are the answer.
"""

import sys

from PySide6.QtGui import QGuiApplication

QGuiApplication(sys.argv[:1])
