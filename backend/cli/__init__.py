"""The `leaderboard` command line: an interface over the services, like the HTTP API."""
