import math

import pandas as pd
import pytest

from kd_utils import paper, reporting


def record(val, test):
    return {"best_val_accuracy": val, "test": {"accuracy": test}}


def test_sweep_table_puts_ours_beside_the_paper():
    table = reporting.sweep_table({1.0: record(0.6, 0.7), 10.0: record(0.8, 0.9)}, paper.TABLE1, "T")
    assert table.index.name == "T" and list(table.index) == [1.0, 10.0]
    row = table.loc[10.0]
    assert [row["val accuracy"], row["test accuracy"], row["paper (test)"], row["difference"]] == pytest.approx(
        [0.8, 0.9, 0.917, 0.9 - 0.917])
    assert row["seeds"] == 1 and math.isnan(row["test sd"])
    assert math.isnan(table.loc[1.0, "paper (test)"])  # the paper's Table 1 has no T = 1
    assert math.isnan(table.loc[1.0, "difference"])


def test_sweep_table_averages_the_seeds_of_each_setting():
    table = reporting.sweep_table({10.0: [record(0.8, 0.90), record(0.7, 0.86), record(0.9, 0.88)]},
                                  paper.TABLE1, "T")
    row = table.loc[10.0]
    assert row["val accuracy"] == pytest.approx(0.8)
    assert row["test accuracy"] == pytest.approx(0.88)
    assert row["test sd"] == pytest.approx(0.02)
    assert row["seeds"] == 3
    assert row["difference"] == pytest.approx(0.88 - 0.917)


def test_beside_paper_joins_per_class_rows():
    ours = pd.DataFrame({"precision": [0.5]}, index=pd.MultiIndex.from_tuples([("DSNet", "benign")], names=["model", "class"]))
    table = reporting.beside_paper(ours, paper.PER_CLASS)
    assert table.loc[("DSNet", "benign")].tolist() == [0.5, 0.88, 0.97, 0.92]


def test_written_tables_carry_their_title(tmp_path):
    table = reporting.sweep_table({64: record(0.8, 0.85)}, paper.TABLE6, "batch size")
    md = reporting.write_table(table, tmp_path, "table6", "Table 6 (profile cpu)")
    assert md.read_text().startswith("### Table 6 (profile cpu)")
    row = [line for line in md.read_text().splitlines() if line.startswith("|           64")][0]
    assert [c.strip() for c in row.split("|")][1:7] == ["64", "0.800", "0.850", "nan", "1", "0.917"]  # counts as integers
    assert pd.read_csv(tmp_path / "table6.csv", index_col=0).loc[64, "paper (test)"] == 0.917


def test_per_class_mean_and_sd_over_runs():
    def run(p_benign, p_malignant):
        return {"test": {"per_class": {"benign": {"precision": p_benign, "recall": 0.5, "f1": 0.5, "support": 10},
                                       "malignant": {"precision": p_malignant, "recall": 0.5, "f1": 0.5, "support": 10}}}}

    runs = [run(0.8, 0.6), run(0.9, 0.7)]
    mean = reporting.per_class(runs)
    assert list(mean.index) == ["benign", "malignant"] and list(mean.columns) == ["precision", "recall", "f1"]
    assert mean.loc["benign", "precision"] == pytest.approx(0.85)
    assert reporting.per_class(runs, "std").loc["malignant", "precision"] == pytest.approx(0.0707107, abs=1e-6)
    assert reporting.per_class(run(0.8, 0.6)).loc["benign", "precision"] == pytest.approx(0.8)  # one record


def test_table1_puts_both_loss_forms_side_by_side():
    by_form = {"paper eq. (5)": {3.0: [record(0.70, 0.80), record(0.72, 0.84)], 10.0: [record(0.75, 0.90)]},
               "eq. (5) with T^2": {3.0: [record(0.78, 0.86), record(0.80, 0.88)], 10.0: [record(0.81, 0.92)]}}
    table = reporting.sweep_forms_table(by_form, paper.TABLE1)
    assert list(table.index) == [3.0, 10.0] and table.index.name == "T"
    row = table.loc[3.0]
    assert row["val accuracy, paper eq. (5)"] == pytest.approx(0.71)
    assert row["test accuracy, eq. (5) with T^2"] == pytest.approx(0.87)
    assert row["test sd, eq. (5) with T^2"] == pytest.approx(0.01 * math.sqrt(2))
    # The paper's numbers are for its own equation (5): the difference is taken there.
    assert row["paper (test)"] == pytest.approx(0.828)
    assert row["difference, paper eq. (5)"] == pytest.approx(0.82 - 0.828)
    assert table.loc[10.0, "seeds"] == 1


def test_convergence_table_sets_the_teacher_against_each_group_of_runs():
    def run(val, test, epochs, best):
        return {**record(val, test), "best_epoch": best,
                "history": {"loss": [1.0] * epochs, "val_categorical_accuracy": [0.5] * epochs}}

    teacher = run(0.92, 0.90, 10, 8)
    short = [run(0.90, 0.89, 12, 12), run(0.88, 0.87, 12, 11)]
    converged = [run(0.93, 0.91, 27, 22), run(0.91, 0.90, 19, 14)]
    table = reporting.convergence_table(teacher, {"12 epochs": short, "converged": converged})
    assert list(table.index) == ["teacher", "12 epochs", "converged"]
    assert table.loc["12 epochs", "epochs trained"] == "12, 12" and table.loc["converged", "best epoch"] == "22, 14"
    assert table.loc["teacher", "epochs trained"] == "10" and table.loc["teacher", "runs"] == 1
    assert table.loc["converged", "validation"] == pytest.approx(0.92)
    assert table.loc["converged", "test"] == pytest.approx(0.905)
    assert table.loc["12 epochs", "teacher's lead (validation)"] == pytest.approx(0.92 - 0.89)
    assert table.loc["converged", "teacher's lead (validation)"] == pytest.approx(0.0)
    assert math.isnan(table.loc["teacher", "teacher's lead (validation)"])
    assert table["runs"].dtype.kind == "i" and table["validation"].dtype.kind == "f"


def test_written_tables_show_levels_as_columns_not_tuples(tmp_path):
    rows = pd.MultiIndex.from_tuples([("teacher", "none"), ("teacher", "frame 90%")], names=["model", "transform"])
    columns = pd.MultiIndex.from_tuples([("Teacher", "accuracy"), ("Teacher", "seeds")])
    table = pd.DataFrame([[0.8512, 1], [0.8, 1]], index=rows, columns=columns)
    md = reporting.write_table(table, tmp_path, "flips", "Flips").read_text()
    assert "(" not in md and "'" not in md
    header, _, first, second = md.splitlines()[2:6]
    assert [c.strip() for c in header.split("|")][1:-1] == ["model", "transform", "Teacher: accuracy", "Teacher: seeds"]
    assert [c.strip() for c in first.split("|")][1:-1] == ["teacher", "none", "0.851", "1"]
    assert [c.strip() for c in second.split("|")][1:-1] == ["teacher", "frame 90%", "0.800", "1"]
    assert pd.read_csv(tmp_path / "flips.csv", header=[0, 1], index_col=[0, 1]).shape == (2, 2)
