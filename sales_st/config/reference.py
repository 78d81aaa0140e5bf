"""The configuration reference, generated from :mod:`sales_st.config.sections`: every key
with its type, default and the comment written above (or beside) its field.

    python -m sales_st.config.reference > conf/README.md

A test checks that ``conf/README.md`` is current.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import typing
from typing import Any

from sales_st.config import sections
from sales_st.config.sections import Config

HEADER = """# Configuration reference

Generated from `sales_st/config/sections.py` by `python -m sales_st.config.reference`; do
not edit by hand.  Every default lives there; `conf/base.yaml` holds only what differs,
the overlays (`--env local,rossmann`) override it, and `key=value` arguments override
everything (`train.epochs=2`, `spark.conf={"spark.sql.shuffle.partitions": "4"}`).
"""


def field_docs(cls: type) -> dict[str, str]:
    """Comment lines right above each field of ``cls``, or the comment on its line."""
    lines = inspect.getsource(cls).splitlines()
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in lines[1:]:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("# ").rstrip())
            continue
        name, sep, _ = text.partition(":")
        if sep and name.isidentifier() and line.startswith("    ") and not line.startswith("     "):
            inline = text.split("  # ", 1)[1] if "  # " in text else ""
            docs[name] = " ".join(pending + ([inline] if inline else []))
        pending = []
    return docs


def _type(tp: Any) -> str:
    text = str(tp).replace("typing.", "").replace("sales_st.config.sections.", "")
    return text.replace("<class '", "").replace("'>", "")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    out = []
    hints = typing.get_type_hints(cls, vars(sections))
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in ("root", "sources"):
            continue
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += rows(tp, f"{prefix}{f.name}.")
            continue
        value = sections.to_dict(_default(f))
        out.append((f"{prefix}{f.name}", _type(tp), json.dumps(value), docs.get(f.name, "")))
    return out


def render() -> str:
    parts = [HEADER]
    for f in dataclasses.fields(Config):
        tp = typing.get_type_hints(Config)[f.name]
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            continue
        doc = inspect.getdoc(tp) or ""
        parts.append(f"\n## `{f.name}`\n")
        if doc and not doc.startswith(tp.__name__ + "("):
            parts.append(doc + "\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|")
        for key, typ, default, meaning in rows(tp, f"{f.name}."):
            cell = default.replace("|", "\\|")
            parts.append(f"| `{key}` | `{typ}` | `{cell}` | {meaning.replace('|', '/')} |")
    top = [r for r in rows(Config) if "." not in r[0]]
    parts.append("\n## top level\n\n| key | type | default | meaning |\n|---|---|---|---|")
    parts += [f"| `{k}` | `{t}` | `{d}` | {m} |" for k, t, d, m in top]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
