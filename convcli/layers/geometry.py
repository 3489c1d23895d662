"""Per-axis arithmetic: output sizes and receptive-field steps.

Every spatial axis is an independent 1-D problem (Araujo et al., Distill 2019), so a layer describes
itself as one *axis op* per spatial axis and the analysis applies them one axis at a time. Values that
can be fractional (the jump after a transposed conv or an upsample) are kept exact with Fraction.

Forward recurrences (Dang Ha The Hien's guide; the course):
    k_eff = d*(k-1) + 1
    n_out = floor((n_in + p_left + p_right - k_eff)/s) + 1
    j_out = j_in * s
    r_out = r_in + (k_eff - 1) * j_in
    start_out = start_in + ((k_eff - 1)/2 - p_left) * j_in
`start` is the centre of the first output unit's RF in input pixel coordinates, where input pixel i
spans [i, i+1), so the first pixel's centre is 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction


def eff_kernel(k: int, d: int = 1) -> int:
    """The span of a dilated kernel: d*(k-1)+1."""
    return d * (k - 1) + 1


def per_axis(value, ndim: int) -> tuple:
    """Broadcast a scalar or a per-axis list to `ndim` values; ValueError names the length mismatch."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return tuple(value) * ndim
        if len(value) != ndim:
            raise ValueError(f"{len(value)} values, but the input has {ndim} spatial ax{'is' if ndim == 1 else 'es'}")
        return tuple(value)
    return (value,) * ndim


def window_out(n: int, k_eff: int, s: int, pl: int, pr: int, ceil: bool = False) -> int | None:
    """Output length of a sliding window; None when the window does not fit the padded input."""
    span = n + pl + pr - k_eff
    if span < 0:
        return None
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    # PyTorch's ceil_mode: the last window must start inside the input or the left padding.
    if (out - 1) * s >= n + pl:
        out -= 1
    return out


def same_padding(k_eff: int) -> tuple[int, int]:
    """PyTorch's padding='same' at stride 1: total k_eff-1, the odd pixel on the right."""
    total = k_eff - 1
    return total // 2, total - total // 2


@dataclass(frozen=True)
class AxisRF:
    """Receptive-field state of one spatial axis after some layer."""

    n: int  # feature-map length on this axis
    r: int  # RF size in input pixels
    j: Fraction  # jump: input pixels between adjacent units (effective stride)
    start: Fraction  # centre of the first unit's RF, input pixel coordinates
    glob: bool = False  # True once a global op (GAP, flatten) made every unit see the whole map
    # Each unit's RF as [lo, hi) in input pixels, kept only once the axis is irregular (an adaptive pool
    # whose windows differ in size): then no (r, j, start) describes it, r is the widest span and j the
    # average jump. None on a regular axis, where the recurrences are exact. The spans run over units
    # -margin .. n-1+margin: the virtual units beyond the border that padding stands for, computed by the
    # same ops, so a border unit's RF is "never clipped" as on a regular axis.
    spans: tuple | None = None
    margin: int = 0

    @classmethod
    def input(cls, n: int) -> AxisRF:
        return cls(n=n, r=1, j=Fraction(1), start=Fraction(1, 2))

    def span(self, u: int) -> tuple[Fraction, Fraction]:
        """Unit u's RF [lo, hi); u outside 0..n-1 is a padding position, continued at the average jump."""
        if self.spans is None:
            centre, half = self.start + u * self.j, Fraction(self.r) / 2
            return centre - half, centre + half
        i = u + self.margin
        edge = min(max(i, 0), len(self.spans) - 1)  # beyond the margin: continued at the average jump
        lo, hi = self.spans[edge]
        return lo + (i - edge) * self.j, hi + (i - edge) * self.j

    @classmethod
    def from_spans(cls, spans: list, j, glob: bool = False, margin: int = 0) -> AxisRF:
        real = spans[margin:len(spans) - margin]
        widest = max(hi - lo for lo, hi in real)
        r = int(widest) if widest == int(widest) else widest
        return cls(n=len(real), r=r, j=Fraction(j), start=(real[0][0] + real[0][1]) / 2, glob=glob,
                   spans=tuple(spans), margin=margin)


MARGIN = 32  # virtual units kept on each side of an irregular axis (deeper reads continue at the average jump)


def fmt_num(x) -> str:
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def irregular(b: AxisRF) -> str | None:
    """The r_out line on an irregular axis, where r_in + (k-1)*j_in does not hold."""
    if b.spans is None:
        return None
    return (f"r_out = the widest union of the RFs a unit reads = {fmt_num(b.r)} (units differ here: an "
            "upsampling, or an adaptive or ceil_mode pool, left them off a regular grid)")


@dataclass(frozen=True)
class Window:
    """A sliding window: convolution, pooling, and (k=1) every pointwise op."""

    k: int = 1
    s: int = 1
    pl: int = 0
    pr: int = 0
    d: int = 1
    ceil: bool = False  # a pool's ceil_mode: the output size is rounded up (a last, partial window)

    @property
    def k_eff(self) -> int:
        return eff_kernel(self.k, self.d)

    def columns(self, a: AxisRF) -> dict:
        # Uneven padding (padding='same' with an even kernel) reads "left+right": a list would read as per-axis.
        return {"k": self.k, "s": self.s, "p": self.pl if self.pl == self.pr else f"{self.pl}+{self.pr}", "d": self.d}

    def reads(self, o: int) -> tuple[int, int]:
        """The first and last input position output `o` reads (padding and beyond: virtual positions)."""
        first = o * self.s - self.pl
        return first, first + self.k_eff - 1

    def step(self, a: AxisRF, n_out: int) -> AxisRF:
        ke = self.k_eff
        last = a.n - 1 + self.pr  # the last position a window may read (padding included)
        if a.spans is not None or (n_out - 1) * self.s - self.pl + ke - 1 > last:
            # An irregular input, or a ceil_mode pool whose last window runs past the padded input (PyTorch
            # cuts it short): each output's RF is the union of the spans its window really reads. Real
            # windows stop at the padded input's end; virtual ones are whole.
            def span(o):
                u, end = self.reads(o)
                if 0 <= o < n_out:
                    end = u + min(ke - 1, (last - u) // self.d * self.d)
                return a.span(u)[0], a.span(end)[1]
            return AxisRF.from_spans([span(o) for o in range(-MARGIN, n_out + MARGIN)], a.j * self.s, a.glob,
                                     MARGIN)
        return AxisRF(
            n=n_out,
            r=a.r + (ke - 1) * a.j,
            j=a.j * self.s,
            start=a.start + (Fraction(ke - 1, 2) - self.pl) * a.j,
            glob=a.glob,
        )

    def explain(self, a: AxisRF, b: AxisRF) -> list[str]:
        ke, p = self.k_eff, self.pl + self.pr
        lines = []
        if self.d != 1:
            lines.append(f"k_eff = d*(k-1)+1 = {self.d}*({self.k}-1)+1 = {ke}")
        pad = f"2*{self.pl}" if self.pl == self.pr else f"{self.pl}+{self.pr}"
        rnd = "ceil" if self.ceil else "floor"
        size = (f"n_out = {rnd}((n_in + {'2p' if self.pl == self.pr else 'p_l + p_r'} - k_eff)/s) + 1"
                f" = {rnd}(({a.n} + {pad} - {ke})/{self.s}) + 1")
        rounded = -(-(a.n + self.pl + self.pr - ke) // self.s) + 1
        if self.ceil and rounded != b.n:  # PyTorch drops a last window that would start in the right padding
            size += f" = {rounded}, less the window that would start in the right padding"
        lines += [
            f"{size} = {b.n}",
            irregular(b) or f"r_out = r_in + (k_eff-1)*j_in = {a.r} + ({ke}-1)*{fmt_num(a.j)} = {fmt_num(b.r)}",
            f"j_out = j_in*s = {fmt_num(a.j)}*{self.s} = {fmt_num(b.j)}",
        ]
        del p
        return lines


@dataclass(frozen=True)
class Adaptive:
    """An adaptive pool from n to m positions where m does not divide n: PyTorch's window i runs from
    floor(i*n/m) to ceil((i+1)*n/m), so windows differ in size and the axis becomes irregular (spans)."""

    n: int
    m: int

    def windows(self) -> list[tuple[int, int]]:
        return [(lo, hi + 1) for lo, hi in map(self.reads, range(self.m))]

    def columns(self, a: AxisRF) -> dict:
        return {"k": max(b - a_ for a_, b in self.windows()), "s": Fraction(self.n, self.m), "p": 0, "d": 1}

    def reads(self, o: int) -> tuple[int, int]:
        """The first and last input position output `o` reads (the same formula beyond the map)."""
        return o * self.n // self.m, -(-(o + 1) * self.n // self.m) - 1

    def step(self, a: AxisRF, n_out: int) -> AxisRF:
        spans = [(a.span(lo)[0], a.span(hi)[1]) for lo, hi in map(self.reads, range(-MARGIN, self.m + MARGIN))]
        return AxisRF.from_spans(spans, a.j * Fraction(self.n, self.m), a.glob, MARGIN)

    def explain(self, a: AxisRF, b: AxisRF) -> list[str]:
        sizes = [hi - lo for lo, hi in self.windows()]
        return [
            f"adaptive windows floor(i*n_in/n_out)..ceil((i+1)*n_in/n_out) for n_in={self.n}, n_out={self.m}:"
            f" sizes {', '.join(map(str, sizes))}",
            f"r_out = the widest union of the windows' RFs = {fmt_num(b.r)}; j_out = j_in*n_in/n_out"
            f" = {fmt_num(a.j)}*{self.n}/{self.m} = {fmt_num(b.j)} (average)",
        ]


@dataclass(frozen=True)
class Transposed:
    """Transposed convolution (fractional stride 1/s).

    Output o reads inputs i with 0 <= o + p - i*s <= k_eff-1 (a multiple of d): ceil(k_eff/s) of them at
    most without dilation, so r_out = r_in + (ceil(k_eff/s)-1)*j_in (the largest over output positions) and
    j_out = j_in/s on average. When s does not divide k_eff the RF size alternates between positions
    (noted). With s > 1 the outputs are off a regular grid, so the step keeps each unit's span (`reads`).
    """

    k: int
    s: int
    p: int
    d: int = 1
    output_padding: int = 0

    @property
    def k_eff(self) -> int:
        return eff_kernel(self.k, self.d)

    def columns(self, a: AxisRF) -> dict:
        return {"k": self.k, "s": Fraction(1, self.s), "p": self.p, "d": self.d}

    def inputs_per_output(self) -> int:
        return -(-self.k_eff // self.s)

    def reads(self, o: int) -> tuple[int, int]:
        """The first and last input output `o` reads: inputs i with o + p - i*s a multiple of d in
        [0, k_eff-1], beyond the border too (virtual positions); (1, 0) when the dilation leaves none."""
        taps = [i for i in range(-(-(o + self.p - self.k_eff + 1) // self.s), (o + self.p) // self.s + 1)
                if (o + self.p - i * self.s) % self.d == 0]
        return (min(taps), max(taps)) if taps else (1, 0)

    def step(self, a: AxisRF, n_out: int) -> AxisRF:
        if a.spans is not None or self.s > 1:
            # s > 1: outputs are not on a regular grid of step j/s (outputs 2i and 2i+1 of a k=2, s=2 conv
            # read the same input), so a later layer's RF is not r + (k-1)*j/s: keep each unit's exact span.
            def span(o):
                lo, hi = self.reads(o)
                return (a.span(lo)[0], a.span(hi)[1]) if lo <= hi else a.span(o // self.s)
            return AxisRF.from_spans([span(o) for o in range(-MARGIN, n_out + MARGIN)], a.j / self.s, a.glob, MARGIN)
        # Output 0 reads inputs lo..hi (lo may be negative: a virtual position beyond the border).
        lo = -((self.k_eff - 1 - self.p) // self.s)
        hi = self.p // self.s
        return AxisRF(
            n=n_out,
            r=a.r + (self.inputs_per_output() - 1) * a.j,
            j=a.j / self.s,
            start=a.start + Fraction(lo + hi, 2) * a.j,
            glob=a.glob,
        )

    def explain(self, a: AxisRF, b: AxisRF) -> list[str]:
        m = self.inputs_per_output()
        lines = [f"n_out = (n_in-1)*s - 2p + k_eff + output_padding = ({a.n}-1)*{self.s} - 2*{self.p} + "
                 f"{self.k_eff} + {self.output_padding} = {b.n}"]
        if a.spans is None and self.d == 1:  # a regular input: the widest unit is the course's recurrence
            lines += [f"each output reads at most ceil(k_eff/s) = ceil({self.k_eff}/{self.s}) = {m} inputs",
                      f"r_out = r_in + ({m}-1)*j_in = {a.r} + {m - 1}*{fmt_num(a.j)} = {fmt_num(b.r)}"]
        else:  # dilated taps skip inputs, or an irregular input: the spans say it
            lines.append(irregular(b))
        return lines + [f"j_out = j_in/s = {fmt_num(a.j)}/{self.s} = {fmt_num(b.j)} (average)"]


@dataclass(frozen=True)
class Rescale:
    """Upsampling by an integer factor (nearest, bilinear, pixel shuffle).

    Output pixel o sits at input coordinate (o+0.5)/f - 0.5. Nearest and pixel shuffle read one input
    (support 1); linear interpolation reads two neighbours (support 2), as Distill's rule for
    interpolation says: the kernel is the number of inputs involved.
    """

    factor: int
    support: int = 1

    def columns(self, a: AxisRF) -> dict:
        return {"k": self.support, "s": Fraction(1, self.factor), "p": 0, "d": 1}

    def reads(self, o: int) -> tuple[int, int]:
        """The first and last input output `o` reads: o//f (nearest), or the two neighbours of its source
        coordinate (linear); not clamped to the map."""
        i = (2 * o + 1 - self.factor) // (2 * self.factor) if self.support > 1 else o // self.factor
        return i, i + self.support - 1

    def step(self, a: AxisRF, n_out: int) -> AxisRF:
        if a.spans is not None or self.factor > 1:  # as for a transposed conv: each unit's exact span
            def span(o):
                lo, hi = self.reads(o)
                if 0 <= o < n_out:  # PyTorch clamps a real output's source index to the map
                    lo, hi = min(max(lo, 0), a.n - 1), min(max(hi, 0), a.n - 1)
                return a.span(lo)[0], a.span(hi)[1]
            return AxisRF.from_spans([span(o) for o in range(-MARGIN, n_out + MARGIN)], a.j / self.factor, a.glob,
                                     MARGIN)
        offset = Fraction(1, 2 * self.factor) - Fraction(1, 2) if self.support > 1 else Fraction(0)
        return AxisRF(
            n=n_out,
            r=a.r + (self.support - 1) * a.j,
            j=a.j / self.factor,
            start=a.start + offset * a.j,
            glob=a.glob,
        )

    def explain(self, a: AxisRF, b: AxisRF) -> list[str]:
        return [
            f"n_out = n_in*f = {a.n}*{self.factor} = {b.n}",
            (irregular(b) if a.spans is not None else None)  # a regular input: the widest unit is this
            or f"r_out = r_in + (support-1)*j_in = {a.r} + {self.support - 1}*{fmt_num(a.j)} = {fmt_num(b.r)}",
            f"j_out = j_in/f = {fmt_num(a.j)}/{self.factor} = {fmt_num(b.j)}",
        ]


@dataclass(frozen=True)
class Global:
    """Global pooling or flatten: one unit sees every position of its input.

    Convention: the RF becomes the union of all input units' RFs, r_in + (n_in-1)*j_in (not clipped,
    like Distill), and the axis is marked global: later layers cannot grow it.
    """

    def columns(self, a: AxisRF) -> dict:
        # Global average pooling is an average pool whose window is the whole map: k = s = n_in.
        return {"k": a.n, "s": a.n, "p": 0, "d": 1}

    def reads(self, o: int) -> tuple[int, int]:
        """Every input position (the caller clamps to its map)."""
        return -(2**62), 2**62

    def step(self, a: AxisRF, n_out: int) -> AxisRF:
        if a.spans is not None:
            real = [a.span(u) for u in range(a.n)]
            return replace(AxisRF.from_spans([(real[0][0], max(hi for _, hi in real))], a.j * a.n), glob=True,
                           spans=None)
        return AxisRF(
            n=1,
            r=a.r + (a.n - 1) * a.j,
            j=a.j * a.n,
            start=a.start + Fraction(a.n - 1, 2) * a.j,
            glob=True,
        )

    def explain(self, a: AxisRF, b: AxisRF) -> list[str]:
        if a.spans is not None:
            return [f"global: one unit sees {_all(a.n)}: r_out = the union of their RFs = {fmt_num(b.r)}"]
        return [
            f"global: one unit sees {_all(a.n)}: r_out = r_in + (n_in-1)*j_in"
            f" = {a.r} + ({a.n}-1)*{fmt_num(a.j)} = {fmt_num(b.r)}"
        ]


def _all(n: int) -> str:
    return "the one position" if n == 1 else f"all {n} positions"


IDENTITY = Window()


def same_axes(a: AxisRF, b: AxisRF) -> bool:
    return a.j == b.j and a.n == b.n


def with_n(a: AxisRF, n: int) -> AxisRF:
    return replace(a, n=n)
