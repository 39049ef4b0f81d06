"""MUSE task plugin: the card is task.yaml, the code task.py (the embedded books come from tasks/copyright/synthetic.py)."""
