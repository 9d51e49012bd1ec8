"""The one Jinja environment: every `{{ value }}` is shell-quoted, so no value can add a word or a command.

Autoescape is on with shell quoting in `finalize`: macro output and text marked `Raw` (trusted words such
as explanations) come back as Markup and pass unchanged; everything else is quoted with shlex.quote.
"""

from __future__ import annotations

import os
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from cniplug import i18n, rundir
from cniplug.script import LINE_BREAKS
from cniplug.spec import ERR_INVALID_CONFIG, CNIError

Raw = Markup  # trusted text that is inserted as is
BAD_CHARS = "\n\0" + LINE_BREAKS


def templates_dir() -> Path:
    """Inside the wheel the templates sit in cniplug/templates; in a checkout at the top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("cniplug templates not found")


def quote(value: Any) -> Markup:
    """One rendered value -> one shell word (shlex.quote), or trusted Markup unchanged.

    Raises CNIError 7 naming the value for a list/dict/None, and for a newline, NUL or any other line
    break str.splitlines() knows (script.LINE_BREAKS): in a comment it would otherwise start a command.
    """
    if isinstance(value, Markup):
        return value
    if value is None or isinstance(value, (list, dict, tuple)):
        raise CNIError(ERR_INVALID_CONFIG, f"cannot render value {value!r} as one shell word")
    text = str(value)
    if any(c in BAD_CHARS for c in text):
        raise CNIError(ERR_INVALID_CONFIG, f"value {text!r} contains a newline, NUL or other line break")
    if text == "!":  # iptables negation; plain in a script (history expansion is interactive only)
        return Markup(text)
    return Markup(shlex.quote(text))


def argv(words: list[Any]) -> Markup:
    """Filter: a list of words -> one quoted command prefix, e.g. `{{ ns_ip | argv }}`."""
    return Markup(" ".join(quote(w) for w in words))


def bytecode_cache() -> FileSystemBytecodeCache | None:
    """Compiled templates, kept between runs (compiling costs ~35 ms a run).

    The cache holds code, so it is used only in a directory that root owns and no one else can write
    (rundir.ensure makes /run/cniplug/jinja so, or refuses); None (no cache) otherwise.
    """
    if os.geteuid() != 0:
        return None
    try:
        return FileSystemBytecodeCache(rundir.ensure("jinja"))
    except OSError:
        return None


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir())),
        bytecode_cache=bytecode_cache(),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=True,
        finalize=quote,
    )
    env.filters["argv"] = argv
    env.globals["say"] = lambda key, lang="en", **kw: Markup(i18n.say(key, lang, **kw))
    return env


def compile_all() -> int:
    """Compile every template into this environment (and, as root, into the bytecode cache, so that a
    plugin call never compiles one: `cniplug install` does this, issue #14 item 2); how many. Raises
    jinja2.TemplateSyntaxError for a broken template."""
    root = templates_dir()
    names = sorted(path.relative_to(root).as_posix() for path in root.rglob("*.j2"))
    for name in names:
        environment().get_template(name)
    return len(names)


def forget_compiled(templates: Path) -> None:
    """Take out of the bytecode cache what compile_all put there for the templates under `templates` (a
    self-contained runtime an upgrade removes: its keys name its directory, and /run is memory)."""
    bcc = bytecode_cache()
    if bcc is None or not templates.is_dir():
        return
    templates = templates.resolve()  # as templates_dir() names them
    loader = FileSystemLoader(str(templates))
    for path in templates.rglob("*.j2"):
        name = path.relative_to(templates).as_posix()
        filename = loader.get_source(environment(), name)[1]
        Path(bcc.directory, bcc.pattern % bcc.get_cache_key(name, filename)).unlink(missing_ok=True)


def render(template: str, **context: Any) -> str:
    text = str(environment().get_template(template).render(**context))
    # Tidy the layout the template logic leaves behind: no blank line before an #undo, at most one
    # blank line in a row, none at the start.
    text = re.sub(r"\n\s*\n(?=#undo )", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).lstrip("\n")
    return text.rstrip("\n") + "\n" if text.strip() else ""
