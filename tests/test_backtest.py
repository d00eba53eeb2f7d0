"""`factory backtest`: the estimators on logs with known answers, the replay's learning, the log reader's
errors, the CLI end to end on CSV and Parquet, and the simulated market's and the warehouse's own logs."""

from __future__ import annotations

import argparse
import json
import math
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from factory_dagster.backtest import cli
from factory_dagster.backtest.estimators import (
    Z95,
    doubly_robust,
    ips,
    off_policy_estimates,
    replay,
    reward_model,
    snips,
    target_matrix,
)
from factory_dagster.backtest.log import BacktestInputError, LogSpec, read_log, standard_frame
from factory_dagster.backtest.market import market_log, true_value, truth_table
from factory_dagster.backtest.policies import OFF_POLICY, REPLAY, backtest, factory_shares, walk_factory
from factory_dagster.backtest.warehouse import warehouse_log
from factory_dagster.campaign.spec import load_spec
from factory_dagster.market.simulated import SimulatedMarket
from factory_dagster.settings import DEFAULT_SPEC_PATH, Paths
from factory_dagster.warehouse.store import connect

SPEC = load_spec(DEFAULT_SPEC_PATH)
RATES = {("a", "x"): 0.30, ("a", "y"): 0.10, ("a", "z"): 0.10, ("b", "x"): 0.10, ("b", "y"): 0.10, ("b", "z"): 0.40}


def uniform_log(n: int, seed: int = 1) -> pd.DataFrame:
    """Two contexts, three arms drawn uniformly, one clearly better arm per context (x in a, z in b)."""
    rng = np.random.default_rng(seed)
    context = rng.choice(["a", "b"], n)
    arm = rng.choice(["x", "y", "z"], n)
    rate = np.array([RATES[c, a] for c, a in zip(context, arm, strict=True)])
    return pd.DataFrame({"context": context, "arm": arm, "propensity": 1 / 3, "reward": (rng.random(n) < rate).astype(float)})


# ---------------------------------------------------------------- estimators


def test_target_equal_to_logging_gives_the_logged_mean() -> None:
    rng = np.random.default_rng(3)
    propensity = rng.uniform(0.05, 0.9, 400)
    reward = (rng.random(400) < 0.2).astype(float)
    for estimate in (ips(reward, propensity, propensity), snips(reward, propensity, propensity)):
        assert estimate.value == pytest.approx(reward.mean())
        assert estimate.effective_sample_size == pytest.approx(400)
    # IPS with weights 1 is the sample mean, so its interval is the textbook one.
    half = Z95 * reward.std(ddof=1) / math.sqrt(400)
    estimate = ips(reward, propensity, propensity)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((reward.mean() - half, reward.mean() + half))
    assert Z95 == pytest.approx(stats.norm.ppf(0.975))


def test_a_deterministic_policy_on_a_uniform_log() -> None:
    log = pd.DataFrame(
        {
            "context": ["c"] * 6,
            "arm": ["x", "y", "z", "x", "y", "x"],
            "propensity": [1 / 3] * 6,
            "reward": [1.0, 0.0, 1.0, 0.0, 1.0, 1.0],
        }
    )
    always_x = pd.DataFrame({"x": [1.0] * 6, "y": 0.0, "z": 0.0})
    estimates = off_policy_estimates(log, always_x)
    assert estimates["ips"].value == pytest.approx(3 * (1 + 0 + 1) / 6)  # K x sum of x's rewards / n
    assert estimates["snips"].value == pytest.approx(2 / 3)  # the mean reward of the rows that logged x
    assert estimates["snips"].effective_sample_size == pytest.approx(3)  # three rows of weight 3
    # SNIPS's delta-method interval, by hand: sqrt(sum w^2 (r - v)^2 x n / (n - 1)) / sum w.
    se = math.sqrt(9 * ((1 - 2 / 3) ** 2 + (2 / 3) ** 2 + (1 - 2 / 3) ** 2) * 6 / 5) / 9
    assert estimates["snips"].ci_high - estimates["snips"].value == pytest.approx(Z95 * se)
    # Given only the probability of each logged arm, there is no DR (it needs the whole target).
    assert set(off_policy_estimates(log, always_x["x"].where(log["arm"] == "x", 0.0))) == {"ips", "snips"}


def test_doubly_robust_is_the_model_plus_the_weighted_residual() -> None:
    reward = np.array([1.0, 0.0, 1.0])
    estimate = doubly_robust(reward, np.array([0.5, 0.5, 0.25]), np.array([1.0, 0.0, 0.5]), np.full(3, 0.4), np.full(3, 0.6))
    expected = np.array([0.6 + 2 * 0.6, 0.6 + 0.0, 0.6 + 2 * 0.6])
    assert estimate.value == pytest.approx(expected.mean())


def test_estimators_agree_on_a_large_uniform_log_and_cover_the_truth() -> None:
    log = uniform_log(6000)
    best = target_matrix(log, pd.DataFrame({"context": ["a", "b"], "arm": ["x", "z"], "share": [1.0, 1.0]}))
    truth = 0.5 * 0.30 + 0.5 * 0.40
    estimates = off_policy_estimates(log, best)
    for estimate in estimates.values():
        assert estimate.ci_low < truth < estimate.ci_high
        assert estimate.unsupported_mass == 0
    with pytest.raises(ValueError, match="no shares for context"):
        target_matrix(log, pd.DataFrame({"context": ["a"], "arm": ["x"], "share": [1.0]}))


def test_reward_model_is_cross_fitted_and_shrunk() -> None:
    log = uniform_log(600)
    arms = ["x", "y", "z"]
    q = reward_model(log, arms)
    changed = log.copy()
    changed.loc[10, "reward"] = 1 - changed.loc[10, "reward"]
    q_changed = reward_model(changed, arms)
    # Row 10's own reward never enters its own predictions, only those of the other fold's rows.
    assert np.array_equal(q[10], q_changed[10])
    assert not np.array_equal(q[11], q_changed[11])
    # A cell seen once is pulled toward the arm's mean instead of predicting its one reward.
    sparse = pd.concat([log, pd.DataFrame({"context": ["c", "c"], "arm": ["x", "y"], "propensity": 1 / 3, "reward": [1.0, 1.0]})])
    q_sparse = reward_model(sparse.reset_index(drop=True), arms)
    assert 0.1 < q_sparse[-2, 0] < 0.5


def test_replay_interval() -> None:
    estimate = replay(np.array([1.0, 0.0, 0.0, 1.0]))
    assert estimate.value == 0.5 and estimate.matched == 4
    assert estimate.ci_high - 0.5 == pytest.approx(Z95 * np.std([1, 0, 0, 1], ddof=1) / 2)
    assert math.isnan(replay(np.array([])).value)


# ---------------------------------------------------------------- the policies


def test_factory_replay_learns_the_better_arm_per_context() -> None:
    result = backtest(uniform_log(3000), SPEC, mode=REPLAY, batch_size=250, seed=4)
    factory, uniform = result.policies["factory"], result.policies["uniform"]
    assert factory.headline.estimator == "replay"
    assert factory.headline.ci_low > uniform.headline.ci_high  # clearly beats uniform
    assert result.policies["best_single_arm"].details["arm"] == "z"  # 0.25 against x's 0.20
    shares = factory.details["final_shares"]
    assert shares["a"]["x"] > 0.8 and shares["b"]["z"] > 0.8
    # The replay counts only matched rows (about a third of a uniform 3-arm log) and learns from them alone.
    assert 800 < factory.headline.matched < 1200 and factory.details["rows_learned"] == factory.headline.matched
    # The fixed policies' replay is their expected match: uniform matches a third, an arm its own rows.
    assert uniform.headline.matched == pytest.approx(1000)
    assert result.arm_results["x"].headline.matched == (uniform_log(3000)["arm"] == "x").sum()
    again = backtest(uniform_log(3000), SPEC, mode=REPLAY, batch_size=250, seed=4)
    assert again.policies["factory"].headline == factory.headline  # seeded


def test_factory_shares_are_the_lines_allocation_over_any_arm_names() -> None:
    plan = pd.DataFrame({"context": ["seg"] * 3, "arm": ["red", "green", "blue"]})
    learned = pd.DataFrame({"context": ["seg"] * 300, "arm": ["red", "green", "blue"] * 100, "reward": [1.0, 0.0, 0.0] * 100})
    shares = factory_shares(plan, learned, SPEC.model_copy(), date(2026, 1, 1)).set_index("arm")["share"]
    floor = SPEC.allocation.exploration_floor
    assert shares.sum() == pytest.approx(1)
    assert shares["red"] == pytest.approx(floor / 3 + 1 - floor, abs=1e-3)
    assert shares["blue"] == pytest.approx(floor / 3, abs=1e-3)


def test_off_policy_mode_with_non_binary_rewards() -> None:
    log = uniform_log(900).assign(reward=lambda f: f["reward"] * 40 - 5)  # e.g. revenue: -5 or 35
    log["propensity"] = np.where(log["arm"] == "x", 0.5, 0.25)
    result = backtest(log, SPEC, mode=OFF_POLICY, batch_size=300)
    assert result.policies["factory"].headline.estimator == "dr"
    assert any("rescaled" in note or "outside [0, 1]" in note for note in result.notes)
    for policy in result.policies.values():
        assert -5 <= policy.headline.ci_low <= policy.headline.value <= policy.headline.ci_high <= 35


# ---------------------------------------------------------------- reading logs


def _write(path: Path, frame: pd.DataFrame) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def test_read_log_combines_context_columns_and_derives_uniform_propensities(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"seg": ["a", "a", "b", "b"], "region": ["eu", "us", "eu", "eu"], "arm": ["x", "y", "x", "x"], "won": [1, 0, 0, 1]}
    )
    rows = read_log(_write(tmp_path / "log.csv", frame), LogSpec("arm", "won", ("seg", "region"), uniform=True))
    assert rows["context"].tolist() == ["a | eu", "a | us", "b | eu", "b | eu"]
    assert rows["propensity"].tolist() == [1.0, 1.0, 1.0, 1.0]  # one arm logged in each context
    rows = read_log(_write(tmp_path / "log.parquet", frame), LogSpec("arm", "won", ("seg",), uniform=True))
    assert rows["propensity"].tolist() == [0.5, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    ("suffix", "column", "values", "expected"),
    [
        (".csv", "won", ["1", "0", "yes", "1"], r"log\.csv: column 'won', row 3 \(line 4\): expected a number, got 'yes'"),
        (".csv", "p", ["0.5", "0.5", "0.5", "0"], r"column 'p', row 4 \(line 5\): expected a probability in \(0, 1\]"),
        (".parquet", "p", [0.5, 1.5, 0.5, 0.5], r"log\.parquet: column 'p', row 2: expected a probability in \(0, 1\], got 1\.5"),
        (".parquet", "won", [1.0, None, 0.0, 1.0], r"column 'won', row 2: expected a number"),
        (".csv", "arm", ["x", "", "y", "x"], r"column 'arm', row 2 \(line 3\): expected a non-empty value"),
    ],
)
def test_bad_values_name_the_file_column_and_first_bad_row(
    tmp_path: Path, suffix: str, column: str, values: list, expected: str
) -> None:
    frame = pd.DataFrame({"arm": ["x", "y", "x", "y"], "won": [1, 0, 1, 1], "p": [0.5] * 4})
    frame[column] = values
    path = _write(tmp_path / f"log{suffix}", frame)
    with pytest.raises(BacktestInputError, match=expected):
        read_log(path, LogSpec("arm", "won", propensity="p"))


def test_missing_columns_empty_logs_and_unknown_files(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", pd.DataFrame({"arm": ["x"], "won": [1]}))
    with pytest.raises(BacktestInputError, match=r"log\.csv: missing column\(s\) 'segment', 'p'"):
        read_log(path, LogSpec("arm", "won", ("segment",), propensity="p"))
    (tmp_path / "empty.csv").write_text("arm,won\n")
    with pytest.raises(BacktestInputError, match=r"empty\.csv: the log has no data rows"):
        read_log(tmp_path / "empty.csv", LogSpec("arm", "won", uniform=True))
    (tmp_path / "log.xlsx").write_text("x")
    with pytest.raises(BacktestInputError, match="unsupported file type"):
        read_log(tmp_path / "log.xlsx", LogSpec("arm", "won", uniform=True))
    with pytest.raises(BacktestInputError, match="--propensity COL .* or --uniform .* exactly one is needed"):
        LogSpec("arm", "won")


# ---------------------------------------------------------------- the CLI


def _cli(argv: list[str], home: Path, warehouse_url: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog="factory")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["backtest", *argv])
    base = Paths.under(home)
    return args.run(args, Paths(base.home, base.warehouse, base.leads_inbox, base.spec, warehouse_url))


def test_cli_on_a_uniform_csv_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = (
        uniform_log(3000)
        .rename(columns={"context": "segment", "arm": "variant", "reward": "converted"})
        .drop(columns="propensity")
    )
    path = _write(tmp_path / "campaign.csv", log)
    out = tmp_path / "result.json"
    argv = ["--log", str(path), "--arm", "variant", "--reward", "converted", "--context", "segment", "--uniform"]
    assert _cli([*argv, "--batch-size", "100", "--seed", "7", "--json", str(out)], tmp_path) == 0
    figures = json.loads(out.read_text())
    for name in ("uniform", "best_single_arm", "factory"):
        policy = figures["policies"][name]
        assert {"value", "ci_low", "ci_high", "matched"} <= policy.keys()
        assert policy["ci_low"] <= policy["value"] <= policy["ci_high"]
        assert {"replay", "ips", "snips", "dr"} == policy["estimates"].keys()
    assert sorted(figures["arms"]) == ["x", "y", "z"] and all("value" in a for a in figures["arms"].values())
    assert figures["policies"]["factory"]["value"] > figures["policies"]["uniform"]["ci_high"]
    printed = capsys.readouterr().out
    assert "30 batches of 100 rows, seed 7" in printed
    for label in ("uniform", "best_single_arm (z)", "factory", "arm x", "arm y", "arm z"):
        assert f"\n{label} " in printed


def test_cli_on_a_parquet_log_with_propensities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = uniform_log(1200, seed=5)
    log["propensity"] = log["propensity"].astype(float)
    path = _write(tmp_path / "campaign.parquet", log)
    out = tmp_path / "result.json"
    argv = ["--log", str(path), "--arm", "arm", "--reward", "reward", "--context", "context", "--propensity", "propensity"]
    assert _cli([*argv, "--json", str(out)], tmp_path) == 0
    figures = json.loads(out.read_text())
    assert figures["headline_estimator"] == "dr" and figures["log"]["propensity"] == "propensity"
    assert figures["policies"]["factory"]["estimates"].keys() == {"ips", "snips", "dr"}
    assert figures["policies"]["uniform"]["matched"] == pytest.approx(1200)  # target = logging: every row counts fully


def test_cli_refuses_without_a_way_to_weigh_rows_and_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "log.csv", pd.DataFrame({"arm": ["x", "y"], "won": ["1", "n/a"]}))
    assert _cli(["--log", str(path), "--arm", "arm", "--reward", "won"], tmp_path) == 2
    assert "--propensity COL" in capsys.readouterr().err
    assert _cli(["--log", str(path), "--arm", "arm", "--reward", "won", "--uniform"], tmp_path) == 2
    assert "log.csv: column 'won', row 2 (line 3): expected a number, got 'n/a'" in capsys.readouterr().err


# ---------------------------------------------------------------- the market's and the line's own logs


def test_market_log_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    market = SimulatedMarket(tmp_path / "market", seed=11)
    log = market_log(market, SPEC, 720, "uniform", batch_size=180, seed=3)
    assert len(log) == 720 and set(log["propensity"]) == {1 / 3} and set(log["reward"]) <= {0, 1}
    assert log.groupby("day").size().tolist() == [180] * 4
    assert log["reward"].sum() > 0  # the market's own event simulation gave positive replies
    path = _write(tmp_path / "market.csv", log)
    out = tmp_path / "result.json"
    argv = ["--log", str(path), "--arm", "arm", "--reward", "reward", "--context", "segment", "--uniform", "--json", str(out)]
    assert _cli(argv, tmp_path) == 0
    figures = json.loads(out.read_text())
    assert sorted(figures["arms"]) == sorted(a.name for a in SPEC.angles) and figures["rows"] == 720
    segments = log["segment"].value_counts(normalize=True).to_dict()
    truth = truth_table(market, list(segments), sorted(figures["arms"]))
    uniform = truth[["context", "arm"]].assign(share=1 / 3)
    value = true_value(truth, segments, uniform)
    assert figures["policies"]["uniform"]["ci_low"] <= value <= figures["policies"]["uniform"]["ci_high"]


def test_market_log_with_the_factory_as_logging_policy_records_its_shares(tmp_path: Path) -> None:
    log = market_log(SimulatedMarket(tmp_path, seed=11), SPEC, 400, "factory", batch_size=200, seed=2)
    first, second = log[log["day"] == log["day"].min()], log[log["day"] > log["day"].min()]
    assert first["propensity"].between(0.3, 0.37).all()  # no data yet: about a third each
    assert second["propensity"].nunique() > 3  # learned shares, recorded per segment and arm
    rows = standard_frame(log, LogSpec("arm", "reward", ("segment",), propensity="propensity"))
    result = backtest(rows, SPEC, mode=OFF_POLICY, batch=log["day"].to_numpy())
    factory = result.policies["factory"]
    assert result.batches == 2 and factory.details["rows_learned"] == 400
    # Scored on its own log, the line's allocation puts on each row exactly the logged propensity:
    # every weight is 1, so IPS is the logged mean and the effective sample size is every row.
    assert factory.estimates["ips"].value == pytest.approx(log["reward"].mean())
    assert factory.estimates["ips"].effective_sample_size == pytest.approx(400)


def test_warehouse_export_scores_mature_sends_at_the_angle_level(
    tmp_path: Path, engine_url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the DuckDB file (named by `--warehouse PATH`) and on PostgreSQL (the data folder's, FACTORY_WAREHOUSE_URL)."""
    path, home = tmp_path / "warehouse.duckdb", tmp_path / "home"
    with connect(path, url=engine_url) as con:  # the real raw contracts; of the dbt model, the columns the export reads
        con.execute("CREATE SCHEMA intermediate")
        con.execute(
            "CREATE TABLE intermediate.int_send_outcomes (send_id VARCHAR, campaign_id VARCHAR, lead_id VARCHAR, "
            "days_since_send INTEGER, positive_reply BOOLEAN)"
        )
        leads = [
            ("close_speed", False, 9, True),
            ("team_time", False, 8, False),
            ("team_time", True, 9, False),
            ("close_speed", False, None, None),  # assigned, never sent
            ("team_time", False, 2, False),  # sent two days ago: its reply may still come
        ]
        for i, (angle, holdout, age, positive) in enumerate(leads):
            lead = f"lead_{i}"
            con.execute(
                "INSERT INTO raw.assignments (partition_day, run_id, campaign_id, spec_version, lead_id, segment, arm_id, angle, "
                "prompt_version, model, propensity, policy_version, reason, assigned_at, holdout) VALUES "
                "(?, 'run1', ?, 'v1', ?, 'general', ?, ?, 'draft-v1', 'm', 0.2, 'loop-v2', 'r', ?, ?)",
                [date(2026, 1, 1), SPEC.campaign_id, lead, f"{angle}|draft-v1|m", angle, datetime(2026, 1, 1, 9, i), holdout],
            )
            if age is not None:
                con.execute(
                    "INSERT INTO intermediate.int_send_outcomes VALUES (?, ?, ?, ?, ?)",
                    [f"s{i}", SPEC.campaign_id, lead, age, positive],
                )
        allocations = [
            ("close_speed", False, 0.6),
            ("team_time", False, 0.4),
            ("close_speed", True, 0.5),
            ("team_time", True, 0.5),
        ]
        for angle, holdout, share in allocations:
            for version in ("draft-v1", "draft-v2"):  # two prompt versions: the angle's share is their sum
                con.execute(
                    "INSERT INTO raw.allocations (partition_day, run_id, campaign_id, policy_version, segment, arm_id, angle, "
                    "prompt_version, model, sends, replies, posterior_mean, p_best, share, reason, created_at, holdout) VALUES "
                    "(?, 'run1', ?, 'loop-v2', 'general', ?, ?, ?, 'm', 0, 0, 0.015, 0.5, ?, 'r', ?, ?)",
                    [
                        date(2026, 1, 1),
                        SPEC.campaign_id,
                        f"{angle}|{version}|m",
                        angle,
                        version,
                        share / 2,
                        datetime(2026, 1, 1),
                        holdout,
                    ],
                )
    exported = warehouse_log(path, SPEC.campaign_id, outcome_window_days=7, url=engine_url)
    assert (exported.assigned, exported.not_sent, exported.immature) == (5, 1, 1)
    assert exported.rows[["lead_id", "arm", "propensity", "reward"]].values.tolist() == [
        ["lead_0", "close_speed", 0.6, 1],
        ["lead_1", "team_time", 0.4, 0],
        ["lead_2", "team_time", 0.5, 0],
    ]
    assert warehouse_log(path, SPEC.campaign_id, 7, level="arm", url=engine_url).rows["propensity"].tolist() == [0.2, 0.2, 0.2]
    out = tmp_path / "bt.json"
    warehouse = ["--warehouse"] if engine_url else ["--warehouse", str(path)]
    assert _cli([*warehouse, "--export-log", str(tmp_path / "log.csv"), "--json", str(out)], home, engine_url) == 0
    assert json.loads(out.read_text())["rows"] == 3 and len(pd.read_csv(tmp_path / "log.csv")) == 3
    assert json.loads(out.read_text())["log"]["warehouse"] == (engine_url or str(path))
    if engine_url:
        assert not path.exists() and not (home / "warehouse.duckdb").exists()  # PostgreSQL only
        return
    with duckdb.connect(str(tmp_path / "bare.duckdb")):
        pass
    assert _cli(["--warehouse", str(tmp_path / "bare.duckdb")], tmp_path) == 2
    assert "no assignments or send outcomes yet" in capsys.readouterr().err
    assert _cli(["--warehouse", str(path), "--uniform"], tmp_path) == 2
    assert "--uniform: not with --warehouse" in capsys.readouterr().err


def test_replay_keeps_every_context_at_its_frequency_when_contexts_log_different_arm_counts() -> None:
    rng = np.random.default_rng(8)
    n = 4000
    context = rng.choice(["two", "four"], n)
    arm = np.where(context == "two", rng.choice(["x", "y"], n), rng.choice(["w", "x", "y", "z"], n))
    log = standard_frame(
        pd.DataFrame({"c": context, "arm": arm, "won": (rng.random(n) < 0.2).astype(int)}),
        LogSpec("arm", "won", ("c",), uniform=True),
    )
    assert set(zip(log["context"], log["propensity"], strict=True)) == {("two", 0.5), ("four", 0.25)}
    walk = walk_factory(log, sorted(set(arm)), SPEC, np.arange(n) // 500, REPLAY, seed=1)
    matched = log.loc[walk.matched, "context"].value_counts()
    # Without the rejection coin "two" would match twice as often as "four" (1/2 against 1/4 per row).
    assert matched["two"] / matched["four"] == pytest.approx((context == "two").sum() / (context == "four").sum(), rel=0.15)
