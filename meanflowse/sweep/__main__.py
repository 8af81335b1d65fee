"""``python -m meanflowse.sweep gather DIR``: rebuild a multirun folder's table and plots."""

import sys

from meanflowse.sweep.gather import main

sys.exit(main())
