"""The trainer's command in a checkout: `python main.py --config=... --workdir=...`.

The command itself is stss_jax/main.py, which an installed package runs as `stss-train`.
"""

import sys

from stss_jax.main import main

if __name__ == "__main__":
  sys.exit(main())
