"""Static checks of the Dockerfile and .dockerignore (no docker daemon is assumed in CI).

The image build must run the same scripts CI runs (scripts/build with the `image` preset, which
runs scripts/setup --build-only, then scripts/bundle, whose result bundle_test.py starts; CI also
builds the CPU target itself, tests/image), so CI exercises every step of it. Checked
here: the stage names and bases (CUDA devel -> runtime of one version on Ubuntu 24.04, Debian
bookworm for the CPU target), base images named without a registry host and overridable by ARG,
runtime stages that copy only the bundle and run as a non-root user, the exposed ports, the
gRPC health check through `attnbench health`, and no download outside the package manager.
"""

import json
import re
import shlex
import unittest

import dockerfile

ARGS, STAGES = dockerfile.parse()
TEXT = dockerfile.DOCKERFILE.read_text()


def command_words(text):
    """The words of a CMD/ENTRYPOINT/HEALTHCHECK CMD in exec (JSON) or shell form."""
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return shlex.split(text)


class StagesTest(unittest.TestCase):

    def test_stage_names_and_default_target(self):
        self.assertEqual([s.name for s in STAGES], ["build", "build-cpu", "runtime-cpu", "runtime"])

    def test_base_images(self):
        version = ARGS["CUDA_VERSION"]
        self.assertRegex(version, r"^\d+\.\d+\.\d+$")
        build, build_cpu, runtime_cpu, runtime = STAGES
        self.assertEqual(build.image, f"nvidia/cuda:{version}-devel-ubuntu24.04")
        self.assertEqual(runtime.image, f"nvidia/cuda:{version}-runtime-ubuntu24.04")
        self.assertEqual(build_cpu.image, "debian:bookworm")
        self.assertEqual(runtime_cpu.image, "debian:bookworm-slim")

    def test_base_images_are_args_without_a_registry_host(self):
        raw_froms = re.findall(r"(?m)^FROM\s+(\S+)", TEXT)
        self.assertTrue(all(f.startswith("${") for f in raw_froms), raw_froms)
        for s in STAGES:
            if "/" not in s.image:
                continue  # "debian:bookworm": an official image, no host.
            first = s.image.split("/")[0]
            # A registry host has a dot or a port, or is localhost.
            self.assertFalse("." in first or ":" in first or first == "localhost", s.image)

    def test_build_stages_run_the_repository_scripts(self):
        for name in ("build", "build-cpu"):
            runs = dockerfile.stage(STAGES, name).all("RUN")
            self.assertEqual(runs, ["bash scripts/build image && "
                                    "bash scripts/bundle build/image/bin /opt/attnbench"], name)
            self.assertEqual(dockerfile.stage(STAGES, name).all("COPY"), [". ."], name)
        for script in ("setup", "build", "bundle"):
            self.assertTrue((dockerfile.ROOT / "scripts" / script).is_file(), script)
        # The image preset builds the server and CLI without the tests, in build/image.
        presets = json.loads((dockerfile.ROOT / "CMakePresets.json").read_text())
        image = next(p for p in presets["configurePresets"] if p["name"] == "image")
        self.assertEqual(image["binaryDir"], "${sourceDir}/build/image")
        self.assertEqual(image["cacheVariables"]["ATTNBENCH_BUILD_TESTS"], "OFF")
        self.assertIn("--build-only", (dockerfile.ROOT / "scripts" / "build").read_text())

    def test_runtime_stages(self):
        for name, build in (("runtime", "build"), ("runtime-cpu", "build-cpu")):
            s = dockerfile.stage(STAGES, name)
            with self.subTest(stage=name):
                self.assertEqual(s.all("COPY"), [f"--from={build} /opt/attnbench /opt/attnbench"])
                # Only the user is created: no package installs, nothing fetched.
                for run in s.all("RUN"):
                    self.assertRegex(run, r"^groupadd .* && useradd ")
                uid = dockerfile.user_id(s)
                self.assertIsNotNone(uid, "USER must be a numeric uid")
                self.assertNotEqual(uid, 0)
                self.assertEqual(dockerfile.exposed_ports(s), {50051, 9464})
                self.assertEqual(command_words(s.all("ENTRYPOINT")[-1]), ["attnbench-server"])
                cmd = command_words(s.all("CMD")[-1])
                self.assertIn("--listen_address=0.0.0.0:50051", cmd)
                self.assertIn("--metrics_address=0.0.0.0:9464", cmd)
                self.assertIn("PATH=/opt/attnbench/bin", " ".join(s.all("ENV")))
                self.assertEqual(s.all("STOPSIGNAL"), ["SIGTERM"])

    def test_healthcheck_speaks_grpc_health(self):
        for name in ("runtime", "runtime-cpu"):
            checks = dockerfile.stage(STAGES, name).all("HEALTHCHECK")
            self.assertEqual(len(checks), 1, name)
            match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.+)", checks[0])
            self.assertIsNotNone(match, checks[0])
            self.assertIn("--timeout=", match.group(1))
            words = command_words(match.group(2))
            self.assertEqual(words[:2], ["attnbench", "health"], words)
            self.assertIn("--server=127.0.0.1:50051", words)
            self.assertTrue(any(w.startswith("--deadline_seconds=") for w in words), words)


class NoDownloadsTest(unittest.TestCase):

    def test_nothing_fetched_outside_the_package_manager(self):
        for keyword, text in dockerfile.instructions(TEXT):
            with self.subTest(instruction=f"{keyword} {text[:40]}"):
                self.assertNotEqual(keyword, "ADD", "ADD may fetch URLs; use COPY")
                words = set(re.findall(r"[\w.+-]+", text.lower()))
                for tool in ("curl", "wget", "pip", "pip3", "npm", "git", "go"):
                    if keyword == "RUN":
                        self.assertNotIn(tool, words)
                self.assertNotRegex(text, r"(?i)\b(https?|ftp)://")


class DockerignoreTest(unittest.TestCase):

    def test_build_outputs_and_git_stay_out_of_the_context(self):
        entries = {line.strip() for line in
                   (dockerfile.ROOT / ".dockerignore").read_text().splitlines()
                   if line.strip() and not line.startswith("#")}
        for entry in (".git", "build", ".device"):
            self.assertIn(entry, entries)
        # The sources the build needs must stay in.
        for needed in ("scripts", "proto", "kernels", "server", "client", "CMakeLists.txt",
                       "CMakePresets.json"):
            self.assertNotIn(needed, entries)


if __name__ == "__main__":
    unittest.main()
