#!/usr/bin/env python3
"""Renders the spike:host WIT package (wit/*.wit) as docs/wit-reference.md:
each world and interface with its doc comments, then each type, field,
case and function with its own, in the order the files have them.

    python3 scripts/wit-reference.py           # writes the page
    python3 scripts/wit-reference.py --check   # fails if the page is stale (./dev.sh test)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "wit-reference.md"

# An item that opens a block, or a one-line item, after its doc comments.
BLOCK = re.compile(r"^(world|interface|record|resource|variant|enum|flags)\s+([\w-]+)\s*\{")
FUNC = re.compile(r"^([\w-]+):\s*(static\s+)?func(.*?);?$")
CTOR = re.compile(r"^(constructor)(\(.*\));$")
MEMBER = re.compile(r"^([\w-]+)(?::\s*(.+?)|\((.+)\))?,?$")
WORLD_LINE = re.compile(r"^(import|export|include)\s+(.+);$")


def render(path):
    out = []
    docs = []
    stack = []  # kinds of the open blocks
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("///"):
            docs.append(line[3:].strip())
            continue
        text = " ".join(docs).strip()
        docs = []
        if not line or line.startswith("//") or line.startswith("package") or line.startswith("use "):
            continue
        if line.startswith("}"):
            if stack:
                stack.pop()
            continue
        m = BLOCK.match(line)
        if m:
            kind, name = m.groups()
            if kind in ("world", "interface"):
                out.append(f"\n## {kind} `{name}`\n")
            else:
                out.append(f"\n### {kind} `{name}`\n")
            if text:
                out.append(text + "\n")
            if line.endswith("}"):
                continue
            stack.append(kind)
            continue
        parent = stack[-1] if stack else None
        m = FUNC.match(line) or CTOR.match(line)
        if m:
            if m.re is CTOR:
                signature = f"constructor{m.group(2)}"
            else:
                name, static, rest = m.groups()
                signature = f"{'static ' if static else ''}{name}: func{rest}"
            level = "####" if parent == "resource" else "###"
            out.append(f"\n{level} `{signature.rstrip(';')}`\n")
            if text:
                out.append(text + "\n")
            continue
        m = WORLD_LINE.match(line)
        if m:
            out.append(f"- {m.group(1)} `{m.group(2)}`" + (f": {text}" if text else ""))
            continue
        m = MEMBER.match(line)
        if m and parent in ("record", "variant", "enum", "flags"):
            name, ty, payload = m.groups()
            ty = ty or payload
            shown = f"`{name}`" + (f" (`{ty}`)" if ty else "")
            out.append(f"- {shown}" + (f": {text}" if text else ""))
            continue
        if line.startswith("type "):
            out.append(f"\n### `{line.rstrip(';')}`\n")
            if text:
                out.append(text + "\n")
    return "\n".join(out)


def page():
    parts = [
        "# The `spike:host` WIT package\n",
        "What a plugin imports from spike and what it may export, rendered from",
        "`wit/*.wit` by `scripts/wit-reference.py` (`./dev.sh test` checks that",
        "this page is current). The standard WASI 0.2 packages a plugin also gets",
        "are in `wit/deps/`. A capability is refused unless the plugin's manifest",
        "grants it (README, \"Capabilities\").\n",
    ]
    files = sorted(ROOT.glob("wit/*.wit"), key=lambda p: (p.name != "worlds.wit", p.name))
    for path in files:
        parts.append(f"\n---\n\n`wit/{path.name}`\n")
        parts.append(render(path))
    return "\n".join(parts).rstrip() + "\n"


def main():
    text = page()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python3 scripts/wit-reference.py", file=sys.stderr)
            sys.exit(1)
        return
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")


main()
