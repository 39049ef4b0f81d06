"""Copyright task plugin: the card is task.yaml, the code task.py, the offline books synthetic.py."""
