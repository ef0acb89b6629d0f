"""The web pages people use (served by `leaderboard serve` beside the API, over the same services):
rendered on the server, so they read without JavaScript; every asset ships in the package (no CDN)."""
