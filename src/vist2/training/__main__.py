"""`python -m vist2.training train|plot ...`: the training commands on their own (also the
module `accelerate launch -m vist2.training` runs)."""

import sys

from vist2.training.cli import main

sys.exit(main())
