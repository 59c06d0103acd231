"""lmpipe: a distributed pipeline, on Ray, for word embeddings and large-corpus language modelling.

The import namespace over the repository's folders (``pyproject.toml`` maps them)::

    lmpipe.pipelines   the run directory, the spec, the stages, the CLI (``lmpipe``)
    lmpipe.lm          n-gram estimation (lmplz-exact modified Kneser-Ney), neural LMs, taggers
    lmpipe.embeddings  skip-gram and GloVe trainers, the ``Vectors`` artifact, evaluation
    lmpipe.cluster     Ray connection, the training harness, job submission

Every module of the project is a sub-module of this package, so this file imports nothing: a Ray worker
that unpickles ``lmpipe.lm.train.train_loop`` must not pay for the orchestration floor.
"""

__version__ = "0.1.0"
