"""Read the Dockerfile and .dockerignore the way Docker does, so tests can replay them.

Only what the recipes here use is supported: stages, ``ARG``/``ENV``/``WORKDIR``,
``COPY`` from the build context, ``RUN`` in shell form and the JSON form of
``ENTRYPOINT``. Anything the tests replay is taken from the files themselves,
never restated in the tests.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def args(self) -> dict[str, str]:
        """``ARG`` defaults declared in this stage."""
        out = {}
        for text in self.all("ARG"):
            name, _, default = text.partition("=")
            out[name] = shlex.split(default)[0] if default else ""
        return out

    def env(self) -> dict[str, str]:
        """``ENV`` settings of this stage, in order (``KEY=value`` form only)."""
        out = {}
        for text in self.all("ENV"):
            out.update(item.split("=", 1) for item in shlex.split(text))
        return out


def _logical_lines(text: str) -> list[str]:
    """Join continued lines; drop comments and blank lines (as Docker does inside a RUN too)."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.endswith("\\"):
            current += raw[:-1]
            continue
        lines.append(current + raw)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse_dockerfile(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def stage(stages: list[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


def entrypoint(stage_: Stage) -> list[str]:
    """The last ``ENTRYPOINT`` in JSON (exec) form."""
    return json.loads(stage_.all("ENTRYPOINT")[-1])


# -- .dockerignore -------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            if pattern.startswith("/", i):
                out, i = out + "/?", i + 1
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore(context: Path):
    """A predicate ``excluded(relative_posix_path)`` with Docker's rules: last match wins,
    and a pattern matching a parent folder matches everything inside it."""
    rules = []
    ignore = context / ".dockerignore"
    for line in ignore.read_text().splitlines() if ignore.exists() else []:
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, _pattern_regex(line.lstrip("!").strip("/"))))

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negate, regex in rules:
            if any(regex.match(p) for p in prefixes):
                result = not negate
        return result

    return excluded


def replay_copies(stage_: Stage, context: Path, root: Path) -> Path:
    """Do a stage's context ``COPY`` lines into ``root`` (standing for ``/``); return its WORKDIR."""
    excluded = dockerignore(context)
    workdir = root
    for ins in stage_.instructions:
        if ins.keyword == "WORKDIR":
            workdir = root / ins.args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY" and not ins.args.startswith("--"):
            *sources, dest = shlex.split(ins.args)
            target = root / dest.lstrip("/") if dest.startswith("/") else workdir / dest
            for src in sources:
                _copy_filtered(context, context / src, target, excluded, many=len(sources) > 1)
    return workdir


def _copy_filtered(context: Path, src: Path, target: Path, excluded, many: bool) -> None:
    if src.is_file():
        dest = target / src.name if many or str(target).endswith("/") or target.is_dir() else target
        if not excluded(src.relative_to(context).as_posix()):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        return
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(context).as_posix()
        if path.is_file() and not excluded(rel):
            dest = target / path.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
