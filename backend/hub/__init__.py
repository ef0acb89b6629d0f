"""Where model metadata comes from: the Hugging Face Hub, or a local model store in the Hub cache layout."""
