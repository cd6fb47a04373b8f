"""The second stage: test-time prediction with TTA (``predict``), exact submissions (``submission``), blends
(``blend``), stacking (``stack``) and the run report (``report``).

May import: ``kit.training``, ``kit.runs``, ``kit.data``, ``kit.core``.
"""
