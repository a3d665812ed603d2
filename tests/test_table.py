"""One display helper (Table) and one eval_mode: what every report and result relies on."""
import pytest
import torch
from torch import nn

from workbench.modes import eval_mode
from workbench.table import Table, TableResult, TextResult


def test_table_aligns_numbers_right_text_left_and_formats_values():
    table = Table(["name", "params", "share", "frozen"],
                  [{"name": "conv", "params": 1200, "share": 0.123456, "frozen": True},
                   {"name": "linear<head>", "params": 40, "frozen": False}],
                  title="two layers", notes=["a note"], indent=2, footer={"name": "total", "params": 1240})
    assert str(table).splitlines() == [
        "two layers",
        "  name          params  share  frozen",
        "  conv           1,200  0.123  yes",
        "  linear<head>      40         no",
        "  total          1,240",
        "a note",
    ]
    assert repr(table) == str(table)


def test_table_html_escapes_cells_and_styles_rows():
    table = Table(["name", "state"], [{"name": "a<b", "state": "frozen"}, {"name": "c", "state": "trainable"}],
                  caption="layers", row_style=lambda row: "background:#eee" if row["state"] == "frozen" else "")
    html = table._repr_html_()
    assert html.startswith("<table><caption>layers</caption><tr><th>name</th><th>state</th></tr>")
    assert "<tr style='background:#eee'><td>a&lt;b</td><td>frozen</td></tr><tr><td>c</td>" in html
    assert "layers" not in str(table)  # a caption is for HTML only; a title shows in both


def test_table_refuses_a_row_naming_an_unknown_column():
    with pytest.raises(ValueError, match=r"\['size'\].*\('name',\)"):
        Table(["name"], [{"name": "a", "size": 3}])


def test_results_show_their_table_or_their_text():
    class Result(TableResult):
        def as_table(self):
            return Table(["x"], [{"x": 1}])

    class Text(TextResult):
        def __str__(self):
            return "a < b"

    assert str(Result()) == repr(Result()) == "x\n1" and "<td>1</td>" in Result()._repr_html_()
    assert repr(Text()) == "a < b" and Text()._repr_html_() == "<pre>a &lt; b</pre>"


def test_eval_mode_restores_every_module_own_mode_even_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    model[1].eval()  # the user's own choice, which model.train(True) would undo
    before = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before == [True, True, False, True]


def test_eval_mode_uses_running_statistics_like_model_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    x = torch.randn(8, 3)
    model.train()
    model(x)  # move the running statistics away from their start
    stats = model[1].running_mean.clone()
    with eval_mode(model), torch.no_grad():
        got = model(x)
    expected = nn.functional.batch_norm(model[0](x), model[1].running_mean, model[1].running_var, model[1].weight,
                                        model[1].bias, False, 0.0, model[1].eps)
    torch.testing.assert_close(got, expected.detach())
    assert torch.equal(model[1].running_mean, stats) and model.training
