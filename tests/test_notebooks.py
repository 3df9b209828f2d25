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
    cells = json.loads((Path(__file__).parents[1]/'nbs'/'13_plots.ipynb').read_text())['cells']
    assert any('image/gif' in o.get('data', {}) for c in cells for o in c.get('outputs', []))
