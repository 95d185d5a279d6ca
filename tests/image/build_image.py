"""ctest fixture of the image label: builds the CPU image with scripts/image (debootstrap bases,
then the Dockerfile's runtime-cpu target with buildah), or exits SKIP where image_env says this
machine cannot. scripts/image prints its own steps and timings.
"""

import subprocess
import sys

import image_env

reason = image_env.why_not()
if reason:
    print(f"SKIPPED: {reason}")
    sys.exit(image_env.SKIP)
sys.exit(subprocess.run(["bash", str(image_env.ROOT / "scripts" / "image")],
                        stdin=subprocess.DEVNULL).returncode)
