"The notebooks are read on the repository's web page, where JavaScript does not run: light outputs, pictures as images."
import json
from pathlib import Path
import pytest

nbs = sorted((Path(__file__).parents[1]/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', nbs, ids=lambda p: p.name)
def test_stored_outputs_are_light_and_need_no_javascript(nb):
    assert nb.stat().st_size < 1_000_000, f"{nb.name} stores {nb.stat().st_size/1e6:.2f} MB"
    for c in json.loads(nb.read_text())['cells']:
        for o in c.get('outputs', []):
            data = o.get('data', {})
            assert 'application/javascript' not in data, nb.name
            html = ''.join(data.get('text/html', []))
            assert '<script' not in html and 'jshtml' not in html, f"{nb.name}: an output needs JavaScript"

def test_the_fit_animation_is_stored_as_a_gif():
    "A GIF file under nbs/images/ that a Markdown cell of 13_plots shows: some viewers skip an `image/gif` output"
    f = nbs[0].parent/'images'/'fit_animation.gif'
    assert f.exists(), f"{f.name} is missing: run 13_plots, whose animation cell writes it"
    data = f.read_bytes()
    assert data[:6] == b'GIF89a' and len(data) < 150_000, (data[:6], len(data))
    cells = json.loads((nbs[0].parent/'13_plots.ipynb').read_text())['cells']
    assert any(c['cell_type'] == 'markdown' and '](images/fit_animation.gif)' in ''.join(c['source']) for c in cells)
    for nb in nbs:
        outs = [o for c in json.loads(nb.read_text())['cells'] for o in c.get('outputs', [])]
        assert not any('image/gif' in o.get('data', {}) for o in outs), f"{nb.name} stores a GIF as an output"

def stored_text(name):
    "Every text a notebook's stored outputs show: printed, returned, and tables"
    cells = json.loads((nbs[0].parent/f'{name}.ipynb').read_text())['cells']
    return '\n'.join(''.join(o.get('text', [])) + ''.join(o.get('data', {}).get('text/html', [])) + ''.join(o.get('data', {}).get('text/plain', []))
                     for c in cells for o in c.get('outputs', []))

@pytest.mark.parametrize('name,col', [('41_compare', 's_per_step'), ('64_bakeoff.report', 'seconds_to_target')])
def test_shown_tables_have_no_timings(name, col):
    "Seconds are run-to-run noise at these sizes (41_compare's s_per_step: one row 19x another, reversed in the next table): timings are 80_bench's"
    assert col not in stored_text(name)

@pytest.mark.parametrize('nb', [p for p in nbs if p.name != 'index.ipynb'], ids=lambda p: p.name)
def test_each_notebook_says_first_whether_it_is_a_lesson_or_a_reference(nb):
    "A reader opening any notebook learns in its first lines whether it teaches (a lesson) or documents (a reference)"
    title, *rest = ''.join(json.loads(nb.read_text())['cells'][0]['source']).splitlines()
    desc = next((l for l in rest if l.startswith('> ')), '')
    assert title.startswith('# Lesson:') or desc.startswith(('> Lesson:', '> Reference:')), f"{nb.name}: {title!r} {desc!r}"
