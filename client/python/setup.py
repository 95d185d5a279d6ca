"""Build hook of the attnbench client: generates the attnbench.v1 stubs into the wheel.

The stubs come from proto/attnbench/v1/attnbench.proto of this repository (or the directory in
ATTNBENCH_PROTO_DIR), compiled by protoc with grpc_python_plugin (Debian's protobuf-compiler and
protobuf-compiler-grpc; override with PROTOC and GRPC_PYTHON_PLUGIN), or by grpcio-tools'
grpc_tools.protoc when those are missing. Everything else is in pyproject.toml.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO_FILE = "attnbench/v1/attnbench.proto"


def proto_dir():
    candidate = Path(os.environ.get("ATTNBENCH_PROTO_DIR", HERE.parent.parent / "proto"))
    if not (candidate / PROTO_FILE).is_file():
        sys.exit(f"attnbench-client: {PROTO_FILE} not found under {candidate} "
                 "(build from the repository, or set ATTNBENCH_PROTO_DIR)")
    return candidate


def protoc_command(include, out):
    protoc = os.environ.get("PROTOC") or shutil.which("protoc")
    plugin = os.environ.get("GRPC_PYTHON_PLUGIN") or shutil.which("grpc_python_plugin")
    outputs = [f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", PROTO_FILE]
    if protoc and plugin:
        return [protoc, f"--plugin=protoc-gen-grpc_python={plugin}", *outputs]
    try:
        import grpc_tools  # noqa: F401  (grpcio-tools, where Debian's tools are absent)
    except ImportError:
        sys.exit("attnbench-client: needs protoc and grpc_python_plugin (Debian: "
                 "protobuf-compiler protobuf-compiler-grpc) or grpcio-tools")
    return [sys.executable, "-m", "grpc_tools.protoc", *outputs]


class BuildWithStubs(build_py):
    """build_py, then protoc into the build tree: the wheel gets attnbench/v1/*_pb2*.py."""

    def run(self):
        super().run()
        out = Path(self.build_lib).resolve()
        include = proto_dir()
        subprocess.run(protoc_command(include, out), check=True, cwd=include)
        for package in (out / "attnbench", out / "attnbench" / "v1"):
            (package / "__init__.py").touch()


setup(cmdclass={"build_py": BuildWithStubs})
