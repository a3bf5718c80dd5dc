"""Trends: hourly statistics of every machine kept for months (``store.py``), the ``watch`` severity
when a machine's normal score drifts toward its threshold over days (``severity.py``), and the sink
that feeds them as the agent runs (``sink.py``)."""
