"Every picture of sgd_callbacks.plots is drawn, saved and opened as a non-empty image."
import pytest, torch
import matplotlib.pyplot as plt
from matplotlib.animation import PillowWriter
from PIL import Image
from sgd_callbacks.data import linear_dls, lstsq_weights
from sgd_callbacks.scratch import fit_scratch, plot_fit
from matplotlib.colors import to_hex
from sgd_callbacks.data import linear_data
from sgd_callbacks.plots import animate_fit, gif, plot_landscape, lesson_paths, line_style, COLORS

@pytest.fixture(scope='module')
def data(): return linear_dls().train.dataset.tensors

def opened(path):
    im = Image.open(path); im.load()
    assert im.size[0] > 0 and im.size[1] > 0
    return im

def test_plot_fit_png(data, tmp_path):
    x,y = data
    a = torch.nn.Parameter(torch.tensor([-1., 1.]))  # requires grad: the lesson's bonus note
    ax = plot_fit(x, y, a); ax.figure.savefig(tmp_path/'fit.png'); plt.close(ax.figure)
    assert opened(tmp_path/'fit.png').format == 'PNG'
    lo,hi = ax.get_xlim() # tick labels that do not run together at the size a page shows the picture (9 did)
    assert len([t for t in ax.get_xticks() if lo <= t <= hi]) <= 6 and (ax.get_xlabel(), ax.get_ylabel()) == ('x1', 'y')

def test_animate_fit_gif(data, tmp_path):
    x,y = data
    h = fit_scratch(x, y, (-1., 1.), lr=0.1, epochs=30)
    anim = animate_fit(x, y, h.weights, frames=12)
    anim.save(tmp_path/'fit.gif', writer=PillowWriter(fps=8))
    im = opened(tmp_path/'fit.gif')
    assert im.format == 'GIF' and im.n_frames == 12
    assert len(anim.to_jshtml()) > 1000

def test_gif_is_the_same_bytes_twice():
    "13_plots writes nbs/images/fit_animation.gif at every run: the same fit gives the same file"
    x,y = linear_data()
    w = fit_scratch(x, y, (-1., 1.), lr=0.1, epochs=100).weights
    a,b = (gif(animate_fit(x, y, w)).data for _ in range(2))
    assert a[:6] == b'GIF89a' and a == b and len(a) < 150_000

def test_line_styles_are_distinct():
    "17 colours, none matplotlib's brown (a thin brown line reads as its red); 18 markers, no star nor cross (a minimum's, a diverged run's mark); a colour and marker of its own for each line"
    from sgd_callbacks.plots import MARKERS
    assert len(set(COLORS)) == len(COLORS) == 17 and '#8c564b' not in COLORS
    assert len(set(MARKERS)) == len(MARKERS) == 18 and not {'*', 'x', 'X'} & set(MARKERS)
    styles = [line_style(i) for i in range(40)]
    assert len({s['color'] for s in styles[:17]}) == 17 and len({s['marker'] for s in styles[:17]}) == 17
    assert len({(s['color'], s['marker']) for s in styles}) == 40

def test_landscape_colours_and_order(data):
    "Each path its own colour, none the contours' grey; the longest path (stochastic GD) drawn under the others"
    x,y = data
    paths = lesson_paths(x, y)
    ax = plot_landscape(x, y, paths)
    lines = {l.get_label().split(' (')[0]: l for l in ax.lines if l.get_label() not in ('start', 'least squares')}
    cols = [to_hex(l.get_color()) for l in lines.values()]
    assert len(lines) == 4 and len(set(cols)) == 4
    contours = [c for coll in ax.collections for c in coll.get_edgecolor()]
    assert contours and all(c[0] == c[1] == c[2] for c in contours)  # grey: red = green = blue, the colour of no path
    z = {k.split()[0]: l.get_zorder() for k,l in lines.items()}
    assert z['stochastic'] < min(v for k,v in z.items() if k != 'stochastic')
    assert all(z[k] < l.get_zorder() for k in z for l in ax.lines if l.get_label() in ('start', 'least squares'))
    plt.close(ax.figure)

def test_landscape_png(data, tmp_path):
    x,y = data
    paths = lesson_paths(x, y)
    assert len(paths) == 4
    ax = plot_landscape(x, y, paths, title='t')
    labels = [l.get_label() for l in ax.lines]
    assert 'least squares' in labels and sum(k in ' '.join(labels) for k in ('batch', 'minibatch', 'stochastic', 'momentum')) == 4
    star = next(l for l in ax.lines if l.get_label()=='least squares')
    assert torch.allclose(torch.tensor([star.get_xdata()[0], star.get_ydata()[0]]).float(), lstsq_weights(x, y))
    ax.figure.savefig(tmp_path/'land.png'); plt.close(ax.figure)
    assert opened(tmp_path/'land.png').format == 'PNG'

@pytest.mark.parametrize('bad,msg', [(lambda x,y: plot_landscape(torch.ones(4,3), torch.ones(4), {}), '`x`'),
                                     (lambda x,y: plot_landscape(x, y, [torch.ones(3,2)]), '`paths`'),
                                     (lambda x,y: plot_landscape(x, y, {'p': torch.ones(0,2)}), "path 'p'"),
                                     (lambda x,y: animate_fit(x, y, torch.ones(5)), '`weights_history`'),
                                     (lambda x,y: animate_fit(x, y, torch.ones(5,2), frames=0), '`frames`')])
def test_bad_input(data, bad, msg):
    with pytest.raises((TypeError, ValueError), match=msg.replace('(', r'\(')): bad(*data)
