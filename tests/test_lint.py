"""The generated modules read on one screen's width: no line over 120 characters (nbdev's own `__all__` lists aside,
which it wraps itself). Unused imports and undefined names are ruff's (`.ci/run`)."""
from pathlib import Path
import pytest

root = Path(__file__).parents[1]/'sgd_callbacks'

def long_lines(text, width=120):
    "`(line number, length)` of each line over `width` characters, nbdev's `__all__ = [...]` left out"
    out,in_all = [],False
    for i,l in enumerate(text.splitlines(), 1):
        if l.startswith('__all__ = ['): in_all = True
        if in_all:
            in_all = not l.rstrip().endswith(']')
            continue
        if len(l) > width: out.append((i, len(l)))
    return out

def test_long_lines_finds_what_is_long():
    assert long_lines('x = 1\n' + 'y'*121 + '\n__all__ = [' + "'a', "*40 + '\n  ' + "'b', "*40 + ']\n' + 'z'*120) == [(2, 121)]

@pytest.mark.parametrize('path', sorted(p for p in root.rglob('*.py') if p.name != '_modidx.py'),
                         ids=lambda p: str(p.relative_to(root)))
def test_generated_lines_fit(path):
    assert not long_lines(path.read_text(encoding='utf-8')), f"{path.name}: lines over 120 characters {long_lines(path.read_text())}"
