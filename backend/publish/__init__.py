"""Publishing: the results files, the leaderboard table, per-sample details, the requests export and the
dataset card, to a local folder or a Hub dataset."""
