"""``cql-evidence run``: the CQL vs offline SAC vs BC evidence suite, in one resumable command.

It builds the datasets, trains CQL (Lagrange τ and fixed α), offline SAC and BC on each, checks the
lower-bound property of every trained policy, and writes docs/RESULTS.md.

    cql-evidence run [OUT] [--budget NAME] [--minari-root DIR] [--behaviour-cache DIR]

NAME: default, tiny, gpu, discrete, tiny-discrete or finetune.

The discrete budgets build CartPole (and MinAtar Breakout) with cql-collect's DQN and train discrete CQL,
offline Double DQN and BC on them (see discrete_cells.py); a method that cannot act in a dataset's action
space is skipped for it, with the reason in the log.

`make evidence` runs it from the repository root. Relative paths (OUT's default runs/evidence, --docs'
default docs) are taken from the current directory.

Resuming: a dataset that exists in the store is not rebuilt; a run whose every seed dir has a completed
summary.json (at the planned step count) and a value_check.json is not run again; an unfinished run
continues from its checkpoints (cql-train resumes in place). Layout under OUT:

    minari/                      the Minari store (unless --minari-root)
    behaviour/                   cql-collect's SAC/DQN cache (unless --behaviour-cache)
    runs/<dataset>/<method>/     one cql-train run; seed<k>/ per seed (the run dir itself for one seed)
    logs/                        each subprocess's output
    datasets.json, timing.json   dataset sizes; seconds spent per phase and the machine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from cql_runner.evidence.dataset_store import (
    behaviour_in_progress,
    build_dataset,
    console_script,
    dataset_exists,
    dataset_info,
    run_logged,
    subprocess_env,
)
from cql_runner.evidence.discrete_cells import BEHAVIOUR, not_applicable
from cql_runner.evidence.finetune_plan import is_online, offline_steps, planned_steps
from cql_runner.evidence.suite_plan import (
    DatasetSpec,
    MethodSpec,
    Plan,
    collect_args,
    make_plan,
    peer_args,
    seed_dirs,
    train_args,
)
from cql_runner.evidence.suite_timing import Timing

VALUE_FILE = "value_check.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cql-evidence run", description=__doc__.splitlines()[0])
    p.add_argument(
        "out", nargs="?", type=Path, default=Path("runs") / "evidence", help="suite output dir (default: runs/evidence)"
    )
    p.add_argument(
        "--budget",
        default="default",
        choices=["default", "tiny", "gpu", "discrete", "tiny-discrete", "finetune"],
        help="named plan (tiny: CI; gpu: the long run; discrete: CartPole and MinAtar Breakout, ~40 min of one "
        "core; finetune: offline-to-online fine-tuning)",
    )
    p.add_argument("--minari-root", type=Path, default=None, help="an existing Minari store (default: OUT/minari)")
    p.add_argument(
        "--behaviour-cache",
        type=Path,
        default=None,
        help="cql-collect out_dir holding trained SAC behaviour policies (default: OUT/behaviour)",
    )
    p.add_argument("--docs", type=Path, default=Path("docs"), help="where RESULTS.md and figures go")
    p.add_argument("--no-results", action="store_true", help="skip writing RESULTS.md at the end")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="training processes at once (each one torch thread); 2 uses both cores of an idle 2-core box",
    )
    p.add_argument("--logger", default="none", choices=["none", "wandb-offline"], help="cql-train's remote logger")
    p.add_argument("--datasets", default=None, help="comma-separated dataset keys (default: all in the plan)")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated method names (default: all of ours; d3rlpy-cql and d3rlpy-bc add the peers)",
    )
    p.add_argument(
        "--peer-venv", type=Path, default=None, help="the peers' own venv, built on first use (default: OUT/peer-venv)"
    )
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--hidden", default=None, help="network.hidden as comma-separated sizes, e.g. 128,128")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-episodes", type=int, default=None)
    p.add_argument(
        "--online-steps",
        type=int,
        default=None,
        help="env steps of online fine-tuning for the ft-* methods (ft-sac-scratch gets the same env steps)",
    )
    p.add_argument(
        "--online-eval-every",
        type=int,
        default=None,
        help="evaluation interval of the ft-* runs, in steps of each phase",
    )
    p.add_argument("--value-episodes", type=int, default=None, help="Monte-Carlo episodes per seed")
    p.add_argument(
        "--sac-steps",
        type=int,
        default=None,
        help="cql-collect sac.steps (dqn.steps on discrete datasets) for every dataset",
    )
    p.add_argument("--collect-steps", type=int, default=None, help="cql-collect collect.steps for every dataset")
    p.add_argument(
        "--train-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra cql-train override for every run, e.g. cql.alpha=20 (repeatable; use a new OUT "
        "dir, since finished runs are not retrained)",
    )
    return p.parse_args(argv)


def _ints(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def plan_from_args(args: argparse.Namespace) -> Plan:
    try:
        return _plan_from_args(args)
    except ValueError as e:  # an unknown name or a missing online budget: one line, exit 2
        raise SystemExit(f"error: {e}") from None


def _plan_from_args(args: argparse.Namespace) -> Plan:
    return make_plan(
        args.budget,
        seeds=_ints(args.seeds),
        train_steps=args.train_steps,
        hidden=_ints(args.hidden),
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        value_episodes=args.value_episodes,
        online_steps=args.online_steps,
        online_eval_every=args.online_eval_every,
        sac_steps=args.sac_steps,
        collect_steps=args.collect_steps,
        datasets=_names(args.datasets),
        methods=_names(args.methods),
        extra_train=_overrides(args.train_override),
    )


def _overrides(items: Sequence[str]) -> tuple[str, ...] | None:
    bad = [x for x in items if "=" not in x or x.startswith("=")]
    if bad:
        raise SystemExit(f"error: --train-override wants KEY=VALUE, got {bad[0]!r}; e.g. --train-override cql.alpha=20")
    return tuple(items) or None


def say(message: str) -> None:
    print(f"[evidence {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----- what is done already -------------------------------------------------------------------
def trained(plan: Plan, run_dir: Path, method: MethodSpec) -> bool:
    """Every seed finished at (at least) the planned number of steps (offline + online for fine-tuning)."""
    steps = planned_steps(plan, method)
    for d in seed_dirs(plan, run_dir):
        path = d / "summary.json"
        if not path.is_file():
            return False
        summary = json.loads(path.read_text())
        if summary.get("status") != "completed" or int(summary.get("steps") or 0) < steps:
            return False
    return True


def checked(plan: Plan, run_dir: Path) -> bool:
    """Every seed has a value check of its final checkpoint."""
    for d in seed_dirs(plan, run_dir):
        path = d / VALUE_FILE
        if not path.is_file() or int(json.loads(path.read_text()).get("step", -1)) < plan.train_steps:
            return False
    return True


# ----- the three phases -----------------------------------------------------------------------
def ensure_dataset(ds: DatasetSpec, root: Path, cache: Path, out: Path, timing: Timing) -> bool:
    if dataset_exists(root, ds.dataset_id):
        say(f"dataset {ds.dataset_id} exists in {root}; not rebuilding")
        return True
    busy = behaviour_in_progress(ds.env_id)
    if busy is not None:
        say(
            f"not building {ds.dataset_id}: another cql-collect for {ds.env_id} is running ({busy}); "
            "rerun the suite when it has finished"
        )
        return False
    say(f"building {ds.dataset_id}: cql-collect {' '.join(collect_args(ds, None))}")
    start = time.perf_counter()
    rc = build_dataset(ds, root, cache, out / "logs" / f"collect-{ds.key}.log", Path.cwd())
    timing.add(f"collect:{ds.key}", time.perf_counter() - start)
    if rc != 0 or not dataset_exists(root, ds.dataset_id):
        say(f"FAILED to build {ds.dataset_id} (exit {rc}); see {out / 'logs' / f'collect-{ds.key}.log'}")
        return False
    return True


def ensure_trained(
    plan: Plan,
    ds: DatasetSpec,
    method: MethodSpec,
    run_dir: Path,
    root: Path,
    out: Path,
    logger: str,
    timing: Timing,
    peer_venv: Path | None = None,
) -> bool:
    if trained(plan, run_dir, method):
        say(f"{ds.key}/{method.name}: trained; skipping")
        return True
    online = f" + {plan.online_steps} online env steps" if is_online(method) else ""
    say(f"{ds.key}/{method.name}: training seeds {list(plan.seeds)} for {offline_steps(plan, method)} steps{online}")
    if method.peer is not None:  # the peer trains in its own venv (built on first use)
        venv = peer_venv or out / "peer-venv"
        cmd = [sys.executable, "-m", "cql_runner.peers", *peer_args(plan, ds, method, run_dir, venv)]
    else:
        cmd = [console_script("cql-train"), *train_args(plan, ds, method, run_dir, logger)]
    start = time.perf_counter()
    rc = run_logged(cmd, out / "logs" / f"train-{ds.key}-{method.name}.log", subprocess_env(root), Path.cwd())
    timing.add(f"train:{ds.key}/{method.name}", time.perf_counter() - start)
    if rc != 0 or not trained(plan, run_dir, method):
        say(f"FAILED {ds.key}/{method.name} (exit {rc}); see {out / 'logs'}")
        return False
    return True


def ensure_checked(plan: Plan, ds: DatasetSpec, method: MethodSpec, run_dir: Path, timing: Timing) -> bool:
    if method.peer is not None:  # the value check reads our checkpoints; a peer run has none
        return True
    if is_online(method):  # the lower-bound check is of offline policies; a fine-tuned one has left its data
        return True
    if checked(plan, run_dir):
        return True
    # torch only when there is work
    from cql_runner.evidence.value_check import load_config, load_dataset, summary_line, write_check

    start = time.perf_counter()
    try:
        data = load_dataset(load_config(seed_dirs(plan, run_dir)[0]))
        for d in seed_dirs(plan, run_dir):
            rec = write_check(d, plan.value_episodes, data)
            say(f"{ds.key}/{method.name} seed {rec['seed']}: {summary_line(rec)}")
    except Exception as exc:  # one bad run must not stop the suite; the rerun retries it
        say(f"FAILED value check of {ds.key}/{method.name}: {type(exc).__name__}: {exc}")
        return False
    finally:
        timing.add(f"value:{ds.key}/{method.name}", time.perf_counter() - start)
    return True


def write_datasets_json(plan: Plan, root: Path, out: Path) -> None:
    path = out / "datasets.json"
    known: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    for ds in plan.datasets:
        if dataset_exists(root, ds.dataset_id):
            known[ds.key] = {
                **dataset_info(root, ds.dataset_id),
                "env_id": ds.env_id,
                "level": ds.level,
                "sac_steps": ds.sac_steps,
                "collect_steps": ds.collect_steps,
                "action_space": ds.action_space,
                "behaviour": BEHAVIOUR[ds.action_space],
            }
    path.write_text(json.dumps(known, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from_args(args)
    out: Path = args.out.resolve()
    root = (args.minari_root or out / "minari").resolve()
    cache = (args.behaviour_cache or out / "behaviour").resolve()
    out.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    os.environ["MINARI_DATASETS_PATH"] = str(root)  # the value check reads the datasets in this process
    timing = Timing(out)
    timing.save(plan.budget_dict())
    (out / "plan.json").write_text(json.dumps(plan.budget_dict(), indent=2) + "\n")
    say(
        f"plan {plan.name}: {len(plan.datasets)} datasets × {len(plan.methods)} methods × seeds {list(plan.seeds)}, "
        f"{plan.train_steps} steps, network {list(plan.hidden)}; store {root}"
    )

    failures: list[str] = []
    ready = []
    for ds in plan.datasets:  # one at a time: medium and medium-replay of a task share one SAC
        if ensure_dataset(ds, root, cache, out, timing):
            ready.append(ds)
        else:
            failures.append(f"collect:{ds.key}")
    write_datasets_json(plan, root, out)

    cells = []
    for ds in ready:
        for method in plan.methods:
            why = not_applicable(method, ds)
            if why is None:
                cells.append((ds, method))
            else:
                say(f"{ds.key}/{method.name}: not run: {why}")
    # Training runs in up to --jobs processes; value checks run here, in this thread, as runs finish.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(
                ensure_trained,
                plan,
                ds,
                method,
                out / "runs" / ds.key / method.name,
                root,
                out,
                args.logger,
                timing,
                args.peer_venv,
            ): (ds, method)
            for ds, method in cells
        }
        for future in as_completed(futures):
            ds, method = futures[future]
            if not future.result():
                failures.append(f"train:{ds.key}/{method.name}")
            elif not ensure_checked(plan, ds, method, out / "runs" / ds.key / method.name, timing):
                failures.append(f"value:{ds.key}/{method.name}")
    timing.save()

    if not args.no_results:
        from cql_runner.evidence.results_page import write_results

        md = write_results(out, args.docs)
        say(f"wrote {md}")
    timing.save()
    if failures:
        say(f"{len(failures)} step(s) failed: {', '.join(failures)}; rerun the same command to retry them")
        return 1
    say(f"done in {timing.data['total_s']:.0f} s over {len(timing.data['invocations'])} invocation(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
