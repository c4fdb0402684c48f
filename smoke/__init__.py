"""The smoke check (development only, never shipped): ``make smoke API=https://…`` (``python -m smoke
--api URL``) runs the acceptance flow against any deployed billhub API, a throwaway user from register
to ``DELETE /me``, one line per step, and exits non-zero naming the step that failed. ``smoke.flow``
holds it; ``tests/e2e/test_smoke.py`` runs it against the local cloud so it stays true."""
