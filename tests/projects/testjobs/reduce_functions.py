"""Reduce functions of the integration tests' project."""


def sum_values(group, auxiliary_data):
    """[(key, sum of values)]; group is a list."""
    return [(group[0][0], sum(value for _, value in group))]


def sum_streaming(group, auxiliary_data):
    """Like sum_values, but reads the group once, in order (a disk-backed group works too)."""
    first = None
    total = 0
    for item in group:
        if first is None:
            first = item
        total += item[1]
    return [(first[0], total)]


def fail_on_boom_key(group, auxiliary_data):
    """Sums, but raises on the key 'boom'."""
    key = group[0][0]
    if key == "boom":
        raise RuntimeError("reduce cannot take key boom")
    return [(key, sum(value for _, value in group))]


def sum_into_disk_list(group, auxiliary_data):
    """disk_based_output: appends (key, sum) and (key, count) items to the disk list and returns it."""
    sink, _aux = auxiliary_data
    key = None
    total = count = 0
    for item in group:
        key = item[0]
        total += item[1]
        count += 1
    sink.append((key, total))
    sink.append((["count", key], count))
    return sink


def sum_into_disk_list_return_none(group, auxiliary_data):
    """disk_based_output: appends (key, sum) to the disk list and returns None."""
    sink, _aux = auxiliary_data
    items = list(group)
    sink.append((items[0][0], sum(v for _, v in items)))


def not_json(group, auxiliary_data):
    """Returns an item that JSON cannot write (a set)."""
    return [(group[0][0], {v for _, v in group})]


def sum_by_repr(group, auxiliary_data):
    """[(repr(key), sum)]: any key type (bytes, None, nested tuples) as JSON text."""
    return [(repr(group[0][0]), sum(value for _, value in group))]


def fail_combine(group, auxiliary_data):
    """A combiner that always raises."""
    raise KeyError("combiner cannot combine " + repr(group[0][0]))


def fail_on_none_key(group, auxiliary_data):
    """Sums, but raises on the key None."""
    key = group[0][0]
    if key is None:
        raise RuntimeError("reduce refuses this group")
    return [(key, sum(value for _, value in group))]


_combine_calls = 0


def combine_oserror_once(group, auxiliary_data):
    """A summing combiner whose first call in a process raises OSError (a flaky scratch file)."""
    global _combine_calls
    _combine_calls += 1
    if _combine_calls == 1:
        raise OSError("combiner could not write its scratch file")
    return [(group[0][0], sum(value for _, value in group))]


def group_shape(group, auxiliary_data):
    """Uses a group as the list a reduce function expects: len, indexing (negative too), slices, two passes."""
    key = group[0][0]
    total = sum(v for _, v in group)
    again = sum(1 for _ in group)
    middle = group[len(group) // 2 - 1:len(group) // 2 + 2]
    return [(key, {"len": len(group), "sum": total, "again": again, "last_key": group[-1][0],
                   "middle": len(middle), "tail": [k == key for k, _ in group[-3:]],
                   "type": type(group).__name__})]


def sum_values_slow_on_marker(group, auxiliary_data):
    """sum_values that sleeps auxiliary_data["seconds"] on the key 'SLOW' (to catch a reducer mid-phase)."""
    import time

    if group[0][0] == "SLOW":
        time.sleep(float((auxiliary_data or {}).get("seconds", 3)))
    return [(group[0][0], sum(value for _, value in group))]


def sum_values_sleep_on_key(group, auxiliary_data):
    """sum_values that sleeps N seconds on a key 'SLEEP_<N>' (to catch a server in its reduce phase)."""
    import time

    key = group[0][0]
    if isinstance(key, str) and key.startswith("SLEEP_"):
        time.sleep(float(key[len("SLEEP_"):]))
    return [(key, sum(value for _, value in group))]
