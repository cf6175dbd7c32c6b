"""The conftest's repair of `pytest.mark.xdist_group` (`conftest.pytest_collection_modifyitems`):
tests of one group run on one xdist worker, so a shared trained run is built once."""

import pathlib
import re
import shutil
import subprocess
import sys

GROUPED = '''
import pytest
pytestmark = pytest.mark.xdist_group("shared")
def test_a(): pass
def test_b(): pass
def test_c(): pass
'''
UNGROUPED = '''
def test_d(): pass
def test_e(): pass
def test_f(): pass
'''


def test_grouped_tests_share_one_worker(tmp_path):
  shutil.copy(pathlib.Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
  (tmp_path / "test_grouped.py").write_text(GROUPED)
  (tmp_path / "test_ungrouped.py").write_text(UNGROUPED)
  result = subprocess.run(
      [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
       "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)],
      cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  placed = re.findall(r"\[(gw\d)\].*PASSED (\S+)", result.stdout)
  assert len(placed) == 6, result.stdout
  grouped_workers = {worker for worker, test in placed if "test_grouped.py" in test}
  assert len(grouped_workers) == 1, result.stdout
  # The group's name is in the reported node id, as pytest-xdist intends.
  assert all(test.endswith("@shared") for _, test in placed if "test_grouped.py" in test)
