"""The Textual UI: the only package that imports textual.

``ConntuiApp`` (``app.py``) draws read-only views of the engine's session store; the
capture thread never calls into it.
"""
