"The bench notebook's figures are stored outputs of its commands, never tables pasted into its prose"
import json, re
from pathlib import Path
from sgd_callbacks.bench import BENCHES

cells = json.loads((Path(__file__).parents[1]/'nbs'/'80_bench.ipynb').read_text())['cells']

def test_bench_notebook_stores_each_benchmark_with_its_command():
    "One `bench('…')` cell per benchmark, kept out of `nbdev_test`, whose stored output starts with the command it ran"
    runs = {}
    for c in cells:
        src = ''.join(c['source'])
        m = re.search(r"^bench\('([^']+)'\)", src, re.M)
        if c['cell_type'] != 'code' or not m: continue
        assert src.startswith('#| eval: false'), src
        out = ''.join(t for o in c['outputs'] if o.get('name') == 'stdout' for t in o['text'])
        assert out.startswith(f"$ python -m sgd_callbacks.bench {m[1]}\ntorch "), f"{m[1]}: {out[:200]!r}"
        assert all(o.get('output_type') == 'stream' and o.get('name') == 'stdout' for o in c['outputs']), m[1]
        assert not re.search(r'Warning|/work/|\.venv|site-packages', out), m[1]
        runs[m[1].split()[0]] = out
    assert sorted(runs) == sorted(BENCHES)

def test_bench_notebook_prose_pastes_no_table():
    "An indented line with two `|` in a Markdown cell is a table pasted by hand: figures live in the stored outputs"
    for c in cells:
        if c['cell_type'] == 'markdown':
            assert not re.search(r'^ {4}.*\|.*\|', ''.join(c['source']), re.M), ''.join(c['source'])[:300]
