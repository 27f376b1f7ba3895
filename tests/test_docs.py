"""The README and docs/*.md: every relative link and #anchor lands, every `python train.py ...`
command they show composes (or, for the documented refusals, is refused), and the README stays a
short first read."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mnist99.config import compose_checked, register_resolvers
from mnist99.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 250

# Commands the docs show as examples of refused input: each must be refused by the start-up checks.
# Matched on the overrides alone (the command with `python train.py` and options stripped).
REFUSED = {
    ("optimizer.lr=-1",),
    ("optimizer.lrr=0.1",),
    ("model=resnet81",),
    ("modle=cnn",),
    ("experiment=fats",),
}

register_resolvers()


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ---------------------------------------------------------------------------------------------
# Markdown structure: fenced blocks, headings, links


FENCE = re.compile(r"^\s*(```|~~~)")


def split_fenced(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, code lines) as (1-based line number, line), fenced blocks being code."""
    prose, code, inside = [], [], False
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        (code if inside else prose).append((n, line))
    return prose, code


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation other than - and _
    removed, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_fenced(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def strip_inline_code(line: str) -> str:
    return re.sub(r"`[^`]*`", "", line)


def links() -> list[tuple[Path, int, str]]:
    out = []
    for path in DOCS:
        prose, _ = split_fenced(path.read_text(encoding="utf-8"))
        for n, line in prose:
            for m in LINK.finditer(strip_inline_code(line)):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                    continue
                out.append((path, n, target))
    return out


LINKS = links()


@pytest.mark.parametrize(("path", "line", "target"), LINKS, ids=[f"{rel(p)}:{n}:{t}" for p, n, t in LINKS])
def test_relative_link_resolves(path: Path, line: int, target: str):
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    where = f"{rel(path)}:{line}: [{target}]"
    assert dest.exists(), f"{where} points at {file_part}, which does not exist"
    if anchor:
        assert dest.suffix == ".md" and dest.is_file(), f"{where}: an #anchor into {dest.name}, which is not a Markdown file"
        found = anchors(dest)
        assert anchor in found, f"{where}: no heading with the anchor #{anchor} in {rel(dest)}; its anchors: {sorted(found)}"


def test_links_were_found():
    """The link check checks something: the README links to every docs page."""
    readme_targets = {t.partition("#")[0] for p, _, t in LINKS if p == README}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= readme_targets, f"docs pages the README does not link to: {sorted(pages - readme_targets)}"


def test_github_slug():
    assert github_slug("best: 99.7% from one model, in about 10 minutes on a Zen 5") == (
        "best-997-from-one-model-in-about-10-minutes-on-a-zen-5")
    assert github_slug("What changed, and why") == "what-changed-and-why"
    assert github_slug("The `model_checkpoint` key") == "the-model_checkpoint-key"


# ---------------------------------------------------------------------------------------------
# Commands


PLACEHOLDER = re.compile(r"<[^<>]*>")
ENTRY = re.compile(r"(?:python3? train\.py|mnist99-train)(?=\s|$)")


def command_texts(path: Path) -> list[tuple[int, str]]:
    """(line, command text after `python train.py`) for every train command in fenced blocks and
    inline code, continuation lines joined, comments and the rest of a shell line dropped."""
    text = path.read_text(encoding="utf-8")
    prose, code = split_fenced(text)
    found = []

    # fenced blocks: join `\` continuations, then every train command on the line
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    last = None
    for n, line in code:
        if pending is not None and last is not None and n != last + 1:  # a new block
            joined.append(pending)
            pending = None
        last = n
        start, body = pending if pending is not None else (n, "")
        if line.rstrip().endswith("\\"):
            pending = (start, body + line.rstrip()[:-1] + " ")
        else:
            joined.append((start, body + line))
            pending = None
    if pending is not None:
        joined.append(pending)
    for n, line in joined:
        for m in ENTRY.finditer(line):
            found.append((n, line[m.end():]))

    # inline code, which may wrap onto the next line of a paragraph
    prose_text = "\n".join(line for _, line in prose)
    line_of = [n for n, _ in prose]
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose_text):
        span = m.group(1)
        first = line_of[prose_text.count("\n", 0, m.start())]
        for e in ENTRY.finditer(span):
            found.append((first, span[e.end():].replace("\n", " ")))
    return found


def shell_words(rest: str) -> list[str] | None:
    """The command's words up to a comment or the end of its shell command (&&, ;, |, >)."""
    rest = PLACEHOLDER.sub("<placeholder>", rest)  # `<your folder>`: one word
    rest = re.split(r"\s(?:&&|\|\|?|;|>)\s", " " + rest + " ")[0]
    try:
        lexer = shlex.shlex(rest, posix=True, punctuation_chars=False)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError:  # an unbalanced quote: not a command
        return None


def top_level_split(value: str) -> list[str]:
    """A sweep value's items: commas outside brackets, braces, parentheses and quotes."""
    items, depth, quote, cur = [], 0, None, ""
    for ch in value:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += ch
    return [*items, cur]


# placeholders that stand for a value anyone could write: the folder of your own images, a seed
PLACEHOLDER_VALUES = {"data.data_dir": "/path/to/folder", "data.source": "/path/to/folder", "seed": "0"}


def overrides_of(words: list[str]) -> tuple[list[str] | None, str]:
    """(overrides to compose, why skipped when None) for a command's words after `train.py`."""
    multirun = False
    out: list[str] = []
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
            continue
        if word in ("-m", "--multirun"):
            multirun = True
            continue
        if word in ("--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-dir", "-cd"):
            skip_next = True
            continue
        if word.startswith("-"):  # --help, --info, ...
            continue
        if word in ("...", "…"):  # an elision in prose
            continue
        key, eq, value = word.partition("=")
        if not eq:
            return None, f"{word!r} is not an override"
        if key == "resume" or key == "resume_ckpt":
            return None, "resume= needs a finished run"
        if PLACEHOLDER.search(value) or value in ("N", "...", "…"):
            if key.lstrip("+") not in PLACEHOLDER_VALUES:
                return None, f"{word!r} is a placeholder"
            value = PLACEHOLDER_VALUES[key.lstrip("+")]
        if multirun:
            value = top_level_split(value)[0]
        out.append(f"{key}={value}")
    return out, ""


def train_commands() -> list[tuple[Path, int, str, list[str] | None, str]]:
    cmds = []
    architecture = ROOT / "docs" / "architecture.md"
    recipes = architecture.read_text().split("## Extending mnist99")[0].count("\n") + 1  # the recipes' first line
    for path in DOCS:
        for line, rest in command_texts(path):
            if path == architecture and line >= recipes:  # options the recipes add: tests/test_extending.py runs them
                cmds.append((path, line, rest, None, "a recipe's command, run by tests/test_extending.py with its files"))
                continue
            shown = " ".join(re.split(r"\s(?:#|&&|\|\|?|;)\s", " " + rest + " ")[0].split())  # as written
            words = shell_words(rest)
            if words is None:
                cmds.append((path, line, shown, None, "unbalanced quotes"))
                continue
            overrides, why = overrides_of(words)
            cmds.append((path, line, shown, overrides, why))
    return cmds


COMMANDS = train_commands()
_composed: dict[tuple[str, ...], str | None] = {}  # overrides -> None (composed) or the refusal


def refusal(overrides: list[str]) -> str | None:
    key = tuple(overrides)
    if key not in _composed:
        try:
            compose_checked(list(overrides), check_data=False)  # the folders a page names are not on this machine
            _composed[key] = None
        except ConfigError as e:
            _composed[key] = str(e)
    return _composed[key]


@pytest.mark.parametrize(
    ("path", "line", "command", "overrides", "why"),
    COMMANDS,
    ids=[f"{rel(p)}:{n}:{c[:80]}" for p, n, c, _, _ in COMMANDS],
)
def test_documented_command_composes(path: Path, line: int, command: str, overrides: list[str] | None, why: str, monkeypatch):
    where = f"{rel(path)}:{line}: python train.py {command}"
    if overrides is None:
        pytest.skip(f"{where}: {why}")
    allowed = re.search(r"\bMNIST99_ALLOW_TARGETS=(\S+)\s+python train\.py", path.read_text().splitlines()[line - 1])
    if allowed:  # a command that allows a target of the user's own: composed with that allowance
        monkeypatch.setenv("MNIST99_ALLOW_TARGETS", allowed.group(1))
        _composed.pop(tuple(overrides), None)
    said = refusal(overrides)
    if allowed:
        _composed.pop(tuple(overrides), None)
    if tuple(overrides) in REFUSED:
        assert said is not None, f"{where} is documented as refused input, but it composes"
        return
    if said is not None and ("no CUDA device" in said or "CPU processes" in said and "this machine has" in said):
        return  # GPUs asked for (or meant: trainer.devices=4) on a machine without them: everything else composed
    assert said is None, f"{where} does not compose with {overrides}: {said}"


def test_commands_were_found():
    """The command check checks something: the README's own commands are among them."""
    readme = [c for p, _, c, o, _ in COMMANDS if p == README and o is not None]
    assert len(readme) >= 5, readme
    assert len([c for c in COMMANDS if c[3] is not None]) >= 50


def test_refused_examples_are_documented_or_known():
    """Every example of refused input in REFUSED is a command the docs show (and is checked as refused)."""
    shown = {tuple(o) for _, _, _, o, _ in COMMANDS if o is not None}
    assert REFUSED - shown == set(), "refused-input examples no page shows any more"


def test_sweep_values_take_the_first_item():
    assert overrides_of(["-m", "model=linear,mlp,cnn", "model.net.widths=[32,64,128]"])[0] == [
        "model=linear", "model.net.widths=[32,64,128]"]
    assert overrides_of(["model.net.widths=[32,64,128]"])[0] == ["model.net.widths=[32,64,128]"]
    assert overrides_of(["resume=outputs/runs/x"])[0] is None


# ---------------------------------------------------------------------------------------------
# The README


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}: move detail to docs/"


def test_readme_has_no_placeholders():
    text = README.read_text(encoding="utf-8")
    for phrase in ("not measured", "TODO", "TBD"):
        assert phrase not in text, f"README.md says {phrase!r}"
