"""A run's preference pairs taken away and shown: `csr pairs export` (a Hugging Face dataset in
TRL's preference columns) and `csr pairs report` (a static HTML report).

Modules: source (a run's Redis data, read without changing it), export (the dataset),
html (the report), evaluation (a run's evaluations in the report), atomic (writing an output
directory whole or not at all), cli (the commands).
"""
