"""Unit tier: house rules of issue #16 that the linters do not check. Every module is small
enough to read in one sitting, and workflows call activities by reference to their method
(`workflow.execute_activity_method(PlatformActivities.link_member, ...)`), never by a
name in a string, so the type checker follows a rename."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
# Directories whose Python files are not ours to keep small: tests, generated revisions.
EXEMPT_DIRS = {"tests", "migrations"}
SKIPPED = {"__pycache__", "build", "test-artifacts"}
ACTIVITY_CALLS = {"execute_activity", "execute_local_activity", "start_activity",
                  "start_local_activity"}


def python_files() -> list[Path]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0] in EXEMPT_DIRS or any(
                p.startswith(".") or p in SKIPPED or p.endswith(".egg-info") for p in parts):
            continue
        found.append(path)
    return found


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def activities_called_by_name(source: str) -> list[tuple[int, str]]:
    """(line, call) of every activity call whose activity is a string: a literal or an
    f-string, passed first or as `activity=`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else \
            func.id if isinstance(func, ast.Name) else None
        if name not in ACTIVITY_CALLS:
            continue
        first = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "activity"), None)
        if isinstance(first, ast.JoinedStr) or (
                isinstance(first, ast.Constant) and isinstance(first.value, str)):
            found.append((node.lineno, ast.unparse(node)[:80]))
    return found


def test_no_module_is_over_400_lines() -> None:
    files = python_files()
    assert ROOT / "worker.py" in files and ROOT / "workflows" / "domain.py" in files
    offenders = [f"{p.relative_to(ROOT).as_posix()}: {n} lines" for p in files
                 if (n := line_count(p)) > MAX_LINES]
    assert not offenders, (f"over {MAX_LINES} lines (split along the module's structure):\n"
                           + "\n".join(offenders))


def test_workflows_call_activities_by_reference() -> None:
    modules = sorted((ROOT / "workflows").rglob("*.py"))
    assert ROOT / "workflows" / "v1" / "bookkeeping.py" in modules
    offenders = [f"{p.relative_to(ROOT).as_posix()}:{line}: {call}" for p in modules
                 for line, call in activities_called_by_name(p.read_text(encoding="utf-8"))]
    assert not offenders, ("activities called by name; call the method instead "
                           "(workflow.execute_activity_method(Activities.method, ...)):\n"
                           + "\n".join(offenders))


def test_a_call_by_name_is_found() -> None:
    source = '''
async def run(self, x):
    await workflow.execute_activity("record_status", x, start_to_close_timeout=t)
    await workflow.execute_local_activity(f"transfer_{x}", x)
    await workflow.start_activity(activity="finalise", arg=x)
    await execute_activity("send_email", x)
    await workflow.execute_activity_method(PlatformActivities.record_status, x)
    await workflow.execute_activity(bare_step, x)
'''
    assert [line for line, _ in activities_called_by_name(source)] == [3, 4, 5, 6]


def test_scripts_importing_the_old_models_package_still_work() -> None:
    """models/ moved by concern (README, "Changes"): an old import loads the same module
    from its new place, and says where it went."""
    import subprocess
    import sys

    code = ("import warnings\n"
            "warnings.simplefilter('error')\n"
            "try:\n"
            "    import models.payloads\n"
            "except DeprecationWarning as w:\n"
            "    print(w)\n"
            "warnings.simplefilter('ignore')\n"
            "from models.payloads import AcceptRequest\n"
            "from models import seed\n"
            "import messages.payloads, demo.seed\n"
            "print(AcceptRequest is messages.payloads.AcceptRequest, seed is demo.seed)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    assert out[:2] == ["models.payloads moved to messages.payloads", "True True"]
