"Package metadata comes from settings.ini (nbdev 2 style)."
from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent/'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']
reqs = cfg.get('requirements', '').split()
refs_reqs = cfg.get('refs_requirements', '').split() # the references the rules are proven against
dev_reqs = cfg.get('dev_requirements', '').split() + refs_reqs
dask_reqs = cfg.get('dask_requirements', '').split() # trials on Dask (`--workers`, `--scheduler`)
scripts = [s.strip() for s in cfg.get('console_scripts', '').split('\n') if s.strip()]
lic = {'apache2': 'License :: OSI Approved :: Apache Software License'}[cfg['license']]
min_py = cfg['min_python']
readme = Path(__file__).parent/'README.md'

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    long_description=readme.read_text(encoding='utf-8'), long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'], license='Apache-2.0', url=cfg['git_url'],
    keywords=cfg['keywords'], classifiers=[lic, f'Programming Language :: Python :: {min_py}'],
    packages=setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name']+'.*']),
    include_package_data=True, zip_safe=False, python_requires=f'>={min_py}',
    install_requires=reqs, extras_require={'dev': dev_reqs, 'dask': dask_reqs, 'refs': refs_reqs},
    entry_points={'console_scripts': scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
