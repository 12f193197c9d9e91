"""Offer every executed chapter as an ``.ipynb`` in the page's download menu (sphinx-book-theme).

The theme adds the ``.ipynb`` entry only for pages with a launch button (Binder, Colab, ...), which an
offline book has none of.  This handler does the same without one: it copies the notebook that the
build executed (``_build/jupyter_execute/<page>.ipynb``, parameters cell included) next to the page's
source in ``_sources/`` and names it in the page context, before the theme builds its buttons.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def offer_notebook(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    if doctree is None or not str(context.get("sourcename", "")).endswith((".md", ".md.txt")):
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.exists():  # a plain markdown page (no code cells) is not executed
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    app.connect("html-page-context", offer_notebook, priority=500)  # the theme's header buttons run at 501
    return {"parallel_read_safe": True, "parallel_write_safe": True}
