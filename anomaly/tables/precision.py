"""Learned per-tag statistics held in float32 where its 7 digits are plenty.

A detector's learned state is mostly per-tag vectors. The scales, spreads, fading weights and
residual averages among them need a few significant figures, not float64's 16: an alarm
message shows 2-3. Held as float32 they take half the memory (a gateway restarted on its saved
state holds every table whole). Values on the readings' own scale (last value, level, the
values a tag rests at) stay float64, since a difference of two of them is what is judged and
a 32-bit counter or an energy total of 1e9 would lose its last digits; so do counts that grow
past 2**24 (float32 stops counting there) and anything a large factor scales.

The detectors compute in float64 as before; each time one of their named attributes is set,
it is rounded to float32, so its dtype stays float32 whatever expression set it (an
allocation alone would not: `self.x = np.where(...)` gives float64 again).

>>> import numpy as np
>>> class D(Float32Fields):
...     FLOAT32 = frozenset({"scale"})
...     def __init__(self) -> None:
...         self.scale = np.zeros(3)
...         self.level = np.zeros(3)
>>> d = D()
>>> d.scale = d.scale + 0.1
>>> d.scale.dtype, d.level.dtype
(dtype('float32'), dtype('float64'))
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class Float32Fields:
    """A detector whose attributes named in FLOAT32 are held as float32 arrays."""

    FLOAT32: ClassVar[frozenset[str]] = frozenset()

    def __setattr__(self, name: str, value: object) -> None:
        if name in self.FLOAT32:
            value = np.asarray(value, dtype=np.float32)
        object.__setattr__(self, name, value)
