"""Item tables: the item-embedding modes and the language embeddings they start from."""
