"""The docs' command examples are produced by cniplug (docs/generate.py); fail when one is stale."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cniplug_docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = load_generator()
PAIRS = [(ROOT / "docs" / f"{name}.md", ROOT / "docs" / f"{name}.zh.md") for name in ("why-cni", "writing-a-plugin")]


def test_docs_are_current() -> None:
    diffs = generate.stale(root=False)
    assert not diffs, "docs are stale, run `python docs/generate.py`:\n" + "\n".join(diffs.values())


@pytest.mark.root
def test_shell_blocks_are_current() -> None:
    """The `shell` blocks run commands for real (namespaces, a bridge): root only, and CI runs as root."""
    assert sum(generate.count_shell_blocks(path.read_text()) for path in generate.DOCS) >= 8
    diffs = generate.stale(root=True)
    assert not diffs, "docs are stale, run `sudo python docs/generate.py`:\n" + "\n".join(diffs.values())


@pytest.mark.parametrize("en, zh", PAIRS, ids=[en.stem for en, _ in PAIRS])
def test_doc_pairs_have_the_same_generated_blocks(en: Path, zh: Path) -> None:
    n_en, n_zh = generate.count_blocks(en.read_text()), generate.count_blocks(zh.read_text())
    assert n_en >= 1, f"{en.name} has no generated block"
    assert n_zh >= 1, f"{zh.name} has no generated block"
    assert n_en == n_zh, f"{en.name} has {n_en} generated blocks, {zh.name} has {n_zh}"


def test_every_doc_is_checked() -> None:
    assert sorted(generate.DOCS) == sorted(p for pair in PAIRS for p in pair)


def test_a_stale_block_is_reported_with_a_diff(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text('<!-- cniplug-run: {"file": "pyproject.toml"} -->\n```\nold\n```\n<!-- /cniplug-run -->\n')
    diffs = generate.stale([doc])
    assert list(diffs) == [doc]
    assert "-old" in diffs[doc] and '+name = "cniplug"' in diffs[doc]
    doc.write_text(generate.regenerate(doc.read_text()))
    assert generate.stale([doc]) == {}


def test_shell_blocks_are_left_alone_off_root(tmp_path: Path) -> None:
    text = '<!-- cniplug-run: {"shell": ["echo hi"]} -->\n```console\nold\n```\n<!-- /cniplug-run -->\n'
    assert generate.regenerate(text, root=False) == text
    assert generate.count_shell_blocks(text) == 1


@pytest.mark.root
def test_a_shell_block_shows_each_command_and_its_output(tmp_path: Path) -> None:
    spec = {"shell": ["echo one; echo two >&2", "printf no-newline", "false; echo \"exit status $?\""],
            "cleanup": [f"rm -f {tmp_path}/x"]}
    assert generate.run_shell_block(spec) == ('$ echo one; echo two >&2\none\ntwo\n$ printf no-newline\nno-newline\n'
                                              '$ false; echo "exit status $?"\nexit status 1\n')
