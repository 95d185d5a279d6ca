"""Starts an image's entrypoint the way a container runtime would, for cpu_image_test.py.

Run as the child of `unshare --mount --net --pid --ipc --uts --fork` (so it is PID 1 of fresh
namespaces, as in a container):
    sandbox.py ROOTFS UID GID WORKDIR -- ENV_JSON -- ARGV...
It mounts the image's root file system read-only (as deploy/k8s runs it:
readOnlyRootFilesystem), a private /proc, /dev with the four character devices programs expect,
and a tmpfs /tmp; brings up loopback in the new network namespace; then chroots, drops to
UID:GID with no supplementary groups and execs ARGV with exactly the image's environment, so
the server becomes PID 1 and receives the test's signals itself.
"""

import fcntl
import json
import os
import socket
import struct
import subprocess
import sys

DEVICES = ("null", "zero", "random", "urandom")
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def mount(*args):
    subprocess.run(["mount", *args], check=True)


def loopback_up():
    """`ip link set lo up` without iproute2: a new network namespace starts with lo down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def main(argv):
    rootfs, uid, gid, workdir, sep1, env_json, sep2, *command = argv
    if (sep1, sep2) != ("--", "--") or not command:
        sys.exit("usage: sandbox.py ROOTFS UID GID WORKDIR -- ENV_JSON -- ARGV...")
    env = json.loads(env_json)
    uid, gid = int(uid), int(gid)

    # The image's files read-only; private mounts (unshare makes propagation private).
    mount("--bind", rootfs, rootfs)
    mount("-o", "remount,bind,ro,nosuid,nodev", rootfs)
    mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", f"{rootfs}/proc")
    mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777,size=256m", "tmpfs", f"{rootfs}/tmp")
    mount("-t", "tmpfs", "-o", "nosuid,noexec,mode=0755,size=64k", "tmpfs", f"{rootfs}/dev")
    for name in DEVICES:
        open(f"{rootfs}/dev/{name}", "w").close()
        mount("--bind", f"/dev/{name}", f"{rootfs}/dev/{name}")
    loopback_up()

    os.chroot(rootfs)
    os.chdir(workdir or "/")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    sys.stdout.flush()
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
