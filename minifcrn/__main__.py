import sys

from minifcrn.cli import main

sys.exit(main())
