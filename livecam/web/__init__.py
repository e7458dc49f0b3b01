"""``livecam web``: a read-only web page, on a node (its cameras live) or on the NAS
(the recordings on a timeline). Needs the ``web`` extra (Starlette and uvicorn)."""
