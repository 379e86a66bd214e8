"""The Streamlit dashboard over the study storage (``nas dashboard``).

What ``nas dashboard`` tells the app, through the environment of the Streamlit process (kept
here, away from the app's heavier modules, so that the command can name them cheaply):
"""

STORAGE_ENV = "SHUFFLENAS_STORAGE"
"""The storage the page shows (a URL as ``nas.storage.resolve_storage_url`` gives)."""

ACTIONS_ENV = "SHUFFLENAS_DASHBOARD_ACTIONS"
"""Whether the page may act on this machine (run ``nas export``, train, open any storage path):
``ACTIONS_ON`` or ``ACTIONS_OFF``, set by ``nas dashboard`` from ``--host`` and
``--allow-remote-actions``. Anything else, or nothing (as with ``streamlit run dashboard/app.py``,
which listens on every address), means off."""

ACTIONS_ON = "on"
ACTIONS_OFF = "off"
