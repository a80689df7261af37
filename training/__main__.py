"""``python -m training``: the training commands alone, the entry ``torchrun ... -m training train CONFIG`` runs."""

import sys

from training.cli import main

sys.exit(main())
