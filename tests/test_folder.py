"""The folder module: one scan sorts the entries by state, and every name change goes through it."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import turbo_queue
from turbo_queue import _naming
from turbo_queue._folder import Folder

PACKAGE = Path(turbo_queue.__file__).parent


def test_scan_sorts_every_entry_by_state(tmp_path):
    owner = _naming.make_owner()
    names = {
        "ready": [_naming.BatchName(_naming.READY, 10**18 + k, k, 1, owner).name() for k in (3, 1, 2)],
        "loading": [_naming.BatchName(_naming.LOADING, 10**18, 9, 1, owner).name()],
    }
    names["claimed"] = [_naming.claimed_name(owner, names["ready"][0].replace("3_", "4_", 1))]
    other = ["notes.txt", "r_x.tmp", "batch.tqb"]
    for name in [*names["ready"], *names["loading"], *names["claimed"], *other, "CLOSED"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "aside").mkdir()
    scan = Folder(str(tmp_path)).scan()
    assert scan.ready == sorted(names["ready"])  # oldest first
    assert scan.loading == names["loading"] and scan.claimed == names["claimed"]
    assert sorted(scan.other) == sorted(other)
    assert scan.closed and scan.in_flight == 5


def _renames_outside_folder_module() -> list[str]:
    """Calls of os.rename/os.unlink/os.listdir in the package, outside _folder.py."""
    found = []
    for path in PACKAGE.glob("*.py"):
        if path.name in ("_folder.py", "_batch.py", "kafka.py"):
            continue  # _batch.py removes a half-written file it created itself
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"
                    and node.func.attr in ("rename", "replace", "listdir", "scandir")):
                found.append(f"{path.name}:{node.lineno} os.{node.func.attr}")
    return found


def test_only_the_folder_module_renames_or_lists_the_folder():
    assert _renames_outside_folder_module() == []


def test_producer_and_consumer_do_not_reach_into_queue_privates():
    for module in ("_consumer.py", "_recovery.py"):
        tree = ast.parse((PACKAGE / module).read_text())
        private = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                   and isinstance(n.value, ast.Attribute) and n.value.attr == "_queue"]
        assert private == [], module
    assert "_queue._count_ready" not in (PACKAGE / "_producer.py").read_text()


def test_join_names_a_file_in_the_folder_with_or_without_a_trailing_separator(tmp_path):
    name = "r_00000000000000000001_000000000001_1_host-1-0-00000000.tqb"
    for path in (str(tmp_path), str(tmp_path) + "/"):
        folder = Folder(path)
        assert folder.join(name) == str(tmp_path / name)
        assert folder.join(name) == os.path.join(path, name)
