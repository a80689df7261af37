"""Study protocols beside the product path: held-out cold items and LLM-ESR's long tail.

The product path (``training.run``, ``training.models``, ``training.items``, ``training.data``) never imports
this package; a protocol reaches the trainer only through the ``TrainingRules`` its split carries.
"""
