"""``python3 -m guest_agent ...`` is ``vmdiag-agent ...`` (for guests without the entry point)."""

import sys

from guest_agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
