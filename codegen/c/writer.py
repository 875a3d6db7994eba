"""Lines of C for one kernel, with parallel loops outlined (the C renderer's writer).

A parallel loop cannot stay inline: the caller's runtime runs its body on other threads
(``c_abi.h``). ``open_parallel`` starts a static function of a range ``[begin, end)`` that
reads the kernel's buffers from a context struct ``c``; when the loop closes, the kernel gets
``rt->parallel_for(rt, extent, body, &c)`` in its place. Loops whose work does not pay for a
hand-off stay plain loops.

Example:
    >>> w = CWriter("k", {}, ["float *restrict out0 = c->out0;"])
    >>> w.open_parallel("i", 1 << 16, 1 << 16)
    >>> w.line("out0[i] = 0.0f;")
    >>> w.close()
    >>> w.lines[-1].strip()
    'rt->parallel_for(rt, 65536, k_body0, &c);'
    >>> "static void k_body0(void *ctx_, long begin, long end) {" in w.functions[0]
    True
"""
from __future__ import annotations

from collections.abc import Callable

# Fewer elements of work than this run on one thread: a hand-off to the pool costs ~µs. At
# 1 << 15 an LSTM step's 2x64x256 GEMM kernel (32,768 multiply-adds) went to the pool on
# every iteration of its scan: 0.156 ms against 0.105 ms on one thread (2-core EPYC).
PARALLEL_MIN_WORK = 1 << 16


class CWriter:
    """Lines of C at an indentation depth. A parallel loop's body is written into a function
    of its own (``open_parallel``) and replaced, in the kernel, by a ``parallel_for`` call."""

    def __init__(self, kernel_name: str, sizes: dict[str, int], context: list[str],
                 dtypes: dict[str, str] | None = None) -> None:
        self.kernel_name = kernel_name
        self.dtypes = dtypes or {}  # buffer name -> storage dtype, for widening and narrowing
        self.lines: list[str] = []
        self.depth = 1
        self.sizes = sizes  # buffer name -> elements, for bounds of loads
        self.context = context  # the locals every parallel body declares from ``c``
        self.functions: list[str] = []  # the parallel bodies, in order
        self._parallel: tuple | None = None  # the kernel's state while a body is written

    def line(self, text: str) -> None:
        self.lines.append("  " * self.depth + text)

    def open(self, text: str) -> None:
        self.line(text + " {")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self.line("}")
        if self._parallel is not None and self.depth == 1:  # the body's loop is closed
            self._end_parallel()

    def open_parallel(self, var: str, extent: int, work: int,
                      scratch: tuple[str, str] | None = None,
                      before: Callable[[str], list[str]] | None = None) -> None:
        """Opens ``for (var in [0, extent))`` as a parallel loop when ``work`` (elements) pays
        for a hand-off, else as a plain loop. ``scratch``: (C type, name) of a local array of
        the kernel that the body writes too; the body sees it through ``c->scratch``.
        ``before(first)``: lines to put in front of the loop, given the C name of its first
        value (a range of a parallel loop starts anywhere)."""
        before = before or (lambda first: [])
        if work < PARALLEL_MIN_WORK or extent < 2:
            for line in before("0"):
                self.line(line)
            self.open(f"for (long {var} = 0; {var} < {extent}; {var}++)")
            return
        assert self._parallel is None, "parallel loops do not nest"
        body = f"{self.kernel_name}_body{len(self.functions)}"
        self._parallel = (self.lines, self.depth, body, extent, scratch)
        self.lines, self.depth = [], 1
        self.line("const dnf_context *c = (const dnf_context *)ctx_;")
        for declaration in self.context:
            self.line(declaration)
        if scratch is not None:
            ctype, name = scratch
            self.line(f"{ctype} *{name} = ({ctype} *)c->scratch;")
        for line in before("begin"):
            self.line(line)
        self.open(f"for (long {var} = begin; {var} < end; {var}++)")

    def _end_parallel(self) -> None:
        lines, depth, body, extent, scratch = self._parallel
        self.functions.append(f"static void {body}(void *ctx_, long begin, long end) {{\n"
                              + "\n".join(self.lines) + "\n}\n")
        self.lines, self.depth, self._parallel = lines, depth, None
        if scratch is not None:
            self.line(f"c.scratch = {scratch[1]};")
        self.line(f"rt->parallel_for(rt, {extent}, {body}, &c);")
