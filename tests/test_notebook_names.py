"Every notebook the prose names exists: a reader who follows `see 02b` or a link to `13_plots.ipynb` finds it."
import json, re
from pathlib import Path
import pytest

root = Path(__file__).parents[1]
nbs = root/'nbs'
names = {p.stem for p in nbs.glob('*.ipynb')}

def prose(path):
    "The prose of README.md, or of a notebook's Markdown cells"
    if path.suffix == '.md': return path.read_text()
    return '\n'.join(''.join(c['source']) for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'markdown')

# `13_plots`, `63_bakeoff.run` (a number, an underscore, a name); or `02b` alone (a number and a letter, no decimal)
_named = re.compile(r'(?<![\w.])(\d\d[a-z]?_[A-Za-z]\w*(?:\.[A-Za-z]\w*)*)')
_numbered = re.compile(r'(?<![\w.\-+])(\d\d[a-z])(?![\w-])')

def mentioned(text):
    "The notebook names in `text`: links' `.ipynb` dropped"
    return ({m.removesuffix('.ipynb') for m in _named.findall(text)}, set(_numbered.findall(text)))

def missing(text):
    full,short = mentioned(text)
    return sorted(n for n in full if n not in names) + sorted(s for s in short if not any(n.startswith(s+'_') for n in names))

def test_finds_names_and_only_names():
    assert mentioned("see [`13_plots`](nbs/13_plots.ipynb) and 63_bakeoff.run; 02b's loop") == (
        {'13_plots', '63_bakeoff.run'}, {'02b'})
    assert mentioned("at most 2.38e-07, 10_000 steps, sgd_callbacks, `00`–`06`") == (set(), set())
    assert missing("02b's shape, 13_plots, 99_gone") == ['99_gone', '02b']

@pytest.mark.parametrize('path', [root/'README.md', *sorted(nbs.glob('*.ipynb'))], ids=lambda p: p.name)
def test_every_notebook_named_in_prose_exists(path):
    assert not missing(prose(path)), f"{path.name} names notebooks that do not exist: {missing(prose(path))}"

@pytest.mark.parametrize('path', [root/'README.md', *sorted(nbs.glob('*.ipynb'))], ids=lambda p: p.name)
def test_every_link_to_a_notebook_or_picture_resolves(path):
    links = re.findall(r'\]\(([^)\s]+\.(?:ipynb|png|gif))\)', prose(path))
    assert not [l for l in links if not (path.parent/l).exists()], path.name
