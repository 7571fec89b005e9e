"""Training curves: one plotter (fer_deep.curves) for training's PNG and the report's figure, without Keras."""

from __future__ import annotations

from fer_deep.curves import curves_figure, curves_png, history_series, plot_history

from deep_testing import run_python

PNG = b"\x89PNG\r\n\x1a\n"


def test_history_as_a_dict_or_a_list_of_epochs():
    epochs = [{"loss": 1.0, "accuracy": 0.5}, {"loss": 0.8, "accuracy": 0.6, "val_loss": 0.9}]
    assert history_series(epochs) == {"loss": [1.0, 0.8], "accuracy": [0.5, 0.6], "val_loss": [None, 0.9]}
    assert history_series({"loss": [1.0]}) == {"loss": [1.0]}
    assert history_series(None) == {}


def test_one_panel_per_metric_with_values_and_the_best_epoch_marked():
    history = {"loss": [1.5, 1.2, 1.1], "val_loss": [1.6, None, 1.3], "accuracy": [0.3, 0.5, 0.6]}
    figure = curves_figure(history, best_epoch=2, title="cnn-tutorial")
    loss, accuracy = figure.axes
    assert [loss.get_ylabel(), accuracy.get_ylabel()] == ["loss", "accuracy"]
    assert [line.get_label() for line in loss.get_lines()] == ["training", "validation", "best epoch 2"]
    assert [line.get_label() for line in accuracy.get_lines()] == ["training", "best epoch 2"]
    assert list(loss.get_lines()[2].get_xdata()) == [2, 2]
    assert figure.get_suptitle() == "cnn-tutorial"
    only_loss = curves_figure({"loss": [1.0, 0.9]})
    assert [axes.get_ylabel() for axes in only_loss.axes] == ["loss"]
    assert only_loss.axes[0].get_lines()[0].get_label() == "training"  # no best epoch given, no line


def test_nothing_to_draw_gives_no_figure_and_no_file(tmp_path):
    assert curves_figure({"epoch_seconds": [3.0]}) is None and curves_png({}) is None
    assert plot_history({}, tmp_path / "curves.png") is None
    assert list(tmp_path.iterdir()) == []


def test_training_and_report_draw_the_same_png(tmp_path):
    history = {"loss": [1.5, 1.2], "val_loss": [1.6, 1.4], "accuracy": [0.3, 0.5], "val_accuracy": [0.25, 0.45]}
    path = plot_history(history, tmp_path / "sub" / "curves.png", best_epoch=2, title="cnn-tutorial")
    assert path.read_bytes()[:8] == PNG
    assert path.read_bytes() == curves_png(history, best_epoch=2, title="cnn-tutorial")


def test_the_plotter_imports_no_keras():
    result = run_python("import sys, fer_deep.curves, fer_bench.report.plots\n"
                        "print([name for name in ('keras', 'tensorflow') if name in sys.modules])")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
