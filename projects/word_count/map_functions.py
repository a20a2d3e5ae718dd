"""Word count: one (word, 1) item per word of the line."""


def word_count(line, auxiliary_data):
    return [(word, 1) for word in line.split()]


def word_count_filtered(line, auxiliary_data):
    """Counts only the words listed in the auxiliary data {"words": [...]}."""
    wanted = auxiliary_data["words"]
    return [(word, 1) for word in line.split() if word in wanted]
