import sys

from runctl.tui.cli import main

sys.exit(main())
