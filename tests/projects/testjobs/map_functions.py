"""Map functions of the integration tests' project (loaded by name, like any project)."""
import os
import time

from cluster.exceptions import BadRecord


def key_value(line, auxiliary_data):
    """'key\\tvalue' lines (sample_data skewed) -> (key, int(value))."""
    key, _, value = line.rstrip("\n").partition("\t")
    return [(key, int(value))]


def word_pairs(line, auxiliary_data):
    """Tuple keys: each pair of neighbouring words, with the first word's length."""
    words = line.split()
    return [((a, b, len(a)), 1) for a, b in zip(words, words[1:], strict=False)]


def number_keys(line, auxiliary_data):
    """Int keys: every whole number on the line, valued by itself."""
    return [(int(x), int(x)) for x in line.split()]


def mixed_keys(line, auxiliary_data):
    """Keys of mixed types on every line: int, str (of the same digits), None, tuple."""
    out = []
    for x in line.split():
        n = int(x)
        out += [(n, 1), (x, 1), (None, n), (("t", n % 7), n)]
    return out


def count_records(line, auxiliary_data):
    """One ('records', 1) item and one (line, 1) item per line (for downsampling)."""
    return [("records", 1), (line.rstrip("\n"), 1)]


def fail_on_boom(line, auxiliary_data):
    """Word count that raises ValueError on a line starting with BOOM."""
    if line.startswith("BOOM"):
        raise ValueError("this line goes boom: " + line.strip())
    return [(word, 1) for word in line.split()]


def bad_record_on_bad(line, auxiliary_data):
    """Word count that counts a line starting with BAD as a bad record."""
    if line.startswith("BAD"):
        raise BadRecord("line starts with BAD")
    return [(word, 1) for word in line.split()]


def sleep_on_marker(line, auxiliary_data):
    """Word count that, on a line starting with SLEEP, writes 'cluster-<job>-<server> <pid>' and sleeps 30 s.

    auxiliary_data: {"pid_dir": folder for the pid file}.
    """
    if line.startswith("SLEEP"):
        path = os.path.join(auxiliary_data["pid_dir"], f"sleeper-{os.getpid()}.pid")
        with open(path + ".tmp", "w") as fh:
            name = f"cluster-{os.environ['CLUSTER_JOB_NAME']}-{os.environ['CLUSTER_SERVER_ID']}"
            fh.write(f"{name} {os.getpid()}\n")
        os.replace(path + ".tmp", path)
        time.sleep(30)
    return [(word, 1) for word in line.split()]


def token_keys(line, auxiliary_data):
    """Int keys for digit tokens, str keys for the others: (token, 1)."""
    return [(int(t) if t.isdigit() else t, 1) for t in line.split()]


def returns_a_number(line, auxiliary_data):
    """Misuse: returns an int, not an iterable of items."""
    return len(line)


def triples(line, auxiliary_data):
    """Misuse: (key, value, extra) is not a (key, value) pair."""
    return [(word, 1, "extra") for word in line.split()]


def list_keys(line, auxiliary_data):
    """Misuse: a list is not a hashable key."""
    return [(line.split(), 1)]


def _typed_key(category, n):
    if category == 0:
        return n % 50
    if category == 1:
        return str(n % 50)
    if category == 2:
        return (n % 5, n % 3)
    if category == 3:
        return (n % 5, str(n % 3))
    if category == 4:
        return (n % 5, None)
    if category == 5:
        return None if n % 2 else float(n % 7) + 0.25
    if category == 6:
        return b"b%d" % (n % 9)
    if category == 7:
        return float(n % 3) + 0.5
    if category == 8:
        return (n % 5, n % 3) if n % 2 else (n % 5, str(n % 3))
    return ("deep", (n % 2, ("x", n % 3)))


def typed_keys(line, auxiliary_data):
    """'c<category> n n n ...' -> (key of that category's type, 1) per number (see _typed_key)."""
    head, *numbers = line.split()
    category = int(head[1:])
    return [(_typed_key(category, int(x)), 1) for x in numbers]


def words_and_none(line, auxiliary_data):
    """(word, 1) per word, and (None, 1) per line."""
    return [(word, 1) for word in line.split()] + [(None, 1)]


def print_marker(line, auxiliary_data):
    """Word count that prints lines starting with PRINT (they must reach the server's window and log)."""
    if line.startswith("PRINT"):
        print(line.strip(), flush=True)
    return [(word, 1) for word in line.split()]


def slow_lines(line, auxiliary_data):
    """Word count that sleeps on lines 'SLOW <seconds> ...' (to catch a server in the middle of map)."""
    if line.startswith("SLOW"):
        time.sleep(float(line.split()[1]))
    return [(word, 1) for word in line.split()]


def words(line, auxiliary_data):
    """Plain word count: (word, 1) per word."""
    return [(word, 1) for word in line.split()]


def weighted_words(line, auxiliary_data):
    """Each word with its weight from the auxiliary data ({"weights": {word: n}}; 0 when absent)."""
    weights = auxiliary_data["weights"]
    for w in line.split():
        yield w, weights.get(w, 0)


def fail_on_boom_noting(line, auxiliary_data):
    """Word count that raises on a line containing 'boom', first noting the raise in a file of its own
    under auxiliary_data["dir"] (so a test can count how often it ran)."""
    if "boom" in line:
        with open(os.path.join(auxiliary_data["dir"], f"raised-{os.getpid()}-{time.monotonic_ns()}"), "w"):
            pass
        raise ValueError("cannot map a line with boom")
    return [(word, 1) for word in line.split()]


def hold_gil_on_marker(line, auxiliary_data):
    """Word count that, on a line 'GIL <seconds> ...', runs one C call that holds the interpreter lock that
    long (what `str.split` of a 200 MB line does): no other thread of the process runs meanwhile."""
    if line.startswith("GIL "):
        started = time.perf_counter()
        sum(range(10 ** 6))
        unit = max(time.perf_counter() - started, 1e-6)
        sum(range(int(float(line.split()[1]) / unit * 10 ** 6)))  # one C loop: no bytecode, no switch
    return [(word, 1) for word in line.split()]
