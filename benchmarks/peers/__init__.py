"""Peer orchestrators (Dagster, Prefect) running the same workloads in their own virtualenvs.

``dagster_bench`` and ``prefect_bench`` run *inside* a peer's virtualenv (stdlib + the peer only; they
import nothing from assetflow); :mod:`benchmarks.peers.run` creates the virtualenvs, runs them with
time limits and turns their results into figures next to assetflow's.
"""
