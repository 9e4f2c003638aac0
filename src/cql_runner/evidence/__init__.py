"""The evidence suite: CQL against offline SAC and behaviour cloning on datasets cql-collect builds.

``cql-evidence run`` (run_suite) plans and runs it resumably, ``cql-evidence results`` (results_page) turns its
run dirs into RESULTS.md, and ``cql-evidence value-check`` (value_check) compares learned values with
Monte-Carlo returns. suite_plan says what runs, dataset_store builds the datasets, suite_timing keeps the clock,
gather_runs / results_reading / value_figure read and present the finished runs.
"""
