"""Toxicity task plugin: the card is task.yaml, the code task.py, the offline world synthetic.py, scorers in scorers.py."""
