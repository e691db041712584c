"""core/worker_tuning.py: the worker options TRAPBATCH_WORKER_TUNING may add to every shard, checked at start."""
from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import Settings
from core.worker_tuning import OPTIONS, parse_worker_tuning

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def test_none_by_default_and_the_options_in_their_order() -> None:
    assert parse_worker_tuning("") == () == parse_worker_tuning("   ")
    assert parse_worker_tuning(" --stage-threads 2   --cpu-decode-share 0.3 --compile --hw-decode on ") == (
        "--stage-threads", "2", "--cpu-decode-share", "0.3", "--compile", "--hw-decode", "on")
    assert parse_worker_tuning("--batch-size 8 --workers 4 --no-cudnn-benchmark") == (
        "--batch-size", "8", "--workers", "4", "--no-cudnn-benchmark")


@pytest.mark.parametrize("text, said", [
    ("--device cpu", "'--device' is not a worker option it may set"),  # the pool decides the device
    ("--manifest-blob x", "'--manifest-blob' is not a worker option"),  # nor which shard runs
    ("--stage-threads", "--stage-threads needs a value"),
    ("--stage-threads --compile", "--stage-threads needs a value"),
    ("--stage-threads 5", "--stage-threads '5': expected a whole number from 1 to 4"),
    ("--stage-threads two", "expected a whole number from 1 to 4"),
    ("--cpu-decode-share 1.5", "--cpu-decode-share '1.5': expected a fraction from 0 to 1"),
    ("--cpu-decode-share nan", "expected a fraction from 0 to 1"),
    ("--cpu-decode-share automatic", "expected a fraction from 0 to 1, or auto"),
    ("--hw-decode maybe", "--hw-decode 'maybe': expected one of auto, on, off"),
    ("--stream-priority urgent", "--stream-priority 'urgent': expected one of normal, high"),
    ("--workers 0", "expected a whole number from 1 to 128"),
    ("--compile --compile", "--compile is given twice"),
    ("--cudnn-benchmark --no-cudnn-benchmark", "not both"),
    ("--compile; rm -rf /", "'--compile;' is not a worker option"),  # nothing unchecked reaches a command line
    ("2", "'2' is not a worker option"),
])
def test_anything_else_fails_the_start_naming_the_variable_and_the_option(text: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_worker_tuning(text)
    assert "TRAPBATCH_WORKER_TUNING" in str(info.value) and said in str(info.value)
    with pytest.raises(ConfigError):
        Settings.from_env({**BASE, "TRAPBATCH_WORKER_TUNING": text})


def test_every_word_it_lets_through_is_one_plain_argument_on_a_shell_less_command_line() -> None:
    """Azure Batch runs a task's command line without a shell, split at spaces: a word with a space, quote or shell
    character would change what the worker receives."""
    for share in ("0.25", "auto"):
        words = parse_worker_tuning(f"--cpu-decode-share {share}")
        assert all(w and all(c.isalnum() or c in "-." for c in w) for w in words)
    words = parse_worker_tuning("--stage-threads 3 --cpu-decode-share 0.25 --batch-size 16 --workers 8 "
                                "--hw-decode auto --stream-priority high --compile --no-cudnn-benchmark")
    assert all(w and all(c.isalnum() or c in "-." for c in w) for w in words)


def test_the_settings_read_it_for_the_pools() -> None:
    assert Settings.from_env(BASE).worker_tuning == ()
    s = Settings.from_env({**BASE, "TRAPBATCH_WORKER_TUNING": "--stage-threads 2"})
    assert s.worker_tuning == ("--stage-threads", "2")


def test_every_option_it_allows_is_one_the_worker_parses() -> None:
    """The worker's parser is the judge: what the app lets through must start a shard, not exit 2 on a node."""
    from gpu_batch.worker.__main__ import _pipeline_options, parse_args

    values = {"--stage-threads": "4", "--cpu-decode-share": "1", "--batch-size": "256", "--workers": "128",
              "--hw-decode": "off", "--stream-priority": "high"}
    assert set(values) | {"--compile", "--cudnn-benchmark", "--no-cudnn-benchmark"} == set(OPTIONS)
    for option, value in values.items():
        words = parse_worker_tuning(f"{option} {value}")
        args = parse_args(["--manifest-file", "m.json", *words], {})
        assert not isinstance(args, int), option
    for flag in ("--compile", "--cudnn-benchmark", "--no-cudnn-benchmark"):
        assert not isinstance(parse_args(["--manifest-file", "m.json", *parse_worker_tuning(flag)], {}), int)
    args = parse_args(["--manifest-file", "m.json", *parse_worker_tuning(
        "--stage-threads 2 --cpu-decode-share 0.3 --batch-size 8 --stream-priority high")], {})
    assert not isinstance(args, int)
    options = _pipeline_options(args, "s")
    assert (options.stage_threads, options.cpu_decode_share, options.batch_size, options.stream_priority) == (
        2, 0.3, 8, "high")
    auto = parse_args(["--manifest-file", "m.json", *parse_worker_tuning("--cpu-decode-share auto")], {})
    assert not isinstance(auto, int) and _pipeline_options(auto, "s").cpu_decode_auto is True


def test_the_lowest_values_are_allowed_and_a_batch_of_nothing_is_not() -> None:
    assert parse_worker_tuning("--stage-threads 1 --batch-size 1 --workers 1 --cpu-decode-share 0") == (
        "--stage-threads", "1", "--batch-size", "1", "--workers", "1", "--cpu-decode-share", "0")
    with pytest.raises(ConfigError, match="--batch-size '0': expected a whole number from 1 to 256"):
        parse_worker_tuning("--batch-size 0")


def test_an_option_with_a_value_given_twice_is_refused_not_left_to_the_workers_last_word() -> None:
    with pytest.raises(ConfigError, match="--stage-threads is given twice"):
        parse_worker_tuning("--stage-threads 2 --batch-size 8 --stage-threads 3")


def test_a_choice_the_worker_refuses_is_refused_at_the_start() -> None:
    """Each shard would otherwise exit 2 on a GPU node: the worker knows normal and high priority only."""
    from gpu_batch.worker.__main__ import parse_args

    for option, value in (("--stream-priority", "low"), ("--hw-decode", "nvjpeg")):
        assert isinstance(parse_args(["--manifest-file", "m.json", option, value], {}), int)
        with pytest.raises(ConfigError, match=f"{option} '{value}': expected one of"):
            parse_worker_tuning(f"{option} {value}")
