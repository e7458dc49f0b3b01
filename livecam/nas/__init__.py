"""The NAS side of livecam: an index of the recordings, a completeness audit, export.

Everything here reads the recordings root (``{site}/{node}/...`` as the nodes'
``remote_path`` lays it out) and writes only its own files: the SQLite index and
what a command is asked to produce. See docs/nas.md.
"""
