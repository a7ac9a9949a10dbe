import sys

from pgd.cli import main

sys.exit(main())
