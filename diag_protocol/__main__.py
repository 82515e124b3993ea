"""``python3 -m diag_protocol schema`` prints the JSON Schema of every message."""

import json
import sys

from .schema import SCHEMA


def main() -> int:
    if sys.argv[1:] != ["schema"]:
        print("usage: python3 -m diag_protocol schema", file=sys.stderr)
        return 2
    json.dump(SCHEMA, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
