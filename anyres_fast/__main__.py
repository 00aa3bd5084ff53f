"""`python -m anyres_fast ...` (and `torchrun ... -m anyres_fast train ...`) runs the command line."""
import sys

from .cli import main

sys.exit(main())
