"""Reads the repository's Dockerfile into stages, for the packaging tests.

Only what the tests need: continuation lines joined, comments dropped, global ARG defaults
substituted into FROM, and per stage its name, base image and instructions (keyword, text).
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


class Stage:
    def __init__(self, name, image):
        self.name = name
        self.image = image
        self.instructions = []  # (KEYWORD, rest of the line)

    def all(self, keyword):
        return [text for kw, text in self.instructions if kw == keyword]


def instructions(text):
    """(KEYWORD, text) for each instruction, continuation lines joined."""
    out = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # A comment inside a continued instruction.
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def substitute(text, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
                  text)


def parse(path=DOCKERFILE):
    """(global ARG defaults, [Stage]) of a Dockerfile."""
    args = {}
    stages = []
    for keyword, rest in instructions(path.read_text()):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            if not match:
                raise ValueError(f"unparsed FROM {rest!r}")
            stages.append(Stage(match.group(2), substitute(match.group(1), args)))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = substitute(default, args)
        elif stages:
            stages[-1].instructions.append((keyword, rest))
        else:
            raise ValueError(f"{keyword} before the first FROM")
    return args, stages


def stage(stages, name):
    for s in stages:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r} in the Dockerfile")


def exposed_ports(s):
    ports = set()
    for text in s.all("EXPOSE"):
        ports.update(int(p.split("/")[0]) for p in text.split())
    return ports


def user_id(s):
    """The numeric uid of a stage's last USER instruction (None without one or with a name)."""
    users = s.all("USER")
    if not users:
        return None
    uid = users[-1].split(":")[0]
    return int(uid) if uid.isdigit() else None
