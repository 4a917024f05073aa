"""The ledger has one home (shared/ledger/): no other module names its tables, compares versions or orders snapshots in SQL.

A static check over every module of services/, schoolmig/ and shared/ (outside shared/ledger/): the string literals
(docstrings excepted) are scanned for the ledger's table names and, in strings that look like SQL, for version and
snapshot-order comparisons. The SQL files under shared/migrations/ are not Python and are not scanned.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("services", "schoolmig", "shared")
LEDGER_HOME = ROOT / "shared" / "ledger"

LOOKS_LIKE_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WITH|FROM|WHERE|JOIN)\b", re.IGNORECASE)
_LEDGER_TABLES = r"(loaded_records|parked_records|parked_refs|record_versions|quarantine|deleted_records|device_states|school_contents|snapshot_derivations)"
_OP = r"(<=|>=|<(?!>)|>|\bBETWEEN\b)"
# A version's or a snapshot's order: its time, client, sequence number (any alias or prefix).
_VERSION_COLUMN = r"(\w*_ts|ts|taken_at|\w*_client|client_id|\w*_seq|seq)"
# Rules in ALWAYS apply to every string; the others only to strings that look like SQL.
RULES: dict[str, tuple[re.Pattern[str], ...]] = {
    "ledger-table": (
        re.compile(rf'"?\bmigration"?\s*\.\s*"?{_LEDGER_TABLES}\b', re.IGNORECASE),
        re.compile(rf'\b(FROM|JOIN|INTO|UPDATE|TABLE|USING)\s+"?{_LEDGER_TABLES}\b', re.IGNORECASE),
    ),
    "row-comparison": (
        re.compile(rf"\)\s*{_OP}\s*(ROW\s*)?\((?!\s*SELECT\b)", re.IGNORECASE),
        re.compile(r"\bROW\s*\(", re.IGNORECASE),
    ),
    "version-comparison": (
        # (not a `<placeholder>` of prose, as in `chg.<client_id>.<seq>`)
        re.compile(rf"(?<![\w$<]){_VERSION_COLUMN}\s*{_OP}", re.IGNORECASE),
        re.compile(rf"{_OP}\s*[\w.]*\b{_VERSION_COLUMN}\b(?!>)", re.IGNORECASE),
        re.compile(rf"\b(greatest|least|max|min)\s*\(\s*[\w.]*\b{_VERSION_COLUMN}\b", re.IGNORECASE),
    ),
    "snapshot-order": (
        re.compile(r"ORDER BY[^;]*\btaken_at\b", re.IGNORECASE),
        # the newest of a school's snapshots or audits, by any column
        re.compile(
            r"^(?=.*\bmigration\.(snapshots|audits)\b)(?=.*(\bORDER BY\b.*\bDESC\b|\bDISTINCT ON\s*\(\s*[\w.]*school_id\s*\)))",
            re.IGNORECASE | re.DOTALL,
        ),
    ),
    "change-id-literal": (re.compile(r"'chg\.'"), re.compile(r"starts_with\(", re.IGNORECASE)),
    "pg-stat-relname": (
        re.compile(r"relname\s+(IN|=)", re.IGNORECASE),
        re.compile(r"'(loaded_records|parked_records|parked_refs|record_versions|quarantine)'"),
    ),
}
ALWAYS = {"ledger-table", "version-comparison"}


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring nodes: the leading bare string of a module, class or function."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def _strings(tree: ast.Module) -> list[tuple[ast.expr, str]]:
    """Every string literal but the docstrings; an f-string as one text, its replacement fields as `{}`."""
    skip = _docstrings(tree)
    out: list[tuple[ast.expr, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}" for v in node.values]
            out.append((node, "".join(parts)))
            skip.update(id(v) for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            out.append((node, node.value))
    return out


def offences(source: str, path: str) -> list[str]:
    """`path:line: rule: excerpt` for every ledger rule that the string literals of `source` break."""
    found: dict[str, int] = {}
    for node, text in _strings(ast.parse(source, filename=path)):
        sql = LOOKS_LIKE_SQL.search(text) is not None
        for rule, patterns in RULES.items():
            if not (sql or rule in ALWAYS):
                continue
            for pattern in patterns:
                for match in pattern.finditer(text):
                    line = min(node.lineno + text.count("\n", 0, match.start()), node.end_lineno or node.lineno)
                    start = text.rfind("\n", 0, match.start()) + 1
                    end = text.find("\n", match.end())
                    excerpt = " ".join(text[start : end if end != -1 else len(text)].split())[:120]
                    found.setdefault(f"{path}:{line}: {rule}: {excerpt}", line)
    return sorted(found, key=found.__getitem__)


def _modules() -> list[Path]:
    return sorted(
        p for top in SCANNED for p in (ROOT / top).rglob("*.py") if not p.resolve().is_relative_to(LEDGER_HOME.resolve())
    )


def test_only_the_ledger_names_its_tables_and_compares_versions_in_sql() -> None:
    modules = _modules()
    assert modules, f"no modules found under {SCANNED} of {ROOT}"
    found = [o for p in modules for o in offences(p.read_text(encoding="utf-8"), p.relative_to(ROOT).as_posix())]
    if found:
        pytest.fail(f"{len(found)} ledger SQL outside shared/ledger/ (move it there):\n" + "\n".join(found), pytrace=False)


@pytest.mark.parametrize(
    ("rule", "source"),
    [
        ("ledger-table", 'ERROR = "no row in MIGRATION.Quarantine"\n'),
        ("ledger-table", 'def f(t):\n    return f"SELECT count(*) FROM migration.record_versions WHERE {t}"\n'),
        ("row-comparison", 'Q = "SELECT 1 FROM t WHERE (a, b) <= ($1, $2)"\n'),
        ("version-comparison", 'Q = """\nUPDATE t SET x = 1\n WHERE t.source_ts <= EXCLUDED.source_ts\n"""\n'),
        ("version-comparison", 'Q = "SELECT id FROM snaps WHERE $1 > s.taken_at"\n'),
        ("version-comparison", 'def f(cols):\n    return f"SELECT {cols} FROM v WHERE live_ts < $1"\n'),
        ("snapshot-order", 'Q = "SELECT snapshot_id FROM snaps ORDER BY school_id, Taken_At DESC"\n'),
        ("change-id-literal", "Q = \"SELECT id FROM changes WHERE id LIKE 'chg.' || '%'\"\n"),
        ("change-id-literal", 'Q = "SELECT 1 FROM t WHERE starts_with(client_id, $1)"\n'),
        ("pg-stat-relname", 'Q = "SELECT n_live_tup FROM pg_stat_user_tables WHERE relname IN ($1, $2)"\n'),
        ("pg-stat-relname", "Q = \"SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'parked_records'\"\n"),
        ("ledger-table", 'Q = \'SELECT 1 FROM "migration"."loaded_records"\'\n'),
        ("ledger-table", 'Q = "select count(*) from parked_refs where ref_id = $1"\n'),
        ("row-comparison", 'Q = "select 1 from t where ROW(a, b) < ROW($1, $2)"\n'),
        ("version-comparison", 'C = "t.source_ts <= EXCLUDED.source_ts"  # a fragment, spliced into SQL\n'),
        ("version-comparison", 'Q = "SELECT 1 FROM k WHERE k.ts BETWEEN $1 AND $2"\n'),
        ("version-comparison", 'Q = "SELECT 1 FROM p WHERE p.client_id > $1 OR l_ts < $2 OR live_seq >= q"\n'),
        ("version-comparison", 'Q = "SELECT max(s.taken_at) FROM migration.snapshots s"\n'),
        (
            "snapshot-order",
            'Q = "SELECT snapshot_id FROM migration.audits WHERE school_id = $1 ORDER BY created_at DESC LIMIT 1"\n',
        ),
        (
            "snapshot-order",
            'Q = "SELECT DISTINCT ON (school_id) school_id FROM migration.snapshots ORDER BY school_id, released_at"\n',
        ),
    ],
)
def test_the_checker_reports_each_rule(rule: str, source: str) -> None:
    reported = offences(source, "x.py")
    assert any(f": {rule}: " in o for o in reported), reported
    assert all(o.startswith("x.py:") for o in reported), reported


@pytest.mark.parametrize(
    "source",
    [
        '"""Rows land in migration.loaded_records, see shared/ledger/."""\n',
        'class C:\n    """Reads migration.parked_records (prose)."""\n\n    def f(self):\n        """migration.quarantine."""\n',
        'Q = "SELECT phase FROM migration.school_phase WHERE school_id = $1"\n',
        'Q = "SELECT id, received_at >= $3 AS late FROM migration.change_events WHERE school_id = $1"\n',
        'def f(cond):\n    return f"WHERE {cond}"\n',
        'NOTE = "(a) < (b), ORDER BY taken_at"  # not SQL: no keyword of a statement\n',
        'Q = "SELECT 1 FROM migration.exports WHERE created_at >= $2 ORDER BY created_at DESC LIMIT 1"\n',
        'Q = "SELECT 1 FROM migration.snapshots s WHERE s.released_at < now() ORDER BY s.released_at LIMIT 50"\n',
    ],
)
def test_the_checker_passes_clean_code(source: str) -> None:
    assert offences(source, "x.py") == []
