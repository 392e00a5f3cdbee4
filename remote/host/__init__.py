"""The host side of sulfur-ops: shipped whole inside every release, run on the hosts and locally.

Standard library only, Python 3.8+, Linux and Termux (make lint checks it with vermin). Nothing here
imports from the operator side (remote/*.py) or from dashboard/; docs/architecture.md tells the rest.
"""

import os

#: the directory that holds remote/ and dashboard/: a release on a host, or the checkout
CODE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
