"""What every layer of the project shares: the error classes (``errors``) and the command-line
wrapper of every entry point (``cli``). Imports nothing from the project."""
