"""PLY files: a bounded header parser and a reader for plain (non-list) elements.

Shared by every PLY reader in :mod:`scenes.export`. Counts declared in a header
are checked against the file size before anything is allocated, so a
truncated or hostile file raises a ``ValueError`` naming the file instead of
crashing or allocating without bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PlyElement", "parse_ply_header", "read_ply_element"]

_MAX_HEADER = 1 << 16  # bytes; a header longer than this is malformed

_PLY_DTYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_PLY_SIZES = {name: int(code[1]) for name, code in _PLY_DTYPES.items()}


@dataclass
class PlyElement:
    """One ``element`` of a PLY header: name, count and ``(type, name)`` properties;
    a list property's type is ``"list <count type> <item type>"``."""

    name: str
    count: int
    properties: list[tuple[str, str]]

    def min_row_bytes(self) -> int:
        """Smallest binary size of one row (a list counts its length field only)."""
        return sum(_PLY_SIZES[t.split()[1]] if t.startswith("list ") else _PLY_SIZES[t] for t, _ in self.properties)


def parse_ply_header(raw: bytes, path) -> tuple[str, list[PlyElement], int]:
    """Parse and bound-check a PLY header.

    Element counts are checked against the body size (a binary row takes at
    least :meth:`PlyElement.min_row_bytes`, an ASCII row at least one line), so
    a reader that trusts them can never be made to allocate more than the file
    justifies.

    Returns:
        ``(format, elements, body_offset)``.

    Raises:
        ValueError: naming ``path`` and what is wrong.
    """
    if not raw.startswith(b"ply\n") and not raw.startswith(b"ply\r\n"):
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic line)")
    end = raw.find(b"end_header", 0, _MAX_HEADER)
    if end < 0:
        raise ValueError(f"{path}: malformed PLY: no 'end_header' in the first {_MAX_HEADER} bytes (truncated?)")
    nl = raw.find(b"\n", end)
    if nl < 0:
        raise ValueError(f"{path}: truncated PLY: header ends without a newline")
    body = nl + 1
    try:
        lines = raw[:end].decode("ascii").splitlines()[1:]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: malformed PLY header: non-ASCII bytes") from None
    fmt, elements = None, []
    for i, line in enumerate(lines, 2):
        t = line.split()
        if not t or t[0] in ("comment", "obj_info"):
            continue
        bad = f"{path}: malformed PLY header line {i}: {line[:80]!r}"
        if t[0] == "format":
            if len(t) != 3 or t[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise ValueError(bad)
            fmt = t[1]
        elif t[0] == "element":
            if len(t) != 3 or not t[2].isdigit():
                raise ValueError(bad)
            elements.append(PlyElement(t[1], int(t[2]), []))
        elif t[0] == "property":
            if not elements:
                raise ValueError(f"{bad} (property before any element)")
            if len(t) == 3 and t[1] in _PLY_SIZES:
                elements[-1].properties.append((t[1], t[2]))
            elif len(t) == 5 and t[1] == "list" and t[2] in _PLY_SIZES and t[3] in _PLY_SIZES:
                elements[-1].properties.append((f"list {t[2]} {t[3]}", t[4]))
            else:
                raise ValueError(bad)
        else:
            raise ValueError(bad)
    if fmt is None:
        raise ValueError(f"{path}: malformed PLY header: no 'format' line")
    left = len(raw) - body
    if fmt == "ascii":
        need = sum(e.count for e in elements)
        have = raw.count(b"\n", body) + 1
        if need > have:
            raise ValueError(f"{path}: truncated PLY: header declares {need} rows, the body has {have} lines")
    else:
        need = sum(e.count * e.min_row_bytes() for e in elements)
        if need > left:
            raise ValueError(f"{path}: truncated PLY: header declares at least {need} body bytes, the file has {left}")
    return fmt, elements, body


def read_ply_element(raw: bytes, path, name: str) -> dict[str, np.ndarray]:
    """The columns of element ``name`` of a PLY file's bytes, as ``{property: array}``.

    The element and the ones before it must have no list properties in a
    binary file (an ASCII file may have them only after it).

    Raises:
        ValueError: naming ``path`` when the file is malformed, truncated, or
            has no such element.
    """
    fmt, elements, body = parse_ply_header(raw, path)
    names = [e.name for e in elements]
    if name not in names:
        raise ValueError(f"{path}: PLY has no {name!r} element (elements: {names})")
    idx = names.index(name)
    el = elements[idx]
    if any(t.startswith("list ") for t, _ in el.properties):
        raise ValueError(f"{path}: PLY element {name!r} has list properties; expected plain columns")
    if fmt == "ascii":
        lines = raw[body:].split(b"\n")
        start = sum(e.count for e in elements[:idx])
        rows = lines[start : start + el.count]
        try:
            vals = np.array([[float(x) for x in r.split()] for r in rows], dtype=np.float64).reshape(el.count, len(el.properties))
        except ValueError:
            raise ValueError(f"{path}: malformed ASCII PLY: element {name!r} rows are not {len(el.properties)} numbers") from None
        return {p: vals[:, i] for i, (_, p) in enumerate(el.properties)}
    if any(t.startswith("list ") for e in elements[:idx] for t, _ in e.properties):
        raise ValueError(f"{path}: PLY element {name!r} follows an element with list properties; not supported")
    order = "<" if fmt == "binary_little_endian" else ">"
    dt = np.dtype([(p, order + _PLY_DTYPES[t]) for t, p in el.properties])
    offset = body + sum(e.count * e.min_row_bytes() for e in elements[:idx])
    if offset + el.count * dt.itemsize > len(raw):
        raise ValueError(f"{path}: truncated PLY: element {name!r} needs {el.count * dt.itemsize} bytes at offset {offset}, "
                         f"the file has {len(raw)}")
    arr = np.frombuffer(raw, dtype=dt, count=el.count, offset=offset)
    return {p: np.asarray(arr[p]) for _, p in el.properties}
