"""Publishing: the results files, the leaderboard table, per-sample details, the requests mirror and the
dataset card, to a local folder or a Hub dataset."""
