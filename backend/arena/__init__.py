"""The arena: pairwise battles between models (the public Chatbot Arena's format) and their Bradley-Terry
ratings on the Arena's scale. battles.py reads a battles file into compact arrays, ratings.py fits the
ratings, their bootstrap intervals and ranks. A pure library: no database, no services."""
