"""Demo and test data: organisations and individuals with data of every category, for
`make run`, the benchmarks and the tests. Not used by production code.
"""
