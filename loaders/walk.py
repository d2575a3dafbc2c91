"""Which files an ingest reads: paths given directly, and folders walked with include/exclude globs."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

__all__ = ["iter_files"]


def _variants(pattern: str) -> Iterator[str]:
    """The pattern, and the pattern with each ``**/`` removed, so that ``**/`` matches zero folders too.

    fnmatch's ``*`` already crosses ``/``, so ``docs/**/*.md`` matches ``docs/a/b.md``; it is the
    zero-folder case, ``docs/b.md``, that needs the ``**/``-less variant.
    """
    yield pattern
    start = 0
    while (at := pattern.find("**/", start)) != -1:
        yield pattern[:at] + pattern[at + 3 :]
        start = at + 3


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(relative, variant) for pattern in patterns for variant in _variants(pattern))


def _walk(root: Path, include: Sequence[str], exclude: Sequence[str]) -> Iterator[Path]:
    """Files under ``root`` in sorted order, hidden ones and those filtered out by the globs skipped."""
    found: list[PurePosixPath] = []
    for folder, dirnames, filenames in os.walk(root):
        relative_folder = PurePosixPath(Path(folder).relative_to(root).as_posix())
        # Prune in place so that os.walk never descends into hidden or excluded folders.
        dirnames[:] = [
            name for name in dirnames if not name.startswith(".") and not _matches(str(relative_folder / name), exclude)
        ]
        for name in filenames:
            relative = relative_folder / name
            if name.startswith(".") or not (root / relative).is_file():
                continue
            if include and not _matches(str(relative), include):
                continue
            if _matches(str(relative), exclude):
                continue
            found.append(relative)
    # Sorting by path parts gives a stable order: a.txt, b/c.txt, d.txt.
    for relative in sorted(found, key=lambda p: p.parts):
        yield root / relative


def iter_files(paths: Sequence[Path], *, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Iterator[Path]:
    """Every file to load from ``paths``, each once.

    A path that is not a directory is yielded as given, whatever the globs say and whether it exists
    or not: it was named on purpose, and ``load_file`` reports what is wrong with it. A directory is
    walked recursively in sorted order, skipping hidden files and folders (names starting with ``.``)
    and not following symlinked folders. ``include`` and ``exclude`` are fnmatch globs matched against
    the path relative to that directory, with ``/`` separators; ``*`` crosses folders and ``**/``
    also matches no folder at all (``**/*.md`` matches ``a.md`` and ``x/y/a.md``). With ``include``
    a file must match one of them; a file, or a folder, that matches an ``exclude`` is skipped.
    """
    seen: set[Path] = set()
    for path in paths:
        candidates = _walk(path, include, exclude) if path.is_dir() else iter([path])
        for candidate in candidates:
            # The same file can come from two arguments (a folder and a file in it, or a symlink).
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                yield candidate
