"""`python -m mkcnet ...` (and `torchrun -m mkcnet ...`): the same as the `mkcnet` command."""

import sys

from mkcnet.cli import main

sys.exit(main())
