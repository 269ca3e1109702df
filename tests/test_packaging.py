"""The release machinery: what is built, what is checked, and how it is published.

The fast tests read the release files (the publish and CI workflows, Read the Docs,
pre-commit, Dependabot) and check the promises docs/contributing.md makes about them: a version
tag publishes, the distributions are built once and checked before upload, only the publish job
gets an OIDC token. They also test the two scripts of ``.ci/`` the workflows run. The slow test
builds the sdist and the wheel as the publish workflow does and checks what they hold.
"""

from __future__ import annotations

import configparser
import importlib.util
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import aiolmdb

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
PUBLISH = WORKFLOWS / "publish.yml"
BUILD_TIMEOUT = 300.0


def load_script(name: str) -> ModuleType:
    """A script of ``.ci/`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"ci_{name}", ROOT / ".ci" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_version = load_script("check_version")
check_dist = load_script("check_dist")


def load_yaml(path: Path) -> Any:
    """A YAML file, parsed as GitHub and Read the Docs parse it (safe loader)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def triggers(workflow: dict[Any, Any]) -> Any:
    """A workflow's ``on:``: YAML 1.1 (PyYAML) reads the bare key ``on`` as the boolean True."""
    return workflow["on"] if "on" in workflow else workflow[True]


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's steps."""
    result: list[dict[str, Any]] = job["steps"]
    return result


def runs(step: dict[str, Any]) -> str:
    """The shell command of a step ('' for a step that uses an action)."""
    return str(step.get("run", ""))


def index_of(job: dict[str, Any], pattern: str) -> int:
    """The position of the one step of a job whose command or action matches ``pattern``."""
    found = [
        i
        for i, step in enumerate(steps(job))
        if re.search(pattern, runs(step)) or re.search(pattern, str(step.get("uses", "")))
    ]
    assert len(found) == 1, f"{len(found)} steps match {pattern!r}, expected one"
    return found[0]


# ------------------------------------------------------------------ the publish workflow


@pytest.fixture(scope="module")
def publish() -> dict[Any, Any]:
    """The publish workflow, parsed."""
    workflow: dict[Any, Any] = load_yaml(PUBLISH)
    return workflow


def test_publish_runs_on_version_tags_only(publish: dict[Any, Any]) -> None:
    """Pushing a tag ``v*`` publishes; nothing else (a branch, a pull request) starts it."""
    assert triggers(publish) == {"push": {"tags": ["v*"]}}


def test_publish_builds_once_and_checks_before_upload(publish: dict[Any, Any]) -> None:
    """One step builds; the version, the contents and twine check run after it, before upload."""
    jobs = publish["jobs"]
    assert set(jobs) == {"build", "publish"}
    every_step = [step for job in jobs.values() for step in steps(job)]
    builds = [step for step in every_step if re.search(r"\bpython -m build\b", runs(step))]
    assert len(builds) == 1, "the distributions must be built exactly once"
    build = jobs["build"]
    built = index_of(build, r"\bpython -m build\b")
    upload = index_of(build, r"^actions/upload-artifact@")
    for check in (
        r"\.ci/check_version\.py \"\$TAG\" dist/\*",
        r"\.ci/check_dist\.py dist/\*",
        r"\btwine check --strict dist/\*",
    ):
        assert built < index_of(build, check) < upload, check
    # The tag reaches the shell through the environment, never pasted into the script.
    version_step = steps(build)[index_of(build, r"check_version")]
    assert version_step["env"] == {"TAG": "${{ github.ref_name }}"}
    assert steps(build)[upload]["with"]["path"] == "dist/"


def test_publish_uploads_what_was_built(publish: dict[Any, Any]) -> None:
    """The publish job needs the build, downloads its artifact and runs no command of its own."""
    build, job = publish["jobs"]["build"], publish["jobs"]["publish"]
    assert job["needs"] == "build"
    assert [runs(step) for step in steps(job)] == ["", ""], "the publish job runs no command"
    download = steps(job)[index_of(job, r"^actions/download-artifact@")]
    upload = steps(build)[index_of(build, r"^actions/upload-artifact@")]
    assert download["with"]["name"] == upload["with"]["name"]
    assert download["with"]["path"] == "dist/"
    assert index_of(job, r"^actions/download-artifact@") < index_of(job, r"gh-action-pypi-publish")


def test_publish_uses_trusted_publishing(publish: dict[Any, Any]) -> None:
    """Only the publish job gets an OIDC token, in environment ``pypi``; no token is passed."""
    assert publish["permissions"] == {"contents": "read"}
    job = publish["jobs"]["publish"]
    assert job["permissions"] == {"id-token": "write"}
    assert job["environment"]["name"] == "pypi"
    assert "permissions" not in publish["jobs"]["build"]
    step = steps(job)[index_of(job, r"gh-action-pypi-publish")]
    assert step["uses"] == "pypa/gh-action-pypi-publish@release/v1"
    assert "password" not in step.get("with", {})
    assert "secrets." not in PUBLISH.read_text(encoding="utf-8")


def test_publish_pins_its_actions(publish: dict[Any, Any]) -> None:
    """The job that can publish runs actions at fixed commits (the PyPA action at release/v1)."""
    uses = [
        step["uses"] for job in publish["jobs"].values() for step in steps(job) if "uses" in step
    ]
    assert uses
    for action in uses:
        if action.startswith("pypa/gh-action-pypi-publish@"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action
    # Each pin says which release it is, for the reader and for Dependabot's PRs.
    text = PUBLISH.read_text(encoding="utf-8")
    for sha in re.findall(r"@([0-9a-f]{40})", text):
        assert re.search(rf"@{sha} # v\d+\.\d+\.\d+$", text, re.MULTILINE), sha


def test_workflows_run_scripts_that_exist() -> None:
    """Every ``.ci/`` script a workflow runs is in the repository."""
    named = set()
    for path in WORKFLOWS.glob("*.yml"):
        named |= set(re.findall(r"\.ci/[\w.-]+", path.read_text(encoding="utf-8")))
    assert ".ci/check_version.py" in named
    for script in named:
        assert (ROOT / script).is_file(), script


# ------------------------------------------------------------------ CI and the other files


def supported_pythons() -> set[str]:
    """The Python versions pyproject.toml's classifiers name (``3.10`` ...)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return set(re.findall(r'"Programming Language :: Python :: (3\.\d+)"', text))


def test_ci_tests_every_supported_python() -> None:
    """CI runs on pushes and pull requests, over the classifiers' Python versions, as tox."""
    ci = load_yaml(WORKFLOWS / "ci.yml")
    assert {"push", "pull_request"} <= set(triggers(ci))
    pythons = supported_pythons()
    assert pythons >= {"3.10", "3.11", "3.12", "3.13"}
    assert set(ci["jobs"]["test"]["strategy"]["matrix"]["python"]) == pythons
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    envs = {e.strip() for e in tox["tox"]["env_list"].split(",")}
    assert {f"py{v.replace('.', '')}" for v in pythons} <= envs


def test_readthedocs_builds_the_sphinx_site() -> None:
    """Read the Docs: config v2, Python 3.12 on Ubuntu 24.04, docs/conf.py, warnings fail."""
    rtd = load_yaml(ROOT / ".readthedocs.yaml")
    assert rtd["version"] == 2
    # A string: unquoted, YAML would read 3.10 as the number 3.1.
    assert rtd["build"] == {"os": "ubuntu-24.04", "tools": {"python": "3.12"}}
    assert rtd["sphinx"] == {"configuration": "docs/conf.py", "fail_on_warning": True}
    assert (ROOT / rtd["sphinx"]["configuration"]).is_file()
    assert rtd["python"]["install"] == [
        {"method": "pip", "path": ".", "extra_requirements": ["docs"]}
    ]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^docs = \[.*"sphinx', pyproject, re.MULTILINE), "no docs extra with sphinx"


def test_pre_commit_runs_what_make_lint_and_type_run() -> None:
    """ruff (lint and format) on `make lint`'s folders, and mypy with pyproject's file list."""
    config = load_yaml(ROOT / ".pre-commit-config.yaml")
    repos = {repo["repo"]: repo for repo in config["repos"]}
    ruff = repos["https://github.com/astral-sh/ruff-pre-commit"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", ruff["rev"])
    hooks = {hook["id"]: hook for hook in ruff["hooks"]}
    assert set(hooks) == {"ruff-check", "ruff-format"}
    lint = re.search(r"ruff check ([\w ]+)\n", (ROOT / "Makefile").read_text(encoding="utf-8"))
    assert lint is not None
    folders = lint.group(1).split()
    for hook in hooks.values():
        assert hook["files"] == f"^({'|'.join(folders)})/"
    (mypy,) = repos["local"]["hooks"]
    assert mypy["id"] == "mypy"
    assert mypy["entry"] == "mypy"
    assert mypy["language"] == "system"
    # Without file names mypy checks pyproject's `files`, as `make type` does.
    assert mypy["pass_filenames"] is False


def test_dependabot_updates_actions_and_pip_weekly() -> None:
    """Dependabot: the workflows' actions and pyproject's Python dependencies, weekly."""
    config = load_yaml(ROOT / ".github" / "dependabot.yml")
    assert config["version"] == 2
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) == {"github-actions", "pip"}
    for update in updates.values():
        assert update["directory"] == "/"
        assert update["schedule"]["interval"] == "weekly"


# ------------------------------------------------------------------ .ci/check_version.py


def make_project(root: Path, version: str, module_line: str | None) -> Path:
    """A minimal source tree: pyproject.toml with ``version``, ``aiolmdb/__init__.py``."""
    (root / "aiolmdb").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "aiolmdb"\nversion = "{version}"\n')
    body = '"""Package."""\n' + (f"{module_line}\n" if module_line else "")
    (root / "aiolmdb" / "__init__.py").write_text(body)
    return root


def test_check_version_accepts_this_repository() -> None:
    """The real sources agree with each other under the tag of their version."""
    assert check_version.check(f"v{aiolmdb.__version__}") == []
    assert check_version.pyproject_version(ROOT) == aiolmdb.__version__


def test_check_version_accepts_a_matching_release(tmp_path: Path) -> None:
    """Tag, pyproject, __version__ and the dist file names all say 1.0.0rc1."""
    root = make_project(tmp_path, "1.0.0rc1", '__version__ = "1.0.0rc1"')
    dists = ["dist/aiolmdb-1.0.0rc1-py3-none-any.whl", "dist/aiolmdb-1.0.0rc1.tar.gz"]
    assert check_version.check("v1.0.0rc1", root, dists) == []


@pytest.mark.parametrize(
    ("tag", "version", "module_line", "dists", "expected"),
    [
        ("v1.0.1", "1.0.0", '__version__ = "1.0.0"', [], r"tag 'v1.0.1' does not match.*'v1.0.0'"),
        ("1.0.0", "1.0.0", '__version__ = "1.0.0"', [], r"tag '1.0.0' does not match"),
        ("v1.0.0", "1.0.0", '__version__ = "0.9.0"', [], r"__version__ is '0.9.0'.*'1.0.0'"),
        ("v1.0.0", "1.0.0", None, [], r"__version__ is None"),
        (
            "v1.0.0",
            "1.0.0",
            '__version__ = "1.0.0"',
            ["a-0.9.0.tar.gz"],
            r"built as version '0.9.0'",
        ),
        ("v1.0.0", "1.0.0", '__version__ = "1.0.0"', ["a-1.0.0.zip"], r"not a wheel or an sdist"),
        ("v1.0-rc1", "1.0-rc1", '__version__ = "1.0-rc1"', [], r"not normalized \('1.0rc1'\)"),
        ("v1.0.x", "1.0.x", '__version__ = "1.0.x"', [], r"not a PEP 440 version"),
    ],
)
def test_check_version_reports_each_mismatch(
    tmp_path: Path,
    tag: str,
    version: str,
    module_line: str | None,
    dists: list[str],
    expected: str,
) -> None:
    """Each disagreement is one problem that names what disagrees."""
    root = make_project(tmp_path, version, module_line)
    problems = check_version.check(tag, root, dists)
    assert len(problems) == 1, problems
    assert re.search(expected, problems[0]), problems[0]


def test_check_version_command(capsys: pytest.CaptureFixture[str]) -> None:
    """Exit status 0 when the tag matches, 1 with the problem when not, 2 without a tag."""
    assert check_version.main([f"v{aiolmdb.__version__}"]) == 0
    assert check_version.main(["v0.0.0.dev0"]) == 1
    assert "does not match" in capsys.readouterr().err
    assert check_version.main([]) == 2
    assert "Usage" in capsys.readouterr().err


# ------------------------------------------------------------------ .ci/check_dist.py


def test_check_dist_rejects_a_wheel_with_more_than_the_library(tmp_path: Path) -> None:
    """A wheel holding tests, without py.typed and license metadata, has each problem named."""
    wheel = tmp_path / "aiolmdb-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("aiolmdb/__init__.py", "")
        zf.writestr("tests/test_x.py", "")
        zf.writestr("aiolmdb/tests/helper.py", "")
        zf.writestr("aiolmdb-1.0.0.dist-info/METADATA", "Metadata-Version: 2.4\nName: aiolmdb\n")
    problems = "\n".join(check_dist.check_wheel(str(wheel)))
    assert "tests/test_x.py: outside the aiolmdb package" in problems
    assert "aiolmdb/tests/helper.py: not part of the library" in problems
    assert "aiolmdb/py.typed is missing" in problems
    assert "licenses/LICENSE is missing" in problems
    assert "License-Expression is None" in problems


# ------------------------------------------------------------------ the built distributions


@pytest.mark.slow
def test_built_distributions_hold_the_library(tmp_path: Path) -> None:
    """``python -m build`` (sdist, then the wheel from it): the wheel is the package only."""
    pytest.importorskip("build", reason="the `build` package is not installed (test extra)")
    pytest.importorskip("twine", reason="the `twine` package is not installed (test extra)")
    out = tmp_path / "dist"
    command = [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)]
    if importlib.util.find_spec("hatchling") is not None:
        # The backend is here: build without downloading it into an isolated environment.
        command.insert(3, "--no-isolation")
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stdout}\n{proc.stderr}"
    version = aiolmdb.__version__
    wheel = out / f"aiolmdb-{version}-py3-none-any.whl"
    sdist = out / f"aiolmdb-{version}.tar.gz"
    assert sorted(out.iterdir()) == sorted([wheel, sdist])

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(f"aiolmdb-{version}.dist-info/entry_points.txt").decode()
    dist_info = f"aiolmdb-{version}.dist-info/"
    package = sorted(n for n in names if not n.startswith(dist_info))
    source = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "aiolmdb").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert package == source, "the wheel holds exactly the files of aiolmdb/"
    assert "aiolmdb/py.typed" in package
    assert {n for n in names if n.startswith(dist_info)} == {
        f"{dist_info}{n}"
        for n in ("METADATA", "WHEEL", "RECORD", "entry_points.txt", "licenses/LICENSE")
    }
    assert "aiolmdb = aiolmdb.__main__:main" in entry_points

    with tarfile.open(sdist) as tf:
        members = tf.getnames()
        pkg_info = tf.extractfile(f"aiolmdb-{version}/PKG-INFO")
        assert pkg_info is not None
        metadata = pkg_info.read().decode()
    assert all(m.startswith(f"aiolmdb-{version}/") for m in members)
    inside = {m.removeprefix(f"aiolmdb-{version}/") for m in members}
    for required in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "tests/conftest.py"):
        assert required in inside, required
    assert {f"aiolmdb-{version}/{n}" for n in source} <= set(members)
    assert re.search(rf"^Version: {re.escape(version)}$", metadata, re.MULTILINE)
    assert not [m for m in inside if m.startswith((".venv/", ".tox/")) or "__pycache__" in m]

    # The workflow's own checks pass on what was built.
    dists = [str(wheel), str(sdist)]
    assert check_dist.main(dists) == 0
    assert check_version.check(f"v{version}", ROOT, dists) == []
    twine = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *dists],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert twine.returncode == 0, f"twine check failed:\n{twine.stdout}\n{twine.stderr}"
