"""Licence, citation and CI files agree with the project and with each other."""

import re

import yaml

from kd_utils import paths

ROOT = paths.repo_root()
DOI = "10.1016/j.compbiomed.2022.105581"


def test_licence_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 kd-melanoma contributors" in text


def test_citation_cites_this_repository_and_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["repository-code"] == paths.REPO_URL
    assert cff["license"] == "MIT"
    (paper,) = cff["references"]
    assert paper["doi"] == DOI
    assert [a["family-names"] for a in paper["authors"]] == ["Khan", "Alam", "Dhruba", "Zunair", "Mohammed"]
    assert (paper["journal"], paper["volume"], paper["start"], paper["year"]) == (
        "Computers in Biology and Medicine", 146, "105581", 2022)


def test_readme_links_the_paper_and_carries_its_bibtex():
    readme = (ROOT / "README.md").read_text()
    assert f"https://doi.org/{DOI}" in readme
    bibtex = re.search(r"```bibtex\n(.*?)```", readme, re.S).group(1)
    assert f"doi     = {{{DOI}}}" in bibtex and "volume  = {146}" in bibtex
    assert f"url     = {{{paths.REPO_URL}}}" in bibtex
    badge = f"{paths.REPO_URL}/actions/workflows/ci.yml/badge.svg"
    assert badge in readme


def broken_links(markdown_file):
    """The relative links of a Markdown file (anchors aside) that name no file or folder."""
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown_file.read_text())
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)]
    return [t for t in local if not (markdown_file.parent / t).exists()]


def test_the_documents_relative_links_resolve(tmp_path):
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/README.md")),
                 *sorted(ROOT.glob("results/*/README.md"))]
    broken = {path: broken_links(path) for path in documents}
    assert {path: links for path, links in broken.items() if links} == {}
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md#top) [web](https://example.org) [gone](results/moved/) [here](#a)")
    assert broken_links(page) == ["results/moved/"]


def test_ci_runs_the_one_script_on_the_promised_pythons():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    jobs = workflow["jobs"]
    assert jobs["tests"]["strategy"]["matrix"]["python-version"] == ["3.10", "3.13"]
    for job in jobs.values():
        assert job["timeout-minutes"] > 0
        runs = [step["run"] for step in job["steps"] if "run" in step]
        assert runs == [".ci/run"]
        setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
        assert setup["with"]["cache"] == "pip"
    assert jobs["colab-versions"]["env"]["KD_CI_CONSTRAINTS"] == ".ci/colab-versions.txt"
    script = (ROOT / ".ci" / "run").read_text()
    assert "--nbval-cell-timeout" in script
    readme = (ROOT / "README.md").read_text()
    assert "--nbval-cell-timeout=900 notebooks/" in readme and "KD_NBVAL_CELL_TIMEOUT:-900" in script


def test_lower_bounds_are_the_tested_colab_versions_and_tensorflow_is_not_capped():
    pins = dict(re.findall(r"^(\w+)==([\d.]+)\.\*$", (ROOT / ".ci" / "colab-versions.txt").read_text(), re.M))
    assert set(pins) == {"tensorflow", "keras", "numpy"}
    for path in ("requirements.txt", "pyproject.toml", "environment.yml"):
        text = (ROOT / path).read_text()
        for name, version in pins.items():
            assert re.search(rf"\b{name}>={re.escape(version)}\b", text), (path, name)
        assert not re.search(r"tensorflow[^\n]*<", text), path


def _imports_between_modules(package) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top or inside a
    function; modules of a subpackage by dotted name (``experiments.pipeline``)."""
    import ast

    def name(path):
        return ".".join(path.relative_to(package).with_suffix("").parts)

    modules = {name(p) for p in package.rglob("*.py") if p.stem != "__init__"}
    graph = {}
    for path in package.rglob("*.py"):
        if path.stem == "__init__":
            continue
        here = name(path).split(".")[:-1]  # the importing module's subpackage, [] in the core
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[:len(here) - (node.level - 1)]
                if node.module:
                    found.add(".".join(base + node.module.split(".")))
                found.update(".".join(base + (node.module.split(".") if node.module else []) + [a.name])
                             for a in node.names)
        graph[name(path)] = found & modules - {name(path)}
    return graph


def _cycles(graph) -> list[list[str]]:
    found, state, path = [], {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                found.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    """No import cycle in kd_utils, imports inside functions included."""
    graph = _imports_between_modules(ROOT / "kd_utils")
    assert "experiments.pipeline" in graph and "tools.commands" in graph["__main__"]
    assert _cycles(graph) == []


def test_the_core_imports_neither_experiments_nor_tools_and_experiments_no_tools():
    """The three parts of kd_utils, each built only on those before it."""
    def part(module):
        return module.split(".")[0] if "." in module else ("tools" if module == "__main__" else "core")

    order = {"core": 0, "experiments": 1, "tools": 2}
    upward = [(m, other) for m, found in _imports_between_modules(ROOT / "kd_utils").items() for other in found
              if order[part(other)] > order[part(m)]]
    assert upward == []


def test_every_module_is_on_the_map():
    """docs/design.md's table and the package docstring name every module of kd_utils."""
    import kd_utils

    design = (ROOT / "docs" / "design.md").read_text()
    for path in sorted((ROOT / "kd_utils").rglob("*.py")):
        if path.stem != "__init__":
            assert f"| `{path.stem}` |" in design, f"{path.stem} is missing from docs/design.md"
            assert f"``{path.stem}``" in kd_utils.__doc__, f"{path.stem} is missing from kd_utils' docstring"
    for part in ("experiments", "tools"):
        assert f"kd_utils.{part}" in design and f"``kd_utils.{part}``" in kd_utils.__doc__
