import sys

from dfd.cli import main

sys.exit(main())
