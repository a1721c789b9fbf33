"""``difflab app``: a browser app (Gradio) with a tab per method, for trying models without a command line.

- :mod:`.limits`: the input limits (image size, audio length, steps, images) and :class:`~.limits.AppError`;
- :mod:`.models`: the models the app offers (shipped pretrained ones and ``--model`` / ``--video`` runs),
  loaded on first use and kept;
- :mod:`.sample`, :mod:`.distilled`, :mod:`.compress`, :mod:`.vocode`, :mod:`.video`: one module of plain
  functions per tab (values and paths in, files and numbers out, every limit checked there, so each can be
  tested without a browser); they call the same library functions as the ``difflab`` commands;
- :mod:`.server`: the Gradio page (imports Gradio) and :mod:`.cli`: ``difflab app``.

Gradio is the optional extra ``app`` (``pip install 'difflab[app]'``) and is imported only by
:mod:`.server`; nothing here imports torch at module level. See docs/app.md.
"""
