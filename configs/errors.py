class InputError(Exception):
    """Bad input or configuration, found before heavy work: the message is one line that names the
    problem (key, value, path) and the fix. ``train.py`` prints it as its last line and exits 2."""
