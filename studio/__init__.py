"""LoRA Studio's desktop application (PySide6). It imports engine; engine never imports it."""

import os

# Qt's raster engine hands every large fill to a pool of helper threads and waits for them.
# While a training run keeps the cores busy those threads come late, and the UI thread waited
# on them for most of a stall (one of 69 ms spent ~390 context switches waiting there). A
# plot's fills are small: drawn on the UI thread alone they cost less than the hand-off.
# Qt reads the variable once, at the first fill, so it is set before any widget exists.
os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")
