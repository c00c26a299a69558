"""The tutorial's pure-Python data generator, kept verbatim in spirit as the speed baseline."""

from math import ceil, log10
from random import randint

import numpy as np


def random_sum_pairs(n_examples, n_numbers, largest):
    X, y = list(), list()
    for _ in range(n_examples):
        in_pattern = [randint(1, largest) for _ in range(n_numbers)]
        X.append(in_pattern)
        y.append(sum(in_pattern))
    return X, y


def to_string(X, y, n_numbers, largest):
    max_length = n_numbers * ceil(log10(largest + 1)) + n_numbers - 1
    Xstr = [" " * (max_length - len(s)) + s for s in ("+".join(str(n) for n in p) for p in X)]
    max_length = ceil(log10(n_numbers * (largest + 1)))
    ystr = [" " * (max_length - len(str(p))) + str(p) for p in y]
    return Xstr, ystr


def integer_encode(X, y, alphabet):
    char_to_int = dict((c, i) for i, c in enumerate(alphabet))
    return [[char_to_int[c] for c in p] for p in X], [[char_to_int[c] for c in p] for p in y]


def one_hot_encode(X, y, max_int):
    def encode(seqs):
        out = []
        for seq in seqs:
            pattern = []
            for index in seq:
                vector = [0 for _ in range(max_int)]
                vector[index] = 1
                pattern.append(vector)
            out.append(pattern)
        return out

    return encode(X), encode(y)


def generate_data(n_samples, n_numbers, largest, alphabet):
    X, y = random_sum_pairs(n_samples, n_numbers, largest)
    X, y = to_string(X, y, n_numbers, largest)
    X, y = integer_encode(X, y, alphabet)
    X, y = one_hot_encode(X, y, len(alphabet))
    return np.array(X), np.array(y)
