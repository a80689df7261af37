"""Item tables: the item-embedding modes, the language embeddings they start from, the semantic query."""
