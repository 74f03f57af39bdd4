"""README.md and docs/*.md: every relative link and image exists (anchors included), every repository
path named in backticks or code blocks exists, and every `python -m X`, `python path.py` and
`bash path.sh` names a module or file that exists, with flags its source defines."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a backticked token is a repository path when it starts with one of these (runs/ and caches are made
# by the user; ../shared is the project's data, outside the repository)
TOP_LEVEL = {"app.py", "recon", "hub", "training", "benchmarks", "tests", "models", "examples", "docs",
             "requirements.txt", "requirements-dev.txt", "pyproject.toml", ".ci", "pytest.ini", "README.md"}
PLACEHOLDER = re.compile(r"[A-Z]{3,}")  # models/vgg16-LAYER, runs/eval-NAME
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)  # list items indent theirs
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"(?:^|[\s;&|(])(?:\S*/)?python3?(?: -[XW] \S+)* (-m ([\w.]+)|([\w./-]+\.py))"
                     r"|(?:^|[\s;&|(])bash ([\w./-]+\.sh)")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def inline_code(text: str) -> list[str]:
    return [" ".join(code.split()) for code in re.findall(r"`([^`]+)`", FENCE.sub("", text))]


def command_lines(text: str) -> list[str]:
    """Every line of every code block (continuation lines joined) and every inline code span."""
    lines = []
    for block in code_blocks(text):
        lines += block.replace("\\\n", " ").splitlines()
    return lines + inline_code(text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M)}


def link_problems(page: Path, text: str) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_and_image_exists(page):
    broken = link_problems(page, page.read_text())
    assert not broken, f"{page_id(page)}: {broken}"


def repo_paths(text: str) -> set[str]:
    tokens = set()
    for code in [*inline_code(text), *code_blocks(text)]:
        for token in code.split():
            token = token.strip("\"'()[],;:.").rstrip("/")
            first = token.split("/")[0]
            if first in TOP_LEVEL and ("/" in token or "." in first):  # not a bare word: "recon", "models"
                tokens.add(token)
    return tokens


def path_problems(text: str) -> list[str]:
    missing = []
    for token in sorted(repo_paths(text)):
        if "*" in token:
            if not list(ROOT.glob(token)):
                missing.append(token)
        elif not (ROOT / token).exists() and not PLACEHOLDER.search(token):
            missing.append(token)
    return missing


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repository_path_named_exists(page):
    missing = path_problems(page.read_text())
    assert not missing, f"{page_id(page)} names files that do not exist: {missing}"


def source_of(module: str | None, script: str | None) -> Path | None:
    """The file a command runs, in the repository; None for a module from elsewhere (pytest, venv)."""
    if script:
        return ROOT / script
    path = ROOT / module.replace(".", "/")
    for candidate in (path.with_suffix(".py"), path / "__main__.py"):
        if candidate.is_file():
            return candidate
    if path.is_dir() or path.parent.is_dir() and module.split(".")[0] in TOP_LEVEL:
        return path / "__main__.py"  # a package of ours without a __main__: reported missing
    return None


def flags_used(line: str, start: int) -> set[str]:
    """--flags of the command starting at `start`, up to a comment or the next command."""
    rest = re.split(r"\s#|&&|\|\||;|\s\|\s", line[start:])[0]
    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", rest)) - {"--help"}


def command_problems(text: str) -> list[str]:
    problems = []
    for line in command_lines(text):
        for match in COMMAND.finditer(line):
            _, module, script, shell = match.groups()
            if shell:
                if not (ROOT / shell).is_file():
                    problems.append(f"bash {shell}: no such file")
                continue
            source = source_of(module, script)
            if source is None:
                if importlib.util.find_spec(module) is None:
                    problems.append(f"python -m {module}: no such module")
                continue
            if not source.is_file():
                problems.append(f"{match.group(1)}: no {source.relative_to(ROOT)}")
                continue
            defined = source.read_text()
            unknown = [flag for flag in sorted(flags_used(line, match.end()))
                       if f'"{flag}"' not in defined and f"'{flag}'" not in defined]
            if unknown:
                problems.append(f"{match.group(1)}: {source.relative_to(ROOT)} defines no {unknown}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_command_names_a_module_or_file_that_exists_with_flags_it_defines(page):
    problems = command_problems(page.read_text())
    assert not problems, f"{page_id(page)}: {problems}"


def test_the_checks_catch_what_they_are_for():
    page = ROOT / "docs" / "page.md"
    text = """# Title
[ok](../README.md#tests) [gone](missing.md) [no heading](../README.md#nowhere) ![img](../no.png)
Run `python -m training.fit --data x --no-such-flag` or `python -m training.nothing`, then
`recon/nothing.py` and `models/vgg16-LAYER` (a placeholder).

  ```bash
  python benchmarks/nothing.py --data x
  bash training/nothing.sh
  ```
"""
    assert link_problems(page, text) == ["missing.md", "../README.md#nowhere (no such heading)", "../no.png"]
    assert path_problems(text) == ["benchmarks/nothing.py", "recon/nothing.py", "training/nothing.sh"]
    assert command_problems(text) == ["benchmarks/nothing.py: no benchmarks/nothing.py",
                                      "bash training/nothing.sh: no such file",
                                      "-m training.fit: training/fit.py defines no ['--no-such-flag']",
                                      "-m training.nothing: no training/nothing/__main__.py"]


def test_readme_stays_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    prose = [line for line in FENCE.sub("", text).splitlines() if not line.startswith("|")]
    assert len(" ".join(prose).split()) <= 1200  # five minutes at about 240 words a minute; tables are skimmed
    assert "python -m pytest -q" in text  # .ci/run runs the README's test command
    sections = {slug(s) for s in re.findall(r"^## (.+)$", FENCE.sub("", text), re.M)} - {"contents"}
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    assert sections <= set(re.findall(r"\]\(#([^)]+)\)", contents)), "a section missing from the contents list"
