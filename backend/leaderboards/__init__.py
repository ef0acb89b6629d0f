"""Leaderboards as configs: what each runs, and how its published scores are formed."""
