"""``python -m logitshift.cli`` (and ``torchrun -m logitshift.cli``) runs the command line."""

import sys

from . import main

sys.exit(main())
