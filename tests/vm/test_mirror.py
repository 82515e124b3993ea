"""The debootstrap mirror is read from apt's own configuration, in both source formats."""

from __future__ import annotations

import os

import pytest

from lab.vm.mirror import MIRROR_ENV, MirrorNotFound, find_mirror


def write(root, relative: str, text: str) -> None:
    path = os.path.join(str(root), relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def test_one_line_format_with_options_and_comments(tmp_path) -> None:
    write(tmp_path, "etc/apt/sources.list",
          "# deb http://old.example/debian bookworm main\n"
          "deb-src http://src.example/debian bookworm main\n"
          "deb [arch=amd64 signed-by=/k.gpg] http://security.example/ bookworm-security main\n"
          "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib # x\n")
    assert find_mirror("bookworm", str(tmp_path), env={}) == "http://mirror.example/debian"


def test_deb822_skips_disabled_and_other_suites(tmp_path) -> None:
    write(tmp_path, "etc/apt/sources.list.d/a.sources",
          "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\n"
          "Components: main\nEnabled: no\n\n"
          "Types: deb-src deb\n# a comment\nURIs: http://two.example/debian\n"
          "Suites: bookworm bookworm-updates\nComponents: main\n")
    write(tmp_path, "etc/apt/sources.list.d/b.list", "deb http://trixie.example/ trixie main\n")
    assert find_mirror("bookworm", str(tmp_path), env={}) == "http://two.example/debian"
    assert find_mirror("trixie", str(tmp_path), env={}) == "http://trixie.example/"


def test_environment_wins_and_missing_source_says_what_to_do(tmp_path) -> None:
    write(tmp_path, "etc/apt/sources.list", "deb http://m.example/debian bullseye main\n")
    assert find_mirror("bookworm", str(tmp_path),
                       env={MIRROR_ENV: "http://local.example/"}) == "http://local.example/"
    with pytest.raises(MirrorNotFound, match=MIRROR_ENV):
        find_mirror("bookworm", str(tmp_path), env={})
