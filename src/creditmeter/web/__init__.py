"""What the HTTP edges (the API, the console, the gateway) share, and nothing else: the key check
with its short cache (``access``), the request-size limit (``bodylimit``) and the Prometheus metrics
(``metrics``). It imports the engine and the core; no edge imports another edge, so whatever two of
them need lives here.
"""
