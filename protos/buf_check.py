"""Lint the wire contract and check it for breaking changes against the previous commit, with buf.

Usage: python protos/buf_check.py [--buf PATH] [--against REF]

1. `buf lint` over protos/ (rules: protos/buf.yaml);
2. `buf breaking` against REF's protos/ (default HEAD~1: the previous commit, or main before a
   merge). REF's protos/ are extracted with `git archive` into a temporary folder rather than
   read as buf's `.git#ref=...` input, which works the same whether or not REF already had a
   buf.yaml, and in git worktrees, whose `.git` is a file. With no such commit (the first one, or
   a clone too shallow to hold it) the breaking check is skipped, saying so.

buf comes from the npm package @bufbuild/buf (`make buf` installs the pinned version into
.buf/node_modules); --buf or the environment variable LTRR_BUF names another binary.
Exit code 0 when both checks pass; buf's own code otherwise.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
LOCAL_BUF = REPO_ROOT / ".buf" / "node_modules" / ".bin" / "buf"
DEFAULT_AGAINST = "HEAD~1"


def find_buf(explicit: str | None = None) -> str | None:
    """The buf binary: `explicit`, else $LTRR_BUF, else the pinned local install, else buf on PATH."""
    for candidate in (explicit, os.environ.get("LTRR_BUF"), str(LOCAL_BUF)):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())  # buf runs in protos/: a relative path would miss
    return shutil.which("buf")


def lint(buf: str) -> int:
    """`buf lint` over protos/; buf's exit code (0: clean), its findings printed."""
    return subprocess.run([buf, "lint"], cwd=PROTO_ROOT, check=False).returncode


def extract_protos(ref: str, into: Path) -> Path | None:
    """protos/ of commit `ref` written under `into`; None when `ref` is not in the repository."""
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=REPO_ROOT,
                           capture_output=True, check=False)
    if known.returncode != 0:
        return None
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "protos"], cwd=REPO_ROOT,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "protos"


def breaking(buf: str, ref: str | None = None) -> int:
    """`buf breaking` of protos/ against `ref`'s (None: HEAD~1, skipped when this clone has no such
    commit); buf's exit code (0: nothing breaks), 2 for a named `ref` that does not exist."""
    with tempfile.TemporaryDirectory(prefix="ltrr-protos-") as tmp:
        previous = extract_protos(ref or DEFAULT_AGAINST, Path(tmp))
        if previous is None and ref is None:
            print(f"buf breaking: skipped, {DEFAULT_AGAINST} is not in this clone (first commit or shallow clone)")
            return 0
        if previous is None:
            print(f"buf breaking: no commit {ref}", file=sys.stderr)
            return 2
        code = subprocess.run([buf, "breaking", "--against", str(previous)], cwd=PROTO_ROOT,
                              check=False).returncode
    print(f"buf breaking against {ref or DEFAULT_AGAINST}: {'ok' if code == 0 else 'BREAKING CHANGES (above)'}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buf", help="buf binary (default: $LTRR_BUF, .buf/node_modules/.bin/buf, PATH)")
    parser.add_argument("--against", help=f"commit to compare with (default: {DEFAULT_AGAINST}, skipped if absent)")
    args = parser.parse_args(argv)
    buf = find_buf(args.buf)
    if buf is None:
        print("buf not found: run `make buf` (npm package @bufbuild/buf) or pass --buf", file=sys.stderr)
        return 2
    code = lint(buf)
    print(f"buf lint: {'ok' if code == 0 else 'FAILED (above)'}")
    return code or breaking(buf, args.against)


if __name__ == "__main__":
    sys.exit(main())
