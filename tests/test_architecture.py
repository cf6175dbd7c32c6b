"""The package's shape: no import cycles, nothing below the trainer imports it, a light core."""

import ast
import email.parser
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("mer_jax", "data_builders")
# Import of these would make the light core heavy (or TensorFlow-bound).
HEAVY = ("tensorflow", "tensorflow_datasets", "clu", "ml_collections", "cv2", "orbax",
         "matplotlib", "openpyxl", "torch")
LIGHT_CORE = ("mer_jax.magnify", "mer_jax.models", "mer_jax.flow", "mer_jax.spotting")
# Modules that may import the trainer: its entry points.
TRAINER_CLIENTS = {"mer_jax.main", "mer_jax.ablation", "mer_jax.train"}


def _modules() -> dict[str, str]:
  """Dotted module name -> file, for every .py file of the packages."""
  found = {}
  for package in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, package)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(root, name)
          rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
          found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
  return found


def _imports(name: str, path: str, modules: dict[str, str]) -> set[str]:
  """Package modules imported anywhere in the file (function-level imports included)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  is_package = path.endswith("__init__.py")
  result = set()
  for node in ast.walk(tree):
    targets = []
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = name.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      targets = [f"{base}.{alias.name}" for alias in node.names]
      # `from pkg import sub` also runs pkg/__init__, unless pkg is this module's own
      # package (then it is already initialising: the usual package layout, not a cycle).
      if not name.startswith(base + "."):
        targets.append(base)
    for target in targets:
      # The longest package module that the name refers to.
      while target and target not in modules:
        target = target.rpartition(".")[0]
      if target and target != name:
        result.add(target)
  return result


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]):
  """One import cycle as a list of modules, or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if state.get(nxt) is None:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_no_import_cycles():
  graph = _graph()
  assert "mer_jax.train" in graph and "mer_jax.models.registry" in graph
  cycle = _cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_modules_below_the_trainer_never_import_it():
  offenders = sorted(name for name, imports in _graph().items()
                     if "mer_jax.train" in imports and name not in TRAINER_CLIENTS)
  assert not offenders, f"modules below the trainer import mer_jax.train: {offenders}"


def test_model_parts_do_not_import_each_other():
  graph = _graph()
  parts = {"mer_jax.models.attention", "mer_jax.models.motion", "mer_jax.models.pooling",
           "mer_jax.models.recurrent", "mer_jax.models.resnet", "mer_jax.models.small_cnn",
           "mer_jax.models.tcn"}
  for part in parts:
    assert not graph[part] & (parts | {"mer_jax.models.registry"}), part
  assert graph["mer_jax.models.sequence"] == set()  # The masked-sequence leaf.


def test_light_core_imports_no_tensorflow_tfds_or_clu():
  code = ("import sys\n"
          f"import {', '.join(LIGHT_CORE)}\n"
          "import mer_jax.models.registry\n"
          f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
          "print(','.join(heavy))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "", f"the light core loaded {result.stdout.strip()}"


@pytest.mark.slow
def test_wheel_holds_the_light_core_and_no_generic_top_level_package(tmp_path):
  # Built from a copy of the repository's files, so no build/ folder lands in the checkout.
  source = tmp_path / "source"
  ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "build", "*.egg-info", "workdir*")
  shutil.copytree(REPO, source, ignore=ignore)
  built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
                         capture_output=True, text=True, timeout=300)
  assert built.returncode == 0, built.stderr[-2000:]
  wheel = next(p for p in os.listdir(tmp_path) if p.endswith(".whl"))
  with zipfile.ZipFile(tmp_path / wheel) as z:
    names = z.namelist()
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    message = email.parser.Parser().parsestr(z.read(metadata).decode())
    z.extractall(tmp_path / "site")
  top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
  assert top_level == {"mer_jax", "data_builders"}, top_level
  core = sorted(r.split(">")[0].split("=")[0].strip() for r in message.get_all("Requires-Dist")
                if "extra ==" not in r)
  assert core == ["flax", "jax", "numpy", "optax"]
  # The installed files alone give the light core (run outside the repository).
  code = ("import sys, mer_jax.magnify, mer_jax.models, mer_jax.flow\n"
          "assert mer_jax.__file__.startswith(sys.argv[1]), mer_jax.__file__\n"
          f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n")
  env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], env=env,
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[]"
