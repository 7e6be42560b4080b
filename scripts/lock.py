"""The CPU install lock: write it from the running environment, or compare the environment with it.

    python scripts/lock.py write requirements-lock.txt     # after the suite passed in this environment
    python scripts/lock.py check requirements-lock.txt     # exit 1 and one line when the environment differs

The lock pins every distribution of the environment (transitively) to an exact version, so `make test`
on a new machine installs what the suite last passed on. pip, setuptools and wheel are left out as
`pip freeze` does (they come with the venv); pc3d itself is installed from the checkout.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
from datetime import date
from importlib import metadata
from pathlib import Path

SKIP = {"pip", "setuptools", "wheel", "pc3d"}
LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """{canonical name: version} of every distribution visible to this interpreter."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) not in SKIP:
            found.setdefault(canonical(name), dist.version)
    return found


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = LINE.match(line)
        if match is None:
            raise SystemExit(f"lock: error: {path}:{number}: expected NAME==VERSION, got {raw!r}")
        pins[canonical(match[1])] = match[2]
    return pins


def differences(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    """One entry per package whose installed version is not the locked one: `name lock -> installed`."""
    rows = []
    for name in sorted(set(pins) | set(have)):
        locked, current = pins.get(name, "absent"), have.get(name, "absent")
        if locked != current:
            rows.append(f"{name} {locked} -> {current}")
    return rows


def write(path: Path) -> None:
    have = installed()
    header = [
        "# Every package of pc3d's CPU test environment, at the versions the whole suite last passed on.",
        f"# Written by `make lock` on {date.today().isoformat()} with Python {platform.python_version()} "
        f"({sys.platform}, {platform.machine()}); regenerate with `make lock`, never by hand.",
        '# Installed by `make install`: pip install -r requirements-lock.txt -e ".[dev]"',
    ]
    text = "\n".join(header + [f"{name}=={have[name]}" for name in sorted(have)]) + "\n"
    # atomic, and with the umask's permissions (mkstemp would make it 0600)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    print(f"wrote {path}: {len(have)} packages")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["write", "check"])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--label", default="this environment",
                        help="what the environment is, for check's message (e.g. 'make test-latest failed')")
    args = parser.parse_args(argv)
    if args.action == "write":
        write(args.lock)
        return 0
    if not args.lock.is_file():
        print(f"lock: error: {args.lock} does not exist (run `make lock`)", file=sys.stderr)
        return 2
    rows = differences(read_lock(args.lock), installed())
    if rows:
        print(f"{args.label}: versions that differ from {args.lock} (lock -> installed): " + ", ".join(rows),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
