"""Run peer implementations (d3rlpy's CQL and BC) on our data, outside our environment.

d3rlpy 2.8.1 pins ``gymnasium==1.0.0``, which must never replace the gymnasium our runs use, so
peers live in their own venv (``venv.py``) with our torch pinned by a constraint. Our side loads
the dataset exactly as ``cql-train`` does, exports it to one .npz plus a job JSON (``job.py``),
and runs ``d3rlpy_train.py`` with the peer venv's python; that script writes ordinary run dirs
(config.yaml, metrics.jsonl, summary.json) that ``cql-report`` and the evidence tables read.
"""
