"""PyInstaller's entry script: both executables (`DesktopProxy`, `desktop-proxy`) run this.

`desktop_proxy.entry.main` decides: no arguments starts the tray app, anything else is the CLI.
"""

import sys

from desktop_proxy.entry import main

if __name__ == "__main__":
    sys.exit(main())
