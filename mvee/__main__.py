import sys

from mvee.cli import main

sys.exit(main())
