"""The GPU image's runtime stage must carry every library the bundle leaves to it. Its build
stage needs NVIDIA's CUDA devel image, which cannot be fetched where CI runs, so the GPU image is
never built here; this checks instead, against scripts/bundle run on the built binaries
(ATTNBENCH_BIN_DIR; a CUDA build where nvcc was found, else CPU-only):
  - every library the bundled programs and libraries need (ldd) that is not in the bundle is one
    scripts/bundle deliberately leaves out AND one that NVIDIA's CUDA runtime image (the
    Dockerfile's `runtime` base: Ubuntu 24.04 plus the CUDA runtime libraries) or the NVIDIA
    container toolkit (the driver's libraries, mounted at run time) provides: PROVIDED below;
  - every versioned library name the programs carry for dlopen (cuBLAS, NVML, the driver; only in
    a CUDA build) is in the bundle or in PROVIDED;
  - every pattern of scripts/bundle's is_system_lib names something PROVIDED, so the bundle
    cannot leave out what the runtime image lacks;
  - PROVIDED is written for one CUDA major version, the Dockerfile's CUDA_VERSION, on the runtime
    (not base) flavour of NVIDIA's image; where a CUDA toolkit is installed (/usr/local/cuda), its
    lib64 has each CUDA library of PROVIDED under that name.
"""

import fnmatch
import os
import pathlib
import re
import subprocess
import tempfile
import unittest

import dockerfile
from bundle_test import ldd

BIN_DIR = pathlib.Path(os.environ.get("ATTNBENCH_BIN_DIR", dockerfile.ROOT / "build/release/bin"))
CUDA_LIB64 = pathlib.Path("/usr/local/cuda/lib64")
ARGS, STAGES = dockerfile.parse()

# What nvidia/cuda:<CUDA_MAJOR>.x-runtime-ubuntu24.04 provides, by where it comes from.
CUDA_MAJOR = 13
# The kernel maps its vDSO into every process (linux-gate on 32-bit x86): no file needed.
KERNEL = {"linux-vdso.so.1", "linux-gate.so.1"}
UBUNTU_BASE = {
    "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libpthread.so.0",
    "libdl.so.2", "librt.so.1", "libresolv.so.2", "libutil.so.1", "libanl.so.1", "libmvec.so.1",
    "libstdc++.so.6", "libgcc_s.so.1",
}
# The cuda-libraries-<version> packages of the runtime image (cuDNN and NCCL are not among them).
CUDA_RUNTIME = {
    f"libcudart.so.{CUDA_MAJOR}", f"libcublas.so.{CUDA_MAJOR}", f"libcublasLt.so.{CUDA_MAJOR}",
    f"libnvrtc.so.{CUDA_MAJOR}", f"libnvJitLink.so.{CUDA_MAJOR}", "libcufft.so.12",
    "libcurand.so.10", "libcusolver.so.12", "libcusparse.so.12",
}
# The host driver's, mounted by the NVIDIA container toolkit (docker run --gpus, the device
# plugin in Kubernetes) with NVIDIA_DRIVER_CAPABILITIES=compute,utility.
DRIVER = {"libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1"}
PROVIDED = KERNEL | UBUNTU_BASE | CUDA_RUNTIME | DRIVER
VERSIONED_SONAME = re.compile(rb"lib[\w+.-]+?\.so\.\d+(?:\.\d+)*")


def left_out_patterns():
    """The case patterns of is_system_lib in scripts/bundle, what the bundle never copies."""
    text = (dockerfile.ROOT / "scripts" / "bundle").read_text()
    body = re.search(r"is_system_lib\(\) \{\s*case \"\$1\" in\s*(.*?)\)\s*\n\s*return 0", text,
                     re.DOTALL)
    if body is None:
        raise AssertionError("no is_system_lib case in scripts/bundle")
    return [p.strip() for p in body.group(1).replace("\\\n", " ").split("|") if p.strip()]


class GpuRuntimeLibsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="attnbench-gpu-libs-")
        cls.bundle = pathlib.Path(cls.tmp.name) / "bundle"
        out = subprocess.run(
            ["bash", str(dockerfile.ROOT / "scripts" / "bundle"), str(BIN_DIR), str(cls.bundle)],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise AssertionError(f"scripts/bundle failed:\n{out.stdout}{out.stderr}")
        cls.bundled = {p.name for p in (cls.bundle / "lib").iterdir()}
        cls.patterns = left_out_patterns()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def left_out(self, name):
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def test_every_library_outside_the_bundle_is_in_the_runtime_image(self):
        files = sorted((self.bundle / "bin").iterdir()) + sorted((self.bundle / "lib").iterdir())
        outside = set()
        for path in files:
            for name, resolved in ldd(path):
                if name not in self.bundled:
                    outside.add(name)
                    with self.subTest(file=path.name, library=name):
                        self.assertTrue(self.left_out(name), "neither bundled nor left out")
                        self.assertIn(name, PROVIDED, "left out, but not in the runtime image")
        # glibc and the C++ runtime at least: the check looked at real ldd output.
        self.assertTrue({"libc.so.6", "libstdc++.so.6"} <= outside, outside)

    def test_libraries_loaded_at_run_time_are_in_the_runtime_image(self):
        loaded = set()
        for program in (self.bundle / "bin").iterdir():
            loaded |= {m.decode() for m in VERSIONED_SONAME.findall(program.read_bytes())}
        needed_later = loaded - self.bundled - UBUNTU_BASE
        for name in sorted(needed_later):
            with self.subTest(library=name):
                self.assertIn(name, PROVIDED)
                self.assertTrue(self.left_out(name), "scripts/bundle would not leave it out")
        if "libcublas.so.13" not in loaded:
            print("CPU-only build (no nvcc): no CUDA library names to check in the programs")

    def test_what_the_bundle_leaves_out_is_provided(self):
        self.assertGreater(len(self.patterns), 10)
        for pattern in self.patterns:
            with self.subTest(pattern=pattern):
                self.assertTrue(any(fnmatch.fnmatchcase(n, pattern) for n in PROVIDED),
                                "nothing the runtime image provides has this name")

    def test_the_list_matches_the_dockerfile_and_the_toolkit(self):
        self.assertEqual(int(ARGS["CUDA_VERSION"].split(".")[0]), CUDA_MAJOR,
                         "CUDA_VERSION changed: check the runtime libraries' names here")
        runtime = dockerfile.stage(STAGES, "runtime")
        self.assertRegex(runtime.image, rf"^nvidia/cuda:{CUDA_MAJOR}\.[\d.]+-runtime-ubuntu24\.04$")
        if not CUDA_LIB64.is_dir():
            self.skipTest(f"no CUDA toolkit at {CUDA_LIB64} to compare the names with")
        for name in sorted(CUDA_RUNTIME):
            with self.subTest(library=name):
                self.assertTrue((CUDA_LIB64 / name).exists(), f"{CUDA_LIB64} has no {name}")


if __name__ == "__main__":
    unittest.main()
