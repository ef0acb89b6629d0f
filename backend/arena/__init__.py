"""The arena: pairwise battles between models (the public Chatbot Arena's format) and their Bradley-Terry
ratings on the Arena's scale. battles.py reads a battles file into compact arrays, ratings.py fits the
ratings, their bootstrap intervals and ranks; style.py fits them under style control, from the answers'
counts that style_counts.py reads. A pure library: no database, no services."""
