"""Datasets: the registry (``registry``), the fetcher and cache (``fetch``), the ``data:`` resolver (``resolve``).

Pipeline specs name corpora by reference, never by path, so one spec runs on a laptop (files downloaded
once into a cache) and on an air-gapped cluster (files read from a shared, read-only mirror)::

    corpus:
      train: data:ptb/train            # a logical split
      valid: data:ptb/valid
      extra: data:conll2003/eng.testa  # or a path inside the dataset's folder

Usage::

    >>> from lmpipe.pipelines.datasets.registry import list_datasets
    >>> from lmpipe.pipelines.datasets.fetch import fetch
    >>> from lmpipe.pipelines.datasets.resolve import resolve
    >>> [d.name for d in list_datasets()][:3]
    ['ptb', 'wikitext-2', 'wikitext-103']
    >>> fetch("ptb", mirror="/srv/data-mirror")             # doctest: +SKIP
    PosixPath('/home/me/.cache/lmpipe/data/ptb')
    >>> resolve("data:ptb/train")                           # doctest: +SKIP
    PosixPath('/home/me/.cache/lmpipe/data/ptb/ptb.train.txt')

Glossary (one name per thing):
  * *data root* -- a directory laid out like the mirror, ``<root>/<NAME>/...``.  The mirror, the cache
    (``$LMPIPE_DATA_HOME``, default ``~/.cache/lmpipe/data``) and any ``--dest`` are all data roots, so a
    filled cache can itself serve as a mirror.
  * *path* -- a file's location relative to the data root, always under ``<NAME>/`` (``ptb/ptb.train.txt``).
  * *split* -- a logical name for one file or tree: ``train``/``valid``/``test``, or ``all`` for a corpus
    without a standard split.
  * *tree* -- a directory of many files (Brown's 500 samples), pinned by one digest of its ``sha256sum``
    listing, because 2,700 per-file hashes would drown this registry.

Where the bytes come from:
  * a *mirror* (``mirror=`` / ``--mirror`` or ``$LMPIPE_DATA_MIRROR``).  ``fetch`` *copies* from it, hashing
    while copying, because a cache must outlive the mount it was filled from.  ``resolve`` *references*
    mirror files in place (a cluster shares one read-only mirror instead of copying it per node), after
    checking their checksums once per process.
  * otherwise ``fetch`` downloads each source with urllib into ``<root>/<NAME>/.download/``, checks every
    known digest, extracts the listed members (zip, tar.gz, gz), and installs every file as temp + rename.
    It writes the marker ``<root>/<NAME>/.lmpipe-fetched.json`` last.  A dataset with a current marker is
    never fetched again, and ``resolve`` does not use a cached dataset that has no marker.

Checksums: sha256 wherever it is known (every mirrored file, from the mirror's ``SHA256SUMS``).  md5 is
also recorded, and checked, where a publisher documents only md5 (torchtext).  An unknown digest is
``None``, never guessed; the sha256 actually found is then recorded in the marker.
"""
