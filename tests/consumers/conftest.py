"""Exports through the training frameworks' own loading code (issue 21).

Each export format is loaded by the code its consumer trains with, installed from PyPI at pinned
versions, with tiny tokenizers and processors built on the spot (no weights, no model hub):

=================  ===========================================  ==========================  ===============
format             consumer code driven                         environment                 check
=================  ===========================================  ==========================  ===============
``llava``          LLaVA-1.5 ``LazySupervisedDataset``          ``.venv-llava``             check_llava.py
                   (``llava-torch`` 1.2.2.post1), rows with one
                   image; rows with several against LLaVA-NeXT /
                   OneVision's list convention
``qwen-vl``        the same contract; Qwen2-VL's image          ``.venv`` (transformers)    test_consumers.py
                   processor resizes every image to the size
                   the boxes are in
``llamafactory``   LLaMA-Factory 0.9.5 ``get_dataset`` and its  ``.venv-llamafactory``      check_llamafactory.py
                   multimodal collator
``swift``          ms-swift 4.6.0 ``load_dataset`` and          ``.venv-swift``             check_swift.py
                   ``EncodePreprocessor``
``messages``       TRL 1.16 ``DataCollatorForVisionLanguage``   ``.venv``                   test_consumers.py
                   ``Modeling`` with its training chat template
=================  ===========================================  ==========================  ===============

The consumers cannot share one environment: LLaVA-1.5 imports names transformers dropped after 4.4x,
LLaMA-Factory needs ``datasets<=4.0`` and ms-swift ``datasets`` with the ``Json`` feature (4.5+).
``make consumers`` builds the three venvs from the pinned lists in ``consumers/`` (``make test``
does it first). ``test_consumers.py``, in the main suite, builds a small synthetic corpus, exports
every profile in every format into one folder and runs each ``check_*.py`` module in its venv
(``-c tests/consumers/checks.ini``, the folder in ``CXR_CONSUMER_EXPORTS``), requiring every check
to pass and none to be skipped. Run one by hand the same way, e.g.::

    CXR_CONSUMER_EXPORTS=/tmp/exports .venv-swift/bin/python -m pytest -c tests/consumers/checks.ini \\
        tests/consumers/check_swift.py

Every check asserts, for every profile and split: rows in = rows loaded, each row's image count in
pixel tensors, each ``<image>`` replaced by the consumer's image tokens (none left as text), the
assistant turns learned and the prompt masked (labels decode to exactly the answers).

None of the venvs has torchvision: PyPI's builds need CUDA torch, the venvs take the CPU torch on this
disk, and transformers then uses its PIL image processors. So the tiny models are LLaVA-1.5-HF ones
(CLIP image processor): Qwen2-VL's processor loads a video processor that needs torchvision.
LLaMA-Factory imports torchaudio at import time; its extension (a CUDA build on PyPI) is removed at
install, and torchaudio imports as a pure-Python package (audio is never used here).

This conftest is loaded by the main suite too: it imports nothing beyond the standard library.
"""
