"""Judged leaderboards: a judge's pairwise verdicts (AlpacaEval-format annotations) turned into AlpacaEval 2's
metrics. annotations.py reads the file, metrics.py computes the win rates, glm.py the length-controlled win
rate, score.py all of them for one model."""
