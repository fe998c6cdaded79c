"""The BIDS-App command line: option spellings, the typed config, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from demist_bids.cli.parser import build_parser, parse_args
from demist_bids.config import Config
from demist_bids.exceptions import BIDSValidationError, UnknownAnalysisLevelError, UsageError


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    return root


@pytest.mark.parametrize(
    "labels",
    [["01", "02"], ["sub-01", "sub-02"], ["01", "sub-02"], ["01,02"]],
)
@pytest.mark.parametrize("flag", ["--participant-label", "--participant_label"])
def test_participant_labels_bids_app_form(bids, tmp_path, flag, labels):
    config = parse_args([str(bids), str(tmp_path / "out"), "participant", flag, *labels,
                         "-w", str(tmp_path / "work")])
    assert config.execution.participant_label == ["01", "02"]


def test_every_nipreps_option_lands_in_the_config(bids, tmp_path):
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"t1w": {"acquisition": "MPRAGE"}}))
    deriv = tmp_path / "smriprep"
    deriv.mkdir()
    config = parse_args([
        str(bids), str(tmp_path / "out"), "participant",
        "--session-label", "ses-1", "2", "-w", str(tmp_path / "w"), "--nprocs", "3",
        "--omp-nthreads", "2", "--mem", "16G", "--bids-filter-file", str(filt),
        "--skip_bids_validator", "-d", f"smriprep={deriv}", "--stop-on-first-crash",
        "--boilerplate_only", "--notrack", "-vv", "--samples", "3", "--seed", "7",
        "--output-spaces", "model",
    ])
    ex = config.execution
    assert ex.session_label == ["1", "2"]
    assert ex.work_dir == tmp_path / "w"
    assert ex.bids_filter_file == filt
    assert ex.skip_bids_validation and ex.stop_on_first_crash and ex.boilerplate_only
    assert ex.derivatives == {"smriprep": deriv}
    assert ex.verbosity == 2 and ex.output_spaces == ["model"]
    assert config.nipype.nprocs == 3 and config.nipype.omp_nthreads == 2
    assert config.nipype.mem_gb == pytest.approx(16.0)
    assert config.synthesis.samples == 3 and config.seeds.master == 7


def test_mem_in_megabytes_by_default(bids, tmp_path):
    config = parse_args([str(bids), str(tmp_path / "o"), "group", "--mem", "8000", "-w",
                         str(tmp_path / "w")])
    assert config.nipype.mem_gb == pytest.approx(8000 / 1024)


def test_config_toml_round_trip(bids, tmp_path):
    config = parse_args([str(bids), str(tmp_path / "o"), "train", "--folds", "2", "-w",
                         str(tmp_path / "w"), "--participant-label", "01"])
    path = config.to_filename(tmp_path / "config.toml")
    assert Config.load(path) == config


@pytest.mark.parametrize(
    "args, error",
    [
        (["{bids}", "{out}", "dance"], UnknownAnalysisLevelError),
        (["{tmp}/missing", "{out}", "participant"], BIDSValidationError),
        (["{tmp}", "{out}", "participant"], BIDSValidationError),
        (["{bids}", "{bids}", "participant"], UsageError),
        (["{bids}", "{bids}/sub-01", "participant"], UsageError),
        (["{bids}", "{out}", "participant", "-w", "{bids}/work"], UsageError),
        (["{bids}", "{out}", "participant", "--participant-label", "s_1"], UsageError),
        (["{bids}", "{out}", "participant", "--no-such-option"], UsageError),
        (["{bids}", "{out}", "participant", "--bids-filter-file", "{tmp}/nofile.json"], UsageError),
        (["{bids}", "{out}", "train", "--backbone", "{bids}/dataset_description.json"], UsageError),
        (["{bids}", "{out}", "train", "--backbone-autoencoder", "{bids}/dataset_description.json"], UsageError),
        (["{bids}", "{out}", "train", "--backbone", "{tmp}/no.pt", "--backbone-autoencoder", "{tmp}/no.pt"],
         UsageError),
        (["{bids}", "{out}", "train", "--autoencoders-from", "{tmp}"], UsageError),
    ],
)
def test_bad_command_lines(bids, tmp_path, args, error):
    fmt = {"bids": bids, "out": tmp_path / "out", "tmp": tmp_path}
    with pytest.raises(error) as info:
        parse_args([a.format(**fmt) for a in args])
    assert "\n" not in str(info.value)


def test_output_under_input_derivatives_is_normal(bids, tmp_path):
    config = parse_args([str(bids), str(bids / "derivatives" / "demist"), "participant",
                         "-w", str(tmp_path / "w")])
    assert config.execution.output_dir == bids / "derivatives" / "demist"


def test_help_and_version_do_not_import_heavy_libraries():
    code = (
        "import sys; from demist_bids.cli.parser import build_parser; build_parser()\n"
        "heavy = [m for m in ('torch', 'monai', 'nipype', 'niworkflows', 'bids', 'nibabel') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    proc = subprocess.run([sys.executable, "-m", "demist_bids", "--version"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("demist v")


def test_help_lists_the_bids_app_options():
    text = build_parser().format_help()
    for option in ("--participant-label", "--session-label", "--work-dir", "--nprocs",
                   "--omp-nthreads", "--mem", "--bids-filter-file", "--skip-bids-validation",
                   "--derivatives", "--use-plugin", "--boilerplate-only", "--version",
                   "--reports-only", "--config-file", "--write-graph", "--clean-workdir",
                   "--resource-monitor"):
        assert option in text


def test_the_sampler_choices_follow_the_schedulers():
    """A sampler added to inference.schedulers.SAMPLERS is offered by --sampler (and no stale one)."""
    from demist_bids.cli.parser import SAMPLER_CHOICES
    from demist_bids.inference.schedulers import SAMPLERS

    assert set(SAMPLER_CHOICES) == {"auto", "distilled", *SAMPLERS}


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_device_takes_one_gpu_of_several(value):
    from demist_bids.cli.parser import device_name

    assert device_name(value) == value


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "cpu:0", "CUDA"])
def test_a_bad_device_is_a_usage_error(bids, tmp_path, value):
    from demist_bids.cli.parser import parse_args
    from demist_bids.exceptions import UsageError

    with pytest.raises(UsageError, match="cuda:N"):
        parse_args([str(bids), str(tmp_path / "out"), "participant", "--device", value])


@pytest.mark.parametrize("text, message", [
    ("no_such_key = 1\n", "unknown training recipe keys"),
    ("diffusion_cond_decoded_weight = 1.0\n", "needs cond_encoder_in_diffusion"),
    ("steps = [\n", "--train-recipe"),
])
def test_a_bad_train_recipe_is_a_one_line_usage_error(bids, tmp_path, text, message):
    recipe_file = tmp_path / "recipe.toml"
    recipe_file.write_text(text)
    out = tmp_path / "out"
    with pytest.raises(UsageError) as info:
        parse_args([str(bids), str(out), "train", "--train-recipe", str(recipe_file), "-w", str(tmp_path / "w")])
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()  # refused before anything is written


def test_a_good_train_recipe_is_kept(bids, tmp_path):
    recipe_file = tmp_path / "recipe.toml"
    recipe_file.write_text("cond_encoder_in_diffusion = true\ndiffusion_cond_decoded_weight = 1.0\n")
    config = parse_args([str(bids), str(tmp_path / "o"), "train", "--train-recipe", str(recipe_file),
                         "-w", str(tmp_path / "w")])
    assert config.train.recipe == recipe_file.absolute()
