"""Parts the demo, the tests and the benchmarks share: a private redis-server and a slow HTTP source."""
