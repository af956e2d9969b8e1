"""Every table the project prints or writes, rendered by ``tabulate``: console text (the quickstart,
the benchmark, the dataset counts), Markdown (report, defend, docs/ERRORS.md) and LaTeX (report).

Cells are given as the text to show (numbers already formatted): ``disable_numparse`` keeps
tabulate from re-formatting them, and ``align`` (one of "left", "right", "center" per column) says
how each column lines up.
"""
import contextlib


@contextlib.contextmanager
def _headers_as_wide_as_their_text():
    """tabulate widens a column to its header plus ``MIN_PADDING`` (2) spaces; the console tables keep
    a column as wide as its widest cell, header included (the quickstart's table in README.md)."""
    import tabulate as tabulate_module

    saved, tabulate_module.MIN_PADDING = tabulate_module.MIN_PADDING, 0
    try:
        yield
    finally:
        tabulate_module.MIN_PADDING = saved


def tabulate(*args, **kwargs):
    from tabulate import tabulate as render  # imported when a table is drawn: training never needs it

    return render(*args, **kwargs)


def text(rows, headers, align=None):
    """A console table: columns two spaces apart, the header underlined with dashes."""
    with _headers_as_wide_as_their_text():
        return tabulate(rows, headers=headers, tablefmt="simple", colalign=align, disable_numparse=True)


def markdown(rows, headers, align=None):
    """A GitHub-flavoured Markdown (pipe) table; ``|`` inside a cell is escaped."""
    escape = [[str(cell).replace("|", "\\|") for cell in row] for row in rows]
    return tabulate(escape, headers=[str(h).replace("|", "\\|") for h in headers], tablefmt="github",
                    colalign=align, disable_numparse=True)


def latex(rows, headers, align=None):
    """A booktabs ``tabular`` (``\\toprule``, ``\\midrule``, ``\\bottomrule``), LaTeX's special characters
    escaped."""
    return tabulate(rows, headers=headers, tablefmt="latex_booktabs", colalign=align, disable_numparse=True)
