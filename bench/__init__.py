"""Benchmarks for sAsync and AsynQueue against their peers.

Run with C{./scripts/bench} (see C{docs/benchmarks.md}); every measured
variant runs in its own subprocess so a Twisted reactor, an asyncio loop
and the peak RSS all start fresh each time.
"""
