"""word2vec.c's Huffman tree over the vocabulary, for hierarchical softmax (``sgns.loss: hierarchical``).

Hierarchical softmax (Morin & Bengio 2005; Mikolov et al. 2013) replaces the V-way softmax by the V - 1
binary decisions on the path from the root of a binary tree to the word's leaf.  word2vec.c builds a
Huffman tree over the counts (``CreateBinaryTree``), so frequent words get short paths (the expected path
length is minimal: sum count * len is the Huffman cost).  Its construction needs the counts sorted in
descending order and walks two queues, the leaves from the rarest up (``pos1``) and the inner nodes in
creation order (``pos2``), taking the smaller head twice per inner node::

    count:  [ leaves 0..n-1, descending | inner nodes n..2n-2, ascending as created ]
                        <- pos1                  pos2 ->
    node n + a = min + second min;  the second minimum is the "1" branch (binary[min2] = 1)

A word's ``codes`` are its branch bits from the root down, its ``points`` the inner nodes on the way,
numbered ``node - n`` so they index rows 0..n-2 of the output matrix (word2vec's ``syn1``; the root is row
n - 2).
Word j of the path trains ``sigmoid(u . syn1[points[j]])`` towards ``1 - codes[j]``.

>>> tree = huffman_tree(np.array([0, 0, 0, 5, 3, 2, 2]))   # doctest: +SKIP
>>> tree.codes[3, : tree.lengths[3]], tree.points[3, : tree.lengths[3]]   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class HuffmanTree:
    """Paths of every id (rows of zero-count ids are empty: length 0), padded to the longest path."""

    codes: np.ndarray  # (V, L) uint8: branch bits root -> leaf
    points: np.ndarray  # (V, L) int64: inner-node rows (0 .. nodes - 1) root -> leaf
    lengths: np.ndarray  # (V,) int64: path length per id (0 when the id is not in the tree)
    nodes: int  # inner nodes = leaves - 1: rows of the output matrix hierarchical softmax uses


def huffman_tree(counts: np.ndarray) -> HuffmanTree:
    """word2vec.c's ``CreateBinaryTree`` over the ids with a positive count (ids keep their own rows).

    The ids are put in descending count order first (stable, so ties keep id order; word2vec.c's vocabulary
    is sorted this way before the tree is built); with one word the path is a single decision at the root.
    """
    counts = np.asarray(counts, dtype=np.float64)
    vocab = len(counts)
    ids = np.flatnonzero(counts > 0)
    ids = ids[np.argsort(-counts[ids], kind="stable")]
    n = len(ids)
    if n == 0:
        raise ValueError("no id has a positive count: cannot build a Huffman tree")
    if n == 1:  # word2vec.c would loop forever; one decision at the root (node 0) is the natural tree
        codes, points, lengths = (
            np.zeros((vocab, 1), np.uint8),
            np.zeros((vocab, 1), np.int64),
            np.zeros(vocab, np.int64),
        )
        lengths[ids[0]] = 1
        return HuffmanTree(codes, points, lengths, 1)
    count = np.concatenate([counts[ids], np.full(n - 1, 1e15)])
    parent = np.zeros(2 * n - 1, np.int64)
    binary = np.zeros(2 * n - 1, np.uint8)
    pos1, pos2 = n - 1, n
    for a in range(n - 1):
        pick = []
        for _ in range(2):  # the two smallest of the two queue heads (a leaf wins ties only if strictly less)
            if pos1 >= 0 and count[pos1] < count[pos2]:
                pick.append(pos1)
                pos1 -= 1
            else:
                pick.append(pos2)
                pos2 += 1
        count[n + a] = count[pick[0]] + count[pick[1]]
        parent[pick[0]] = parent[pick[1]] = n + a
        binary[pick[1]] = 1
    root = 2 * n - 2
    paths = []
    for leaf in range(n):  # walk up to the root, then reverse: root -> leaf
        bits, nodes, b = [], [], leaf
        while b != root:
            bits.append(binary[b])
            b = parent[b]
            nodes.append(b - n)
        paths.append((bits[::-1], nodes[::-1]))
    longest = max(len(bits) for bits, _ in paths)
    codes = np.zeros((vocab, longest), np.uint8)
    points = np.zeros((vocab, longest), np.int64)
    lengths = np.zeros(vocab, np.int64)
    for leaf, (bits, nodes) in enumerate(paths):
        i = ids[leaf]
        codes[i, : len(bits)], points[i, : len(nodes)], lengths[i] = bits, nodes, len(bits)
    return HuffmanTree(codes, points, lengths, n - 1)
