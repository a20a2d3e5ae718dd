"""Word count: the item (word, 1) for every word of the line."""
from itertools import repeat

from cluster.emit import with_value


def word_count(line, auxiliary_data):
    # with_value(keys, 1) stands for the items (key, 1) without building a tuple per word
    return with_value(line.split(), 1)


def word_count_tuples(line, auxiliary_data):
    """The same items as plain tuples (zip builds them in C): slower, for comparison."""
    return zip(line.split(), repeat(1))


def word_count_filtered(line, auxiliary_data):
    """Counts only the words listed in the auxiliary data {"words": [...]}."""
    wanted = auxiliary_data["words"]
    return [(word, 1) for word in line.split() if word in wanted]
