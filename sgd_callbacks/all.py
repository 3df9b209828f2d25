"The star-import surface of sgd_callbacks: `from fastai.basics import *` then `from sgd_callbacks.all import *`"
from .data import *
from .scratch import *
from .callback import *
