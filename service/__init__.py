"""The online service: FastAPI app, history store, model runtime. Imports no torch and no training code."""
