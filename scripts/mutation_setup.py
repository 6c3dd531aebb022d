"""Prepare a scratch copy of the checkout for mutmut 3 (called by ``scripts/run_mutation.sh``).

    python scripts/mutation_setup.py SCRATCH MODULE      # e.g. qd_models/quant/aciq.py

mutmut 3 does not mutate decorated functions, and it runs every mutant's session forked from one
process after mapping each function to the tests that called it (its "stats" run). So, in the
scratch copy only:

* every ``@cache`` function of MODULE is rewritten undecorated as ``_name`` with
  ``name = cache(_name)`` after it, so that its body is mutated;
* ``tests/conftest.py`` gains an autouse fixture that clears those caches before every test of
  the stats run (each test that needs them is seen calling them) and once per session of a mutant
  of MODULE (no value cached by an earlier session hides the mutant).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CONFTEST_FIXTURE = '''

_MUTATION_CACHES_CLEARED_FOR: set[str] = set()


@pytest.fixture(autouse=True)
def fresh_caches_under_mutation_testing():
    """Added by scripts/mutation_setup.py: clear {module}'s caches for mutmut's stats run and once per mutant session."""
    import importlib

    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if mutant == "stats" or (mutant.startswith("{module}.") and mutant not in _MUTATION_CACHES_CLEARED_FOR):
        _MUTATION_CACHES_CLEARED_FOR.add(mutant)
        module = importlib.import_module("{module}")
        for name in {names!r}:
            getattr(module, name).cache_clear()
'''


def undecorate_caches(source: str) -> tuple[str, list[str]]:
    """``source`` with every top-level ``@cache`` function ``name`` rewritten as ``_name`` plus
    ``name = cache(_name)``; -> (new source, the names)."""
    lines = source.splitlines(keepends=True)
    cached = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)
              and [ast.unparse(d) for d in node.decorator_list] == ["cache"]]
    for node in reversed(cached):  # bottom-up: earlier line numbers stay valid
        lines.insert(node.end_lineno, f"\n\n{node.name} = cache(_{node.name})\n")
        lines[node.lineno - 1] = lines[node.lineno - 1].replace(f"def {node.name}(", f"def _{node.name}(", 1)
        del lines[node.decorator_list[0].lineno - 1]
    return "".join(lines), [node.name for node in cached]


def main(argv: list[str]) -> int:
    scratch, module = Path(argv[0]), argv[1]
    path = scratch / module
    source, names = undecorate_caches(path.read_text(encoding="utf-8"))
    if names:
        path.write_text(source, encoding="utf-8")
        dotted = module.removesuffix(".py").replace("/", ".")
        with open(scratch / "tests" / "conftest.py", "a", encoding="utf-8") as conftest:
            conftest.write(CONFTEST_FIXTURE.format(module=dotted, names=tuple(names)))
    print(f"mutation setup of {module}: {len(names)} cached function(s) undecorated{': ' + ', '.join(names) if names else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
