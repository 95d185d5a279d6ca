"""What the image tests share: where scripts/image keeps its images (the same defaults and
environment overrides as the script), buildah pointed at that store, and the one reason the
tests may skip rather than fail: a machine where building or running an image is impossible
(not root, or the kernel refuses new namespaces). Missing tools are a failure instead: scripts/setup
installs them.
"""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
STORE = pathlib.Path(os.environ.get("ATTNBENCH_IMAGE_STORE", ROOT / "build" / "image-store"))
IMAGE = os.environ.get("ATTNBENCH_IMAGE", "localhost/attnbench:cpu-test")
# ctest's SKIP_RETURN_CODE for both image tests.
SKIP = 77


def buildah(*args, timeout=300):
    """buildah on scripts/image's private vfs store; raises with its output on failure."""
    out = subprocess.run(
        ["buildah", "--root", str(STORE / "root"), "--runroot", str(STORE / "run"),
         "--storage-driver", "vfs", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout


def why_not():
    """Why this machine cannot build or run images at all, or None where it can."""
    if os.geteuid() != 0:
        return "not root: debootstrap, chroot and the image's mounts need root"
    probe = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"the kernel refuses new namespaces here: {probe.stderr.strip()}"
    return None
