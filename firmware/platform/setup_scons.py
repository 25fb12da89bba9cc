"""Make PlatformIO's `tool-scons` core package from PyPI's `scons`, so `pio run` works without
PlatformIO's registry (firmware/README.md, "PlatformIO offline").

    python firmware/platform/setup_scons.py            # into $PLATFORMIO_CORE_DIR (~/.platformio)

PlatformIO Core runs `<python> <core>/packages/tool-scons/scons.py`. It accepts a folder there when
its `.piopm` names owner `platformio`, name `tool-scons` and a version matching
`platformio.dependencies.get_core_dependencies()["tool-scons"]` (6.2.0: `~4.41101.0`, i.e. SCons
4.11.1: a.bb.cc is written a.0bbcc). This script reads that spec from the installed PlatformIO,
installs the matching `scons` release from PyPI into the folder (`pip install --no-deps --target`)
and writes `scons.py`, `package.json` and `.piopm`. It does nothing when a matching package is
already there (exit 0), so it can run before every build.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

SCONS_PY = '''\
# tinylls: PlatformIO's entry point into SCons (firmware/platform/setup_scons.py made this file)
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from SCons.Script.Main import main  # noqa: E402

if __name__ == "__main__":
    main()
'''


def scons_version(spec: str) -> tuple[str, str]:
    """PlatformIO's package version and the SCons release it stands for: '~4.41101.0' ->
    ('4.41101.0', '4.11.1')."""
    m = re.fullmatch(r"[~^=<>]*\s*(\d+)\.(\d+)\.(\d+)", spec.strip())
    if not m:
        raise SystemExit(f"unexpected tool-scons requirement {spec!r}")
    major, packed = m.group(1), m.group(2).rjust(5, "0")
    minor, patch = int(packed[-4:-2]), int(packed[-2:])
    return f"{major}.{m.group(2)}.{m.group(3)}", f"{major}.{minor}.{patch}"


def main() -> int:
    try:
        from platformio.dependencies import get_core_dependencies
        from platformio.package.manager.core import get_core_package_dir
        from platformio.package.manager.tool import ToolPackageManager
    except ImportError:
        print("platformio is not installed: pip install platformio", file=sys.stderr)
        return 2
    spec = get_core_dependencies()["tool-scons"]
    have = get_core_package_dir("tool-scons", auto_install=False)
    if have:
        print(f"tool-scons {spec}: {have}")
        return 0
    pkg_version, release = scons_version(spec)
    dest = os.path.join(ToolPackageManager().package_dir, "tool-scons")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--target", dest, f"scons=={release}"], check=True)
    with open(os.path.join(dest, "scons.py"), "w") as f:
        f.write(SCONS_PY)
    with open(os.path.join(dest, "package.json"), "w") as f:
        json.dump({"name": "tool-scons", "version": pkg_version, "system": "*",
                   "description": f"SCons {release} from PyPI (tinylls firmware/platform/setup_scons.py)"}, f)
    with open(os.path.join(dest, ".piopm"), "w") as f:
        json.dump({"type": "tool", "name": "tool-scons", "version": pkg_version,
                   "spec": {"owner": "platformio", "id": None, "name": "tool-scons",
                            "requirements": spec, "uri": None}}, f)
    got = get_core_package_dir("tool-scons", auto_install=False)
    if not got:
        print(f"PlatformIO does not accept {dest}", file=sys.stderr)
        return 1
    print(f"tool-scons {pkg_version} (SCons {release}): {got}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
