"""``python -m gpu_profiles [DIR]``: validate the profiles and print them as the JSON list the GPU probe reads.

    python -m gpu_profiles > profiles.json      # then: gpu_probe.py --profiles-json profiles.json
Exit 0 when every profile is valid, 2 (with one line per problem on stderr) otherwise.
"""

from __future__ import annotations

import sys

from gpu_profiles import ProfileError, load_profiles, profiles_to_json


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m gpu_profiles [DIR]", file=sys.stderr)
        return 2
    try:
        profiles = load_profiles(args[0] if args else None, reload=True)
    except ProfileError as exc:
        print(exc, file=sys.stderr)
        return 2
    sys.stdout.write(profiles_to_json(profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
