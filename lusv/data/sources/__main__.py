"""``python -m lusv.data.sources``: the registered data sources, for shell scripts (``run_all.sh``).

    python -m lusv.data.sources                          the names, one per line
    python -m lusv.data.sources --default-location NAME  where NAME is read from when no path is given
                                                    (exit 2 with the reason when it needs one)

Standard library only, so it runs before the project's environment is installed.
"""

from __future__ import annotations

import sys

from lusv.data.sources import get_source, source_names
from lusv.errors import ConfigError


def main(argv: list[str]) -> int:
    if not argv:
        print("\n".join(source_names()))
        return 0
    if len(argv) == 2 and argv[0] == "--default-location":
        try:
            source = get_source(argv[1])
            if source.default_location is None:
                raise ConfigError(f"--data {source.name} needs --data-path: {source.data_path_hint}")
            print(source.location())
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        return 0
    print("usage:\n" + "\n".join(__doc__.strip().splitlines()[2:5]), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
