import sys

from scorelab.cli import main

sys.exit(main())
