"""The demo's command line refuses an option that the chosen --model does not use (it was
accepted and silently ignored: `--model mlp --criterion sparsegpt` ran with wanda), with an
argparse error naming the option and its model (exit 2), before any work. Parse only: no
demo runs here."""
import argparse

import pytest

from sparsekern import demo
from sparsekern.demo import cli


def _parser():
    p = argparse.ArgumentParser(prog="sparsekern demo")
    demo.add_arguments(p)
    return p


@pytest.fixture
def parsed_only(monkeypatch):
    """sparsekern.__main__.main up to the demo's argument checks; returns its args."""
    seen = []
    monkeypatch.setattr(cli, "detect_load", lambda: pytest.fail("work started"))
    monkeypatch.setattr(demo, "main", lambda args: seen.append(args) or 0)
    return seen


def _error(argv, capsys, tmp_path) -> str:
    from sparsekern.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "out"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sparsekern demo") and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    return err.strip().splitlines()[-1].split("sparsekern demo: error: ", 1)[1]


def test_every_option_has_a_row_that_matches_its_help_group():
    p = _parser()
    groups = {a.option_strings[0]: g.title for g in p._action_groups
              for a in g._group_actions if a.option_strings and a.dest != "help"}
    assert set(groups) == set(cli.OPTION_MODELS)
    for flag, models in cli.OPTION_MODELS.items():
        assert models == ((groups[flag],) if groups[flag] in cli.MODELS else ("minilm", "mlp"))


def test_the_trials_command_is_refused(capsys, tmp_path, parsed_only):
    # /tmp/trialB/demo_ignored_opts.sh: exit 0, criterion l1 in the report
    assert _error(["--model", "mlp", "--quick", "--criterion", "sparsegpt", "--layers", "ffn",
                   "--distill-steps", "5"], capsys, tmp_path) == (
        "argument --layers: got 'ffn', but it is not used with --model mlp (the digits MLP); "
        "--layers applies to --model minilm; also not used with it: --criterion, "
        "--distill-steps")
    assert _error(["--model", "minilm", "--hidden", "8"], capsys, tmp_path) == (
        "argument --hidden: got 8, but it is not used with --model minilm (all-MiniLM-L6-v2, "
        "the default model); --hidden applies to --model mlp")
    assert not parsed_only


def _pairs():
    return [(model, flag) for flag, models in cli.OPTION_MODELS.items() for model in cli.MODELS
            if model not in models]


#: A value for each option that takes one (its default where it has one: given counts).
VALUE = {"--layers": "all", "--criterion": "wanda", "--final-criterion": "sparsegpt",
         "--distill-steps": "64", "--max-ratio": "0.9", "--max-search-drop": "0.03",
         "--hidden": "2048", "--hidden-layers": "2", "--epochs": "8", "--short-steps": "20",
         "--final-epochs": "3"}


@pytest.mark.parametrize("model, flag", _pairs())
def test_an_option_of_the_other_model_is_refused_even_at_its_default(model, flag, capsys,
                                                                    tmp_path, parsed_only):
    argv = ["--model", model, flag] + ([VALUE[flag]] if flag in VALUE else [])
    message = _error(argv, capsys, tmp_path)
    owner = cli.OPTION_MODELS[flag][0]
    assert message.startswith(f"argument {flag}: ") and message.endswith(
        f"it is not used with {cli.MODELS[model]}; {flag} applies to --model {owner}")


def test_the_default_model_and_an_abbreviation_count(capsys, tmp_path, parsed_only):
    assert _error(["--epochs", "1"], capsys, tmp_path).startswith(
        "argument --epochs: got 1, but it is not used with --model minilm")
    assert _error(["--model", "mlp", "--dist", "3"], capsys, tmp_path).startswith(
        "argument --distill-steps: got 3, but it is not used with --model mlp")


@pytest.mark.parametrize("argv", [
    [],                                                       # README: the main job
    ["--out", "{tmp}/demo-final2"],                           # README: the committed run
    ["--model", "mlp"],                                       # README: the earlier demo
    ["--batches", "1", "32", "--target-speedup", "2", "1.5", "--require-speedup", "2", "1.5",
     "--layers", "all", "--criterion", "wanda", "--final-criterion", "none",
     "--distill-steps", "64", "--max-ratio", "0.9", "--max-search-drop", "0.03", "--no-relax",
     "--strategy", "amc", "--amc-episodes", "4", "--granularity", "fine", "--granularity",
     "2:4", "--threads", "1", "--no-cache", "--strict", "--quick"],  # README: the options
    ["--model", "mlp", "--hidden", "64", "--hidden-layers", "1", "--epochs", "1",
     "--short-steps", "2", "--final-epochs", "1", "--strategy", "netadapt", "--quick"],
])
def test_the_readme_commands_and_each_models_options_are_accepted(argv, tmp_path, parsed_only):
    from sparsekern.__main__ import main
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["demo", *argv]) == 0
    (args,) = parsed_only
    assert set(getattr(args, cli.GIVEN)) == {a for a in argv if a.startswith("--")}


def test_given_options_of_a_namespace_from_elsewhere_are_those_off_their_defaults():
    p = _parser()
    args = argparse.Namespace(**{**vars(p.parse_args([])), "hidden": 8})
    delattr(args, cli.GIVEN)
    assert cli.given_options(p, args) == ["--hidden"]
    assert cli.given_options(p, p.parse_args(["--hidden", "2048", "--model", "mlp"])) == \
        ["--model", "--hidden"]


def test_amc_episodes_without_the_amc_search_is_refused(capsys, tmp_path, parsed_only):
    assert _error(["--model", "mlp", "--amc-episodes", "3"], capsys, tmp_path) == (
        "argument --amc-episodes: got 3, but the search is netadapt (--model mlp's default "
        "strategy); it applies to --strategy amc")
    assert _error(["--strategy", "netadapt", "--amc-episodes", "3"], capsys, tmp_path) == (
        "argument --amc-episodes: got 3, but the search is netadapt (--model minilm's default "
        "strategy, as given); it applies to --strategy amc")
    from sparsekern.__main__ import main
    for argv in (["--model", "mlp", "--strategy", "amc", "--amc-episodes", "3"],
                 ["--amc-episodes", "3"]):  # minilm's default search is amc
        assert main(["demo", "--out", str(tmp_path / "ok"), *argv]) == 0
    assert len(parsed_only) == 2


def test_only_n_m_granularities_with_the_amc_search_are_refused(capsys, tmp_path, parsed_only):
    """AMC chooses each layer's ratio, which an N:M pattern fixes: --granularity 2:4 alone
    under AMC (minilm's default search) is an error, never a silent search at "fine"."""
    want = ("argument --granularity: got only N:M patterns ['2:4'], but the amc search prunes "
            "each layer to a ratio it chooses, which an N:M pattern fixes; add 'fine' or a "
            "block size such as '16x16', or search the N:M patterns with strategy 'netadapt' "
            "(the search here is amc, {})")
    assert _error(["--granularity", "2:4"], capsys, tmp_path) == \
        want.format("--model minilm's default")
    assert _error(["--model", "mlp", "--strategy", "amc", "--granularity", "2:4"], capsys,
                  tmp_path) == want.format("as given")
    from sparsekern.__main__ import main
    for argv in (["--granularity", "2:4", "--granularity", "fine"],
                 ["--granularity", "2:4", "--strategy", "netadapt"],
                 ["--model", "mlp", "--granularity", "2:4"]):  # mlp's default: netadapt
        assert main(["demo", "--out", str(tmp_path / "ok"), *argv]) == 0
    assert len(parsed_only) == 3


def test_quick_says_when_it_caps_a_given_value(capsys):
    args = _parser().parse_args(["--model", "mlp", "--quick", "--hidden", "128",
                                 "--amc-episodes", "9"])
    assert cli._quick_cap(args, "--hidden", 128, 64) == 64
    assert cli._quick_cap(args, "--amc-episodes", 9, 6) == 6
    assert cli._quick_cap(args, "--epochs", 8, 1) == 1  # a default: capped without a word
    assert capsys.readouterr().out.splitlines() == ["--quick caps --hidden at 64 (given 128)",
                                                    "--quick caps --amc-episodes at 6 (given 9)"]
