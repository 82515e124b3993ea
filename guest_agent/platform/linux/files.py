"""Small readers for kernel text files; they raise OSError/ValueError, which callers report."""

from __future__ import annotations

from typing import Dict, List


def read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def read_first_line(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().strip()


def read_int(path: str) -> int:
    return int(read_first_line(path))


def read_lines(path: str) -> List[str]:
    return read_text(path).splitlines()


def read_key_values(path: str, sep: str = "=") -> Dict[str, str]:
    """``KEY=value`` files (os-release, systemctl show); quotes around values are removed."""
    out: Dict[str, str] = {}
    for line in read_lines(path):
        key, found, value = line.partition(sep)
        if found and key.strip() and not key.lstrip().startswith("#"):
            out[key.strip()] = unquote(value.strip())
    return out


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
        value = value.replace('\\"', '"').replace("\\$", "$").replace("\\`", "`")
        value = value.replace("\\\\", "\\")
    return value
